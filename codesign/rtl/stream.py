"""``io='stream'``: the network input as a pixel stream, leading window layers on line buffers.

In the default ``io='vector'`` mode the top level takes one whole input vector per beat. In stream mode
(hls4ml's ``io_stream``) it takes **one pixel per beat**: the C channels of one pixel packed like the
fields of a vector (channel ``c`` at ``s_axis_tdata[c*bits +: bits]``), pixels in raster order (row-major:
for a 2-D input over H then W, for a 1-D input over its length). ``interface.json`` lists, for every beat
and field, the index of the input-vector field it carries (``input.beat_fields``), so a testbench can cut
a vector in the graph input's layout into its beats (the frontend lowers a channels-first graph input
through a ``transpose`` layer: the beat order is the channels-last order after it).

Architecture
------------
The *leading window layers* of the model (``conv1d``/``conv2d``/``maxpool``/``avgpool``, channels-last,
each with its fused requantization, and pixel-wise ``requant`` layers between them) become a chain of
streaming stages, one pixel per beat between them:

* ``hw/cs_pad.v`` inserts the padding pixels (zero; maxpool: the smallest input code, which never wins)
  into the stream, stalling the input meanwhile (no register, no latency);
* ``hw/cs_window.v`` holds the last ``KH-1`` rows in a line buffer (one memory word per column: the
  column stack of the rows above) and a ``KH x KW`` window shift register, and emits the window only at
  the positions of the strided output grid;
* a per-pixel compute unit ``<layer>_pe`` maps the window's ``KH*KW*C`` fields to the ``Cout`` outputs of
  one pixel: the fully parallel emitter (:meth:`Emitter.emit_parallel`) run on the layer restricted to a
  single output position without padding (identical arithmetic, bit-exact with the golden model).

At the first non-window layer ``hw/cs_collect.v`` assembles the last streamed feature map into one
vector: beat ``k`` at fields ``[k*Cout, (k+1)*Cout)``, i.e. the C-order ``(H, W, Cout)`` vector the
vector layers expect; the rest of the network is the unchanged vector design (module ``codesign_vec``).
Full valid/ready backpressure everywhere.

Latency / II: a cycle model of the stream control (:func:`stream_timing`, the same counters and
handshakes as the RTL) with the input always valid and the output always ready; latency = cycles from
the first pixel beat of a vector to its output beat, II = cycles between the first beats of consecutive
vectors (at least the padded pixels of the busiest streamed layer). Only the ``latency`` strategy.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codesign.errors import UnsupportedError
from codesign.rtl.ir import Layer, Model

WINDOW_KINDS = ("conv1d", "conv2d", "maxpool", "avgpool")
STREAM_LIBS = ("cs_pad.v", "cs_window.v", "cs_collect.v")


@dataclass
class Geometry:
    """Spatial geometry of one streamed layer (1-D: ``h = 1``, ``kh = 1``)."""

    h: int
    w: int
    c: int  # input channels
    oh: int
    ow: int
    oc: int  # output channels
    kh: int = 1
    kw: int = 1
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0

    @property
    def hp(self) -> int:
        return self.pt + self.h + self.pb

    @property
    def wp(self) -> int:
        return self.pl + self.w + self.pr

    @property
    def padded(self) -> bool:
        return bool(self.pt or self.pb or self.pl or self.pr)


@dataclass
class StreamPlan:
    perm: np.ndarray | None  # the input transpose (graph input -> channels-last), absorbed into the beat order
    layers: list[Layer]  # streamed layers, in order
    geoms: list[Geometry]
    rest: Model | None  # the vector part after the collector (None: the collector output is the output)
    beat_fields: np.ndarray  # (beats, C): input-vector field carried by each beat's field

    @property
    def beats(self) -> int:
        return int(self.beat_fields.shape[0])


def _geometry(ly: Layer) -> Geometry:
    if ly.layout != "NHWC":
        raise UnsupportedError(f"rtl.io='stream': layer {ly.name} ({ly.kind}) is channels-first ({ly.layout}); "
                               "streaming needs channels-last window layers (the codesign export's layout)")
    if ly.kind == "requant":
        sp = tuple(ly.in_shape[:-1]) or (1,)
        h, w = (1, sp[0]) if len(sp) == 1 else sp
        c = ly.in_shape[-1]
        return Geometry(h, w, c, h, w, c)
    nd = 1 if ly.kind == "conv1d" or len(ly.in_shape) == 2 else 2
    if len(ly.in_shape) != nd + 1:
        raise UnsupportedError(f"rtl.io='stream': layer {ly.name} input shape {ly.in_shape} is not (H, W, C) / (L, C)")
    pads = tuple(ly.pads) if ly.pads else (0,) * (2 * nd)
    if nd == 1:
        return Geometry(1, ly.in_shape[0], ly.in_shape[1], 1, ly.out_shape[0], ly.out_shape[1], 1, ly.kernel[0], 1,
                        ly.stride[0], 0, 0, pads[0], pads[1])
    return Geometry(ly.in_shape[0], ly.in_shape[1], ly.in_shape[2], ly.out_shape[0], ly.out_shape[1],
                    ly.out_shape[2], ly.kernel[0], ly.kernel[1], ly.stride[0], ly.stride[1],
                    pads[0], pads[2], pads[1], pads[3])


def plan_stream(m: Model) -> StreamPlan:
    """Split ``m`` into the streamed window layers and the vector rest (UnsupportedError when the
    network does not start with a window layer)."""
    layers = m.layers
    readers: dict[str, list[int]] = {}
    for k in range(len(layers)):
        for s in m.sources(k):
            readers.setdefault(s, []).append(k)
    k0, perm, src = 0, None, ""
    if layers and layers[0].kind == "transpose" and m.sources(0) == [""] and readers.get("", []) == [0]:
        perm, k0, src = np.asarray(layers[0].perm, dtype=np.int64), 1, layers[0].name
    chain: list[Layer] = []
    k = k0
    while k < len(layers):
        ly = layers[k]
        if ly.kind not in WINDOW_KINDS + ("requant",) or m.sources(k) != [src]:
            break
        if readers.get(src, []) != [k]:  # the previous stage's output is also read elsewhere (a fork)
            break
        if ly.kind == "requant" and not chain:
            break
        chain.append(ly)
        src = ly.name
        k += 1
    if not any(ly.kind in WINDOW_KINDS for ly in chain):
        first = layers[k0].kind if k0 < len(layers) else "nothing"
        raise UnsupportedError(f"rtl.io='stream' needs a network that starts with a window layer (Conv1D/Conv2D/"
                               f"MaxPool/AveragePool on the input pixels); {m.name} starts with {first}: use "
                               "rtl.io='vector' (one whole vector per beat)")
    geoms = [_geometry(ly) for ly in chain]
    for a, b in zip(geoms, geoms[1:], strict=False):
        assert (a.oh, a.ow, a.oc) == (b.h, b.w, b.c)
    g0 = geoms[0]
    n_in = int(np.prod(m.input_shape))
    if g0.h * g0.w * g0.c != n_in:
        raise UnsupportedError(f"rtl.io='stream': the first window layer's input {chain[0].in_shape} is not the "
                               f"network input {m.input_shape}")
    idx = perm if perm is not None else np.arange(n_in, dtype=np.int64)
    beat_fields = idx.reshape(g0.h * g0.w, g0.c)
    rest_layers = layers[k:]
    rest = None
    if rest_layers:
        last = chain[-1]
        rl = []
        for ly in rest_layers:
            ly = copy.copy(ly)
            if ly.inputs is not None:
                ly.inputs = ["" if s == last.name else s for s in ly.inputs]
            rl.append(ly)
        rest = Model(m.name, m.input_name, tuple(last.out_shape), last.out_fmt, rl, m.output_name)
    return StreamPlan(perm, chain, geoms, rest, beat_fields)


def pe_layer(ly: Layer, g: Geometry) -> Layer:
    """The layer restricted to one output pixel: input = the KH x KW x C window, no padding, stride 1."""
    if ly.kind == "requant":
        return dataclasses.replace(ly, name=f"{ly.name}_pe", in_shape=(g.c,), out_shape=(g.c,), inputs=None)
    nd = 1 if ly.kind == "conv1d" or len(ly.in_shape) == 2 else 2
    fs = None if ly.field_shift is None else np.asarray(ly.field_shift)[:g.oc].copy()  # position 0 = per channel
    return dataclasses.replace(ly, name=f"{ly.name}_pe", in_shape=(*ly.kernel, g.c), out_shape=(*(1,) * nd, g.oc),
                               stride=(1,) * nd, pads=(0,) * (2 * nd), inputs=None, field_shift=fs)


# ---- cycle model of the stream control (same counters and handshakes as hw/cs_*.v) -------------
class _Pad:
    def __init__(self, g: Geometry):
        self.g, self.r, self.c = g, 0, 0

    def inside(self) -> bool:
        g = self.g
        return g.pt <= self.r < g.pt + g.h and g.pl <= self.c < g.pl + g.w

    def ready(self, out_ready: bool) -> bool:
        return self.inside() and out_ready

    def valid(self, in_valid: bool) -> bool:
        return in_valid if self.inside() else True

    def step(self, in_valid: bool, out_ready: bool) -> None:
        if self.valid(in_valid) and out_ready:
            if self.c == self.g.wp - 1:
                self.c = 0
                self.r = 0 if self.r == self.g.hp - 1 else self.r + 1
            else:
                self.c += 1


class _Window:
    def __init__(self, g: Geometry):
        self.g = g
        self.r = self.c = 0
        self.er, self.ec = g.kh - 1, g.kw - 1
        self.ov = False

    def ready(self, out_ready: bool) -> bool:
        return not self.ov or out_ready

    def valid(self, in_valid: bool) -> bool:
        return self.ov

    def step(self, in_valid: bool, out_ready: bool) -> None:
        g = self.g
        if in_valid and self.ready(out_ready):
            self.ov = self.r == self.er and self.c == self.ec
            if self.c == g.wp - 1:
                self.c, self.ec = 0, g.kw - 1
                if self.r == g.hp - 1:
                    self.r, self.er = 0, g.kh - 1
                else:
                    if self.r == self.er:
                        self.er += g.sh
                    self.r += 1
            else:
                if self.c == self.ec:
                    self.ec += g.sw
                self.c += 1
        elif out_ready:
            self.ov = False


class _Pipe:  # a fully parallel module: `stages` valid bits, advances with en = !out_valid || out_ready
    def __init__(self, stages: int):
        self.vld = [False] * stages

    def ready(self, out_ready: bool) -> bool:
        return not self.vld[-1] or out_ready

    def valid(self, in_valid: bool) -> bool:
        return self.vld[-1]

    def step(self, in_valid: bool, out_ready: bool) -> None:
        if self.ready(out_ready):
            self.vld = [in_valid] + self.vld[:-1]


class _Collect:
    def __init__(self, n: int):
        self.n, self.cnt, self.ov = n, 0, False

    def ready(self, out_ready: bool) -> bool:
        return not self.ov or out_ready

    def valid(self, in_valid: bool) -> bool:
        return self.ov

    def step(self, in_valid: bool, out_ready: bool) -> None:
        if in_valid and self.ready(out_ready):
            self.ov = self.cnt == self.n - 1
            self.cnt = 0 if self.cnt == self.n - 1 else self.cnt + 1
        elif out_ready:
            self.ov = False


def stream_timing(stages: list, beats: int, tail: int, images: int = 16) -> tuple[int, int, list[int], list[int]]:
    """Simulate ``images`` vectors through the stream stages (input always valid, output always ready).
    ``tail``: cycles from the collector's output to the top output. Returns (latency, II, latencies, IIs)."""
    n_beats = beats * images
    fed, first, outs, cycle = 0, [], [], 0
    limit = 1000 * (n_beats + 100)
    while len(outs) < images and cycle < limit:
        rdy = [False] * (len(stages) + 1)
        rdy[-1] = True
        for i in range(len(stages) - 1, -1, -1):
            rdy[i] = stages[i].ready(rdy[i + 1])
        vin = [False] * (len(stages) + 1)
        vin[0] = fed < n_beats
        for i, st in enumerate(stages):
            vin[i + 1] = st.valid(vin[i])
        if vin[0] and rdy[0]:
            if fed % beats == 0:
                first.append(cycle)
            fed += 1
        if vin[-1]:  # the collector hands a vector to the vector part (always ready)
            outs.append(cycle + tail)
        for i, st in enumerate(stages):
            st.step(vin[i], rdy[i + 1])
        cycle += 1
    if len(outs) < images:  # pragma: no cover - a model error, not a user error
        raise RuntimeError("stream timing model: no progress")
    lats = [o - f for o, f in zip(outs, first, strict=False)]
    iis = [b - a for a, b in zip(first, first[1:], strict=False)]
    return max(lats), max(iis) if iis else 1, lats, iis


# ---- emission ----------------------------------------------------------------------------------
def _lit(v: int, w: int) -> str:
    return f"{w}'h{v & ((1 << w) - 1):x}"


def emit_stream(em, out_dir: str | Path, onnx_rel: str) -> dict:
    """Write the stream-mode design of ``em.m`` (an :class:`Emitter` with ``io='stream'``); returns the
    interface dict."""
    from codesign.rtl.emit import HW_DIR

    if em.strategy != "latency":
        raise UnsupportedError("rtl.io='stream' supports only rtl.strategy='latency' (fully parallel per-pixel "
                               "compute units and vector layers); use rtl.io='vector' for the resource strategy")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = em.m
    plan = plan_stream(m)
    top = em.top
    layer_files, stage_info = [], []
    tstages: list = []
    lines_body: list[str] = []
    pw0 = plan.geoms[0].c * m.input_fmt.bits
    cur = ("s_axis_tdata", "s_axis_tvalid", "s_axis_tready")

    def hop(nm: str, module: str, params: str, out_w: int, pe: bool = False) -> None:
        nonlocal cur
        d, v, r = f"{nm}_tdata", f"{nm}_tvalid", f"{nm}_tready"
        lines_body.append(f"    wire [{out_w - 1}:0] {d};\n    wire {v};\n    wire {r};\n    wire {nm}_s_ready;")
        if pe:
            lines_body.append(f"    {module} u_{nm} (.clk(clk), .rst(rst), .in_valid({cur[1]}), .in_ready({nm}_s_ready), "
                              f".in_data({cur[0]}), .out_valid({v}), .out_ready({r}), .out_data({d}));")
        else:
            lines_body.append(f"    {module} #({params}) u_{nm} (.clk(clk), .rst(rst), .s_tdata({cur[0]}), .s_tvalid({cur[1]}), "
                              f".s_tready({nm}_s_ready),\n        .m_tdata({d}), .m_tvalid({v}), .m_tready({r}));")
        lines_body.append(f"    assign {cur[2]} = {nm}_s_ready;")
        cur = (d, v, r)

    for ly, g in zip(plan.layers, plan.geoms, strict=True):
        b = ly.in_fmt.bits
        pw = g.c * b
        lines_body.append(f"    // {ly.name}: {ly.describe()}")
        info = {"name": ly.name, "kind": ly.kind, "in": [g.h, g.w, g.c], "out": [g.oh, g.ow, g.oc]}
        if ly.kind != "requant":
            info.update(kernel=[g.kh, g.kw], stride=[g.sh, g.sw], pads=[g.pt, g.pl, g.pb, g.pr],
                        padded=[g.hp, g.wp], line_buffer_bits=(g.kh - 1) * g.wp * pw, window_bits=g.kh * g.kw * pw)
            if g.padded:
                fill = ly.in_fmt.lo if ly.kind == "maxpool" else 0  # max(x, lo) = x: like -inf padding
                fv = sum((fill & ((1 << b) - 1)) << (ch * b) for ch in range(g.c))
                hop(f"{ly.name}_pad", "cs_pad", f".PW({pw}), .H({g.h}), .W({g.w}), .PT({g.pt}), .PB({g.pb}), "
                    f".PL({g.pl}), .PR({g.pr}), .FILL({_lit(fv, pw)})", pw)
                tstages.append(_Pad(g))
            hop(f"{ly.name}_win", "cs_window", f".PW({pw}), .HP({g.hp}), .WP({g.wp}), .KH({g.kh}), .KW({g.kw}), "
                f".SH({g.sh}), .SW({g.sw})", g.kh * g.kw * pw)
            tstages.append(_Window(g))
        pe = pe_layer(ly, g)
        text, lat = em.emit_parallel(pe)
        (out_dir / f"{pe.name}.v").write_text(text)
        layer_files.append(f"{pe.name}.v")
        hop(pe.name, pe.name, "", g.oc * ly.out_fmt.bits, pe=True)
        tstages.append(_Pipe(lat))
        info["pe_latency_cycles"] = lat
        em.layer_info[ly.name] = {"latency": lat, "ii": 1}
        stage_info.append(info)
    gl, last = plan.geoms[-1], plan.layers[-1]
    n_col = gl.oh * gl.ow
    opw = gl.oc * last.out_fmt.bits
    lines_body.append(f"    // collector: {n_col} pixel beat(s) of {gl.oc} field(s) -> the ({gl.oh}, {gl.ow}, {gl.oc}) vector "
                      f"(beat k = fields k*{gl.oc}..)")
    hop("collect", "cs_collect", f".PW({opw}), .N({n_col})", n_col * opw)
    tstages.append(_Collect(n_col))

    # the vector part
    files: list[str] = []
    sub_iface = None
    vec_layers: list[Layer] = []
    if plan.rest is not None:
        sub = copy.copy(em)
        sub.m, sub.io, sub.top = plan.rest, "vector", "codesign_vec"
        sub.lib_used, sub.layer_info, sub.skips, sub.skips_by_layer = set(), {}, {}, {}
        sub_iface = sub.emit(out_dir, onnx_rel)
        em.layer_info.update(sub.layer_info)
        tail = int(sub_iface["latency_cycles"])
        vec_layers = [ly for ly in plan.rest.layers if not ly.is_wiring]
        libs = set(em.lib_used) | set(sub.lib_used) | set(STREAM_LIBS)
        sub_libs = set(sub.lib_used)
    else:
        tail = 1 if em.axis_slice else 0
        libs = set(em.lib_used) | set(STREAM_LIBS) | ({"cs_skid_buffer.v"} if em.axis_slice else set())
        sub_libs = set()
    for lib in sorted(libs):
        if lib not in sub_libs:
            shutil.copyfile(HW_DIR / lib, out_dir / lib)
        files.append(lib)
    files += layer_files
    if sub_iface is not None:
        files += [f for f in sub_iface["files"] if f not in files]

    latency, ii, lats, iis = stream_timing(tstages, plan.beats, tail)

    # top level
    fin, fout = m.input_fmt, m.output_fmt
    nout = int(np.prod(m.output_shape)) * fout.bits
    g0 = plan.geoms[0]
    order = ("row-major pixels (h, w), channels packed per beat" if g0.h > 1 else "pixels along the length")
    head = [
        f"// {top}: generated by codesign.rtl (do not edit), io = stream",
        f"//   network : {m.name}, {len(plan.layers)} streamed layer(s) + {len(vec_layers)} vector layer module(s)",
        f"//   input   : {plan.beats} beat(s) per vector ({order}); a beat = the {g0.c} channel(s) of one pixel, "
        f"{fin.describe()}, channel c = s_axis_tdata[c*{fin.bits} +: {fin.bits}]",
        f"//   output  : {list(m.output_shape)} {fout.describe()} (field i = m_axis_tdata[i*{fout.bits} +: {fout.bits}]), "
        "one vector per beat",
        f"//   timing  : latency {latency} cycles (first pixel in -> vector out), II {ii} cycles per vector",
        "//   AXI-Stream; clk rising edge, rst synchronous active high.",
    ]
    ports = ["    input  wire clk", "    input  wire rst",
             f"    input  wire [{pw0 - 1}:0] s_axis_tdata", "    input  wire s_axis_tvalid", "    output wire s_axis_tready",
             f"    output wire [{nout - 1}:0] m_axis_tdata", "    output wire m_axis_tvalid", "    input  wire m_axis_tready"]
    taps = []
    if em.debug_taps:
        for ly in vec_layers:
            taps.append(ly)
            ports.append(f"    output wire [{ly.n_out * ly.out_fmt.bits - 1}:0] dbg_{ly.name}_tdata")
            ports.append(f"    output wire dbg_{ly.name}_tvalid")
    lines = head + [f"module {top} (\n" + ",\n".join(ports) + "\n);"] + lines_body
    if sub_iface is not None:
        tp = "".join(f", .dbg_{ly.name}_tdata(dbg_{ly.name}_tdata), .dbg_{ly.name}_tvalid(dbg_{ly.name}_tvalid)"
                     for ly in taps)
        lines.append(f"    // the vector part of the network (one whole vector per beat)\n"
                     f"    codesign_vec u_vec (.clk(clk), .rst(rst), .s_axis_tdata({cur[0]}), .s_axis_tvalid({cur[1]}), "
                     f".s_axis_tready({cur[2]}),\n        .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid), "
                     f".m_axis_tready(m_axis_tready){tp});")
    elif em.axis_slice:
        lines.append(f"    cs_skid_buffer #(.W({nout})) u_out_slice (.clk(clk), .rst(rst), .s_tdata({cur[0]}), "
                     f".s_tvalid({cur[1]}), .s_tready({cur[2]}),\n        .m_tdata(m_axis_tdata), "
                     f".m_tvalid(m_axis_tvalid), .m_tready(m_axis_tready));")
    else:
        lines.append(f"    assign m_axis_tdata = {cur[0]};\n    assign m_axis_tvalid = {cur[1]};\n"
                     f"    assign {cur[2]} = m_axis_tready;")
    lines.append("endmodule")
    (out_dir / f"{top}.v").write_text("\n".join(lines) + "\n")
    files.append(f"{top}.v")

    out_exps = m.output_exps
    iface = {
        "top": top,
        "files": files,
        "clock": "clk", "reset": "rst", "reset_active_low": False,
        "io": "stream",
        "input": {"tdata": "s_axis_tdata", "tvalid": "s_axis_tvalid", "tready": "s_axis_tready",
                  "fields": int(np.prod(m.input_shape)), "bits": fin.bits, "signed": fin.signed,
                  "scale_exp": fin.scale_exp, "shape": list(m.input_shape),
                  "beats": plan.beats, "fields_per_beat": g0.c, "tdata_bits": pw0,
                  "beat_order": (f"beat p = pixel p of the channels-last ({g0.h}, {g0.w}, {g0.c}) image in raster "
                                 f"order (p = h*{g0.w} + w); field c of a beat = channel c; beat_fields[p][c] = the "
                                 "index of that value in the input vector (C-order flattening of input.shape)"),
                  "beat_fields": plan.beat_fields.tolist()},
        "output": {"tdata": "m_axis_tdata", "tvalid": "m_axis_tvalid", "tready": "m_axis_tready",
                   "fields": int(np.prod(m.output_shape)), "bits": fout.bits, "signed": fout.signed,
                   "scale_exp": fout.scale_exp if out_exps is None else None, "shape": list(m.output_shape)},
        "latency_cycles": latency, "ii": ii,
        "timing": {"definition": "input always valid, output always ready: latency = first pixel beat of a vector "
                                 "accepted -> its output beat; II = cycles between the first beats of consecutive "
                                 "vectors (maxima over the first vectors of a run, from a cycle model of the stream "
                                 "control)", "latency_first_vector": lats[0], "latency_steady": lats[-1],
                   "ii_steady": iis[-1] if iis else ii},
        "strategy": em.strategy, "reuse": em.reuse,
        "onnx": onnx_rel,
        "stream": {"layers": stage_info,
                   "collector": {"beats": n_col, "fields_per_beat": gl.oc,
                                 "order": f"beat k (pixel k of the ({gl.oh}, {gl.ow}) output in raster order) -> vector "
                                          f"fields [k*{gl.oc}, (k+1)*{gl.oc}): the C-order ({gl.oh}, {gl.ow}, {gl.oc}) "
                                          "vector"},
                   "vector_top": "codesign_vec" if sub_iface is not None else None},
        "layers": [],
    }
    if out_exps is not None:
        iface["output"]["scale_exps"] = [int(v) for v in out_exps]
    for ly in plan.layers:
        e = {"name": ly.name, "kind": ly.kind, "onnx_output": ly.onnx_output, "fields": ly.n_out,
             "bits": ly.out_fmt.bits, "signed": ly.out_fmt.signed,
             "scale_exp": ly.out_fmt.scale_exp if not ly.field_out else None, "shape": list(ly.out_shape),
             "latency_cycles": em.layer_info[ly.name]["latency"], "ii": 1, "streamed": True,
             "pot": ly.pot, "sparsity": round(ly.sparsity, 4)}
        iface["layers"].append(e)
    if sub_iface is not None:
        iface["layers"] += sub_iface["layers"]
    iface["multiplier"] = em.multiplier
    iface["axis_slice"] = em.axis_slice
    iface["pipeline"] = em.pipeline
    return iface
