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
  one pixel: the fully parallel emitter (:func:`~codesign.rtl.emit.parallel.emit_parallel`) run on the
  layer restricted to a single output position without padding (identical arithmetic, bit-exact with the
  golden model).

At the first non-window layer ``hw/cs_collect.v`` assembles the last streamed feature map into one
vector: beat ``k`` at fields ``[k*Cout, (k+1)*Cout)``, i.e. the C-order ``(H, W, Cout)`` vector the
vector layers expect; the rest of the network is the unchanged vector design (module ``codesign_vec``).
Full valid/ready backpressure everywhere.

Latency / II: a cycle model of the stream control (:func:`~codesign.rtl.emit.stream_plan.stream_timing`,
the same counters and handshakes as the RTL) with the input always valid and the output always ready;
latency = cycles from the first pixel beat of a vector to its output beat, II = cycles between the first
beats of consecutive vectors (at least the padded pixels of the busiest streamed layer). Only the
``latency`` strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesign.config import RTLConfig
from codesign.errors import UnsupportedError
from codesign.rtl import ir
from codesign.rtl.emit.fork import LazyForks
from codesign.rtl.emit.module import LayerModule
from codesign.rtl.emit.netlist import lit
from codesign.rtl.emit.parallel import emit_parallel
from codesign.rtl.emit.stream_plan import (
    Collect,
    Fifo,
    Pad,
    Pipe,
    StreamPlan,
    WindowStage,
    pe_layer,
    plan_stream,
    stream_timing,
)
from codesign.rtl.emit.top import (
    VectorDesign,
    build_vector,
    host_info,
    layer_info,
    port_stream,
    vector_interface,
)
from codesign.rtl.interface import Interface

STREAM_LIBS = ("cs_pad.v", "cs_window.v", "cs_collect.v")


@dataclass(frozen=True)
class StreamDesign:
    """The modules of a stream-I/O design: per-pixel units, the vector part, the top level."""

    top: str
    top_text: str
    modules: tuple[LayerModule, ...]  # per-pixel compute units, in order
    vector: VectorDesign | None
    libs: frozenset[str]
    files: tuple[str, ...]
    interface: Interface


class _Graph:
    """The streaming stages of the top level, a chain or a network that forks and re-joins (residual
    adds): every stream is named by the streamed layer that writes it; a stream read by several layers is
    a lazy fork (each reader takes the beat in the same cycle); each input of an add waits in a
    ``cs_fifo`` (depth: what the other branch can hold, see :func:`_join_depths`) and the add's per-pixel
    unit takes one pixel of both when both are there. ``timing`` / ``preds`` are the cycle model's stages
    and their producers."""

    def __init__(self, plan: StreamPlan):
        self.lines: list[str] = []
        self.cur = ("s_axis_tdata", "s_axis_tvalid", "s_axis_tready")  # the top-level output stream, at the end
        self.timing: list = []
        self.plan = plan
        self.preds: list[list[int]] = []
        self.out: dict[int, tuple[str, str, str]] = {-1: self.cur}  # layer -> (data, valid, ready wire)
        self.out_stage: dict[int, int] = {-1: -1}
        self.readers: dict[int, list[tuple[int, int]]] = {-1: []}
        for i in range(len(plan.layers)):
            self.readers.setdefault(i, [])
            for p, j in enumerate(plan.preds(i)):
                self.readers[j].append((i, p))
        self.readers[len(plan.layers) - 1].append((-2, 0))  # the collector
        self.forks = LazyForks(self.lines, self.readers, self.out, self._name, "reader", "pixel")

    def instance(self, nm: str, module: str, params: str, out_w: int, src: tuple[str, str], pe: bool = False
                 ) -> tuple[tuple[str, str, str], str]:
        """One instance reading (data, valid) ``src``; returns its output stream and its input-ready wire."""
        lines = self.lines
        d, v, r = f"{nm}_tdata", f"{nm}_tvalid", f"{nm}_tready"
        lines.append(f"    wire [{out_w - 1}:0] {d};\n    wire {v};\n    wire {r};\n    wire {nm}_s_ready;")
        if pe:
            lines.append(f"    {module} u_{nm} (.clk(clk), .rst(rst), .in_valid({src[1]}), .in_ready({nm}_s_ready), "
                         f".in_data({src[0]}), .out_valid({v}), .out_ready({r}), .out_data({d}));")
        else:
            lines.append(f"    {module} #({params}) u_{nm} (.clk(clk), .rst(rst), "
                         f".s_tdata({src[0]}), .s_tvalid({src[1]}), .s_tready({nm}_s_ready),\n"
                         f"        .m_tdata({d}), .m_tvalid({v}), .m_tready({r}));")
        return (d, v, r), f"{nm}_s_ready"

    def stage(self, st, preds: list[int]) -> int:
        self.timing.append(st)
        self.preds.append(preds)
        return len(self.timing) - 1

    def valid_for(self, j: int, edge: tuple[int, int], nm: str) -> str:
        """The valid a reader of layer j's stream sees (a lazy fork: only while every other reader is ready)."""
        return self.forks.valid(j, edge, f"{nm}_valid")

    def _name(self, j: int) -> str:
        return "the input" if j == -1 else self.plan.layers[j].name

    def finish(self, j: int, edge: tuple[int, int], ready: str) -> None:
        self.forks.finish(j, edge, ready)

def _capacity(ly: ir.Layer, g, pe_latency: int, fifo_depth: int = 0) -> int:
    """Pixels a streamed layer can take in before it must hand one on (its line buffer and window, the
    per-pixel unit's registers, its own FIFOs): an upper bound, for sizing the FIFO of the other branch."""
    cap = pe_latency + 1 + fifo_depth
    if isinstance(ly, ir.Window):
        cap += g.kh * g.wp + g.kw + 1
    return cap


def _join_depths(plan: StreamPlan, i: int, caps: list[int]) -> list[int]:
    """FIFO depth of each input of the add at streamed layer ``i``: 2 + the most pixels the *other* branch
    can hold between the fork both branches start from and the add (so the fork never waits on a full
    FIFO while the other branch still needs pixels to produce its next one)."""
    anc: list[set[int]] = []
    for k in range(i):
        a = {-1}
        for j in plan.preds(k):
            a |= {j} | (anc[j] if j >= 0 else set())
        anc.append(a)
    a_sets = [({j} | (anc[j] if j >= 0 else set())) for j in plan.preds(i)]
    fork = max(a_sets[0] & a_sets[1])
    depths = []
    for p in range(2):
        other = plan.preds(i)[1 - p]
        dist = {fork: 0}
        for k in range(fork + 1, other + 1):
            ds = [dist[j] for j in plan.preds(k) if j in dist]
            if ds:
                dist[k] = max(ds) + caps[k]
        depths.append(2 + dist.get(other, 0))
    return depths


def _stream_graph(plan: StreamPlan, cfg: RTLConfig, ch: _Graph) -> tuple[list[LayerModule], list[dict]]:
    """Pad / window / per-pixel unit of every streamed layer (FIFOs and a join unit for each add), then the
    collector. A chain writes exactly what it wrote before forks existed (no ``sources`` key)."""
    mods, info, caps = [], [], []
    for i, (ly, g) in enumerate(zip(plan.layers, plan.geoms, strict=True)):
        b = ly.in_fmt.bits
        pw = g.c * b
        ch.lines.append(f"    // {ly.name}: {ly.describe()}")
        ent = {"name": ly.name, "kind": ly.kind, "in": [g.h, g.w, g.c], "out": [g.oh, g.ow, g.oc]}
        if not plan.is_chain:
            ent["sources"] = [ch._name(j) if j >= 0 else "" for j in plan.preds(i)]
        mod = emit_parallel(pe_layer(ly, g), cfg)
        mods.append(mod)
        out_w = g.oc * ly.out_fmt.bits
        if isinstance(ly, ir.Add):
            depths = _join_depths(plan, i, caps)
            fifos, f_stage = [], []
            for p, j in enumerate(plan.preds(i)):
                f = f"{ly.name}_in{p}"
                w = g.c * (ly.in_fmt.bits if p == 0 else ly.in_fmt2.bits)
                ev = ch.valid_for(j, (i, p), f)
                ch.lines.append(f"    // input {p} of {ly.name} ({ch._name(j)}) waits here for the other one\n"
                                f"    wire [{w - 1}:0] {f}_tdata;\n    wire {f}_tvalid;\n    wire {f}_tready;\n"
                                f"    wire {f}_s_ready;\n"
                                f"    cs_fifo #(.W({w}), .DEPTH({depths[p]})) u_{f} (.clk(clk), .rst(rst), "
                                f".s_tdata({ch.out[j][0]}), .s_tvalid({ev}), .s_tready({f}_s_ready),\n"
                                f"        .m_tdata({f}_tdata), .m_tvalid({f}_tvalid), .m_tready({f}_tready));")
                ch.finish(j, (i, p), f"{f}_s_ready")
                fifos.append(f)
                f_stage.append(ch.stage(Fifo(depths[p]), [ch.out_stage[j]]))
            a, c = fifos
            nm = mod.name
            d, v, r = f"{nm}_tdata", f"{nm}_tvalid", f"{nm}_tready"
            ch.lines.append(f"    wire [{out_w - 1}:0] {d};\n    wire {v};\n    wire {r};\n    wire {nm}_in_ready;\n"
                            f"    assign {a}_tready = {nm}_in_ready && {c}_tvalid;   // join: both pixels present\n"
                            f"    assign {c}_tready = {nm}_in_ready && {a}_tvalid;\n"
                            f"    {nm} u_{nm} (.clk(clk), .rst(rst), .in_valid({a}_tvalid && {c}_tvalid), "
                            f".in_ready({nm}_in_ready), .in_data({{{c}_tdata, {a}_tdata}}), .out_valid({v}), "
                            f".out_ready({r}), .out_data({d}));")
            ch.out[i] = (d, v, r)
            ch.out_stage[i] = ch.stage(Pipe(mod.latency), f_stage)
            ent["skip_fifo_depths"] = depths
            caps.append(_capacity(ly, g, mod.latency, max(depths)))
        else:
            (j,) = plan.preds(i)
            hops = []
            if isinstance(ly, ir.Window):
                ent.update(kernel=[g.kh, g.kw], stride=[g.sh, g.sw], pads=[g.pt, g.pl, g.pb, g.pr],
                           padded=[g.hp, g.wp], line_buffer_bits=(g.kh - 1) * g.wp * pw,
                           window_bits=g.kh * g.kw * pw)
                if g.padded:
                    fill = ly.in_fmt.lo if isinstance(ly, ir.MaxPool) else 0
                    fv = sum((fill & ((1 << b) - 1)) << (c * b) for c in range(g.c))
                    hops.append((f"{ly.name}_pad", "cs_pad", f".PW({pw}), .H({g.h}), .W({g.w}), .PT({g.pt}), "
                                 f".PB({g.pb}), .PL({g.pl}), .PR({g.pr}), .FILL({lit(fv, pw)})", pw, False, Pad(g)))
                hops.append((f"{ly.name}_win", "cs_window", f".PW({pw}), .HP({g.hp}), .WP({g.wp}), .KH({g.kh}), "
                             f".KW({g.kw}), .SH({g.sh}), .SW({g.sw})", g.kh * g.kw * pw, False, WindowStage(g)))
            hops.append((mod.name, mod.name, "", out_w, True, Pipe(mod.latency)))
            src = (ch.out[j][0], ch.valid_for(j, (i, 0), f"{hops[0][0]}_in"))
            prev_stage, prev_r = ch.out_stage[j], None
            for nm, module, params, w, pe, st in hops:
                cur, s_ready = ch.instance(nm, module, params, w, src, pe)
                if prev_r is None:
                    ch.finish(j, (i, 0), s_ready)
                else:
                    ch.lines.append(f"    assign {prev_r} = {s_ready};")
                prev_stage = ch.stage(st, [prev_stage])
                src, prev_r = (cur[0], cur[1]), cur[2]
            ch.out[i] = cur
            ch.out_stage[i] = prev_stage
            caps.append(_capacity(ly, g, mod.latency))
        ent["pe_latency_cycles"] = mod.latency
        info.append(ent)
    last = len(plan.layers) - 1
    gl, lly = plan.geoms[-1], plan.layers[-1]
    n_col = gl.oh * gl.ow
    ch.lines.append(f"    // collector: {n_col} pixel beat(s) of {gl.oc} field(s) -> "
                    f"the ({gl.oh}, {gl.ow}, {gl.oc}) vector (beat k = fields k*{gl.oc}..)")
    cur, s_ready = ch.instance("collect", "cs_collect", f".PW({gl.oc * lly.out_fmt.bits}), .N({n_col})",
                                n_col * gl.oc * lly.out_fmt.bits, (ch.out[last][0], ch.out[last][1]))
    ch.finish(last, (-2, 0), s_ready)
    ch.stage(Collect(n_col), [ch.out_stage[last]])
    ch.cur = cur
    return mods, info


def _top_text(m: ir.Model, cfg: RTLConfig, top: str, plan: StreamPlan, ch: _Graph, vec: VectorDesign | None,
              latency: int, ii: int) -> str:
    fin, fout = m.input_fmt, m.output_fmt
    nout = int(np.prod(m.output_shape)) * fout.bits
    g0 = plan.geoms[0]
    vec_layers = [ly for ly in plan.rest.layers if not ly.is_wiring] if plan.rest is not None else []
    order = ("row-major pixels (h, w), channels packed per beat" if g0.h > 1 else "pixels along the length")
    head = [
        f"// {top}: generated by codesign.rtl (do not edit), io = stream",
        f"//   network : {m.name}, {len(plan.layers)} streamed layer(s) + {len(vec_layers)} vector layer module(s)",
        f"//   input   : {plan.beats} beat(s) per vector ({order}); a beat = the {g0.c} channel(s) of one pixel, "
        f"{fin.describe()}, channel c = s_axis_tdata[c*{fin.bits} +: {fin.bits}]",
        f"//   output  : {list(m.output_shape)} {fout.describe()} "
        f"(field i = m_axis_tdata[i*{fout.bits} +: {fout.bits}]), one vector per beat",
        f"//   timing  : latency {latency} cycles (first pixel in -> vector out), II {ii} cycles per vector",
        "//   AXI-Stream; clk rising edge, rst synchronous active high.",
    ]
    ports = ["    input  wire clk", "    input  wire rst",
             f"    input  wire [{g0.c * fin.bits - 1}:0] s_axis_tdata", "    input  wire s_axis_tvalid",
             "    output wire s_axis_tready",
             f"    output wire [{nout - 1}:0] m_axis_tdata", "    output wire m_axis_tvalid",
             "    input  wire m_axis_tready"]
    taps = vec_layers if cfg.debug_taps else []
    for ly in taps:
        ports.append(f"    output wire [{ly.n_out * ly.out_fmt.bits - 1}:0] dbg_{ly.name}_tdata")
        ports.append(f"    output wire dbg_{ly.name}_tvalid")
    lines = head + [f"module {top} (\n" + ",\n".join(ports) + "\n);"] + ch.lines
    cur = ch.cur
    if vec is not None:
        tp = "".join(f", .dbg_{ly.name}_tdata(dbg_{ly.name}_tdata), .dbg_{ly.name}_tvalid(dbg_{ly.name}_tvalid)"
                     for ly in taps)
        lines.append(f"    // the vector part of the network (one whole vector per beat)\n"
                     f"    codesign_vec u_vec (.clk(clk), .rst(rst), "
                     f".s_axis_tdata({cur[0]}), .s_axis_tvalid({cur[1]}), .s_axis_tready({cur[2]}),\n"
                     "        .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid), "
                     f".m_axis_tready(m_axis_tready){tp});")
    elif cfg.axis_slice:
        lines.append(f"    cs_skid_buffer #(.W({nout})) u_out_slice (.clk(clk), .rst(rst), .s_tdata({cur[0]}), "
                     f".s_tvalid({cur[1]}), .s_tready({cur[2]}),\n        .m_tdata(m_axis_tdata), "
                     f".m_tvalid(m_axis_tvalid), .m_tready(m_axis_tready));")
    else:
        lines.append(f"    assign m_axis_tdata = {cur[0]};\n    assign m_axis_tvalid = {cur[1]};\n"
                     f"    assign {cur[2]} = m_axis_tready;")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def build_stream(m: ir.Model, cfg: RTLConfig, onnx_rel: str, top: str = "codesign_top") -> StreamDesign:
    """The stream-mode design of ``m`` (modules, top level, interface); no file written."""
    if cfg.strategy != "latency":
        raise UnsupportedError("rtl.io='stream' supports only rtl.strategy='latency' (fully parallel per-pixel "
                               "compute units and vector layers); use rtl.io='vector' for the resource strategy")
    plan = plan_stream(m)
    ch = _Graph(plan)
    mods, stage_info = _stream_graph(plan, cfg, ch)
    preds = None if plan.is_chain else ch.preds
    vec = build_vector(plan.rest, cfg, top="codesign_vec") if plan.rest is not None else None
    pe_libs = set().union(*(mod.libs for mod in mods))
    if vec is not None:
        tail = vec.latency
        libs = pe_libs | set(vec.libs) | set(STREAM_LIBS)
    else:
        tail = 1 if cfg.axis_slice else 0
        libs = pe_libs | set(STREAM_LIBS) | ({"cs_skid_buffer.v"} if cfg.axis_slice else set())
    if preds is not None:
        libs |= {"cs_fifo.v"}
    files = sorted(libs) + [f"{mod.name}.v" for mod in mods]
    if vec is not None:
        files += [f for f in vec.files if f not in files]
    files.append(f"{top}.v")
    latency, ii, lats, iis = stream_timing(ch.timing, plan.beats, tail, preds=preds)
    text = _top_text(m, cfg, top, plan, ch, vec, latency, ii)
    iface = _interface(m, cfg, plan, stage_info, mods, vec, onnx_rel, top, files, (latency, ii, lats, iis))
    return StreamDesign(top, text, tuple(mods), vec, frozenset(libs), tuple(files), iface)


def _interface(m, cfg, plan, stage_info, mods, vec, onnx_rel, top, files, timing) -> Interface:
    latency, ii, lats, iis = timing
    g0, gl = plan.geoms[0], plan.geoms[-1]
    vi = vector_interface(plan.rest, cfg, vec, onnx_rel) if vec is not None else None
    inp = port_stream(m, "input", beats=plan.beats,
                      beat_fields=tuple(tuple(int(v) for v in r) for r in plan.beat_fields),
                      beat_order=(f"beat p = pixel p of the channels-last ({g0.h}, {g0.w}, {g0.c}) image in raster "
                                  f"order (p = h*{g0.w} + w); field c of a beat = channel c; beat_fields[p][c] = the "
                                  "index of that value in the input vector (C-order flattening of input.shape)"))
    out = port_stream(m, "output")
    timing_d = {"definition": "input always valid, output always ready: latency = first pixel beat of a vector "
                              "accepted -> its output beat; II = cycles between the first beats of consecutive "
                              "vectors (maxima over the first vectors of a run, from a cycle model of the stream "
                              "control)", "latency_first_vector": lats[0], "latency_steady": lats[-1],
                "ii_steady": iis[-1] if iis else ii}
    stream_d = {"layers": stage_info,
                "collector": {"beats": gl.oh * gl.ow, "fields_per_beat": gl.oc,
                              "order": f"beat k (pixel k of the ({gl.oh}, {gl.ow}) output in raster order) -> vector "
                                       f"fields [k*{gl.oc}, (k+1)*{gl.oc}): the C-order ({gl.oh}, {gl.ow}, {gl.oc}) "
                                       "vector"},
                "vector_top": "codesign_vec" if vec is not None else None}
    layers = [layer_info(ly, mod, streamed=True) for ly, mod in zip(plan.layers, mods, strict=True)]
    layers += list(vi.layers) if vi is not None else []
    return Interface(top=top, files=tuple(files), input=inp, output=out, latency_cycles=latency, ii=ii, io="stream",
                     timing=timing_d, strategy=cfg.strategy, reuse=cfg.reuse, onnx=onnx_rel, stream=stream_d,
                     layers=tuple(layers), multiplier=cfg.multiplier, axis_slice=cfg.axis_slice, pipeline=cfg.pipeline,
                     host=host_info(m))
