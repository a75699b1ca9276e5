"""The top level of a vector-I/O design (one whole input vector per beat): the layer modules in order,
wired as a chain or, for residual graphs, with lazy forks and joins; and its :class:`Interface`.

Residual graphs (``add`` layers joining two streams, :func:`top_graph_text`): lazy forks, joins that fire
when both operands are present, and a ``hw/cs_fifo.v`` on the operand that arrives first (sized from the
latency difference and the II, so the join costs no throughput); latency = longest path.
Flatten/reshape/transpose layers are wiring in the top level. ``debug_taps`` adds, per computing layer,
``dbg_<layer>_tdata`` (its output vector) and ``dbg_<layer>_tvalid`` (high for exactly one cycle per
vector: when it is handed to the next layer), so taps arrive in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesign.config import RTLConfig
from codesign.errors import UnsupportedError
from codesign.rtl import ir
from codesign.rtl.emit.folded import emit_folded
from codesign.rtl.emit.fork import LazyForks
from codesign.rtl.emit.module import LayerModule
from codesign.rtl.emit.parallel import emit_parallel
from codesign.rtl.interface import Interface, LayerInfo, Stream


@dataclass(frozen=True)
class Skip:
    """A FIFO on input ``port`` of join ``layer``: the early operand waits ``wait_cycles`` there."""

    layer: str
    port: int
    depth: int
    wait_cycles: int


@dataclass(frozen=True)
class VectorDesign:
    """The emitted modules of a vector-I/O design, its top level and timing."""

    top: str
    modules: tuple[LayerModule, ...]  # computing layers, in model order
    top_text: str
    libs: frozenset[str]
    latency: int
    ii: int
    skips: tuple[Skip, ...]

    @property
    def files(self) -> list[str]:
        """Compile order: library modules, layer modules, the top."""
        return sorted(self.libs) + [f"{mod.name}.v" for mod in self.modules] + [f"{self.top}.v"]


def emit_layer(ly: ir.Layer, cfg: RTLConfig) -> LayerModule:
    if cfg.strategy == "resource" and isinstance(ly, ir.Linear):
        return emit_folded(ly, cfg)
    return emit_parallel(ly, cfg)


def base_of(m: ir.Model, name: str) -> str:
    """The computing layer (or ``""``, the input) behind flatten/transpose wiring."""
    while name:
        k = next(i for i, ly in enumerate(m.layers) if ly.name == name)
        if not m.layers[k].is_wiring:
            break
        name = m.sources(k)[0]
    return name


def plan_skips(m: ir.Model, mods: dict[str, LayerModule], ii: int) -> tuple[int, tuple[Skip, ...]]:
    """Arrival cycle of every stream (longest path); at each join a FIFO on the input that arrives
    first, deep enough to hold every vector issued while the other input's path computes (no
    throughput loss at the design's II). Returns the network latency and the FIFOs."""
    t = {"": 0}
    skips = []
    for k, ly in enumerate(m.layers):
        srcs = m.sources(k)
        if ly.is_wiring:
            t[ly.name] = t[srcs[0]]
            continue
        arr = t[srcs[0]]
        if len(srcs) == 2 and base_of(m, srcs[0]) != base_of(m, srcs[1]):
            ta, tb = t[srcs[0]], t[srcs[1]]
            port = 0 if ta < tb else 1  # the early input waits in the FIFO
            diff = abs(ta - tb)
            skips.append(Skip(ly.name, port, max(2, -(-max(diff, 1) // ii) + 1), diff))
            arr = max(ta, tb) if diff >= 1 else ta + 1  # the FIFO adds one cycle
        t[ly.name] = arr + mods[ly.name].latency
    return (t[m.layers[-1].name] if m.layers else 0), tuple(skips)


def build_vector(m: ir.Model, cfg: RTLConfig, top: str = "codesign_top") -> VectorDesign:
    """Every layer module, the top level and the timing of a vector-I/O design."""
    mods = [emit_layer(ly, cfg) for ly in m.layers if not ly.is_wiring]
    latency = sum(mod.latency for mod in mods)
    ii = max([1] + [mod.ii for mod in mods])
    libs = set().union(*(mod.libs for mod in mods))
    skips: tuple[Skip, ...] = ()
    if not m.is_chain:  # forks and joins: latency of the longest path, skip FIFOs
        latency, skips = plan_skips(m, {mod.name: mod for mod in mods}, ii)
        if skips:
            libs.add("cs_fifo.v")
    credit_latency = None
    if cfg.flow_control == "credit":
        if not m.is_chain:
            raise UnsupportedError(f"{m.name}: rtl.flow_control 'credit' supports chain networks only "
                                   "(this one forks and joins); use flow_control 'stall'")
        credit_latency = latency
        libs.add("cs_credit_fifo.v")
        latency += 1  # the output FIFO
    if cfg.axis_slice:
        libs.add("cs_skid_buffer.v")
        latency += 1
    text = top_chain_text(m, cfg, top, credit_latency) if m.is_chain else top_graph_text(m, cfg, top, skips)
    return VectorDesign(top, tuple(mods), text, frozenset(libs), latency, ii, skips)


def port_stream(m: ir.Model, side: str, **beats) -> Stream:
    """The input or output port of a design: AXI-Stream names, the vector's fields and their scale."""
    if side == "input":
        f, shape = m.input_fmt, m.input_shape
        return Stream("s_axis_tdata", "s_axis_tvalid", "s_axis_tready", int(np.prod(shape)), f.bits, f.signed,
                      f.scale_exp if f.scale is None else None, tuple(shape), bipolar=f.bipolar, scale=f.scale, **beats)
    f, shape, exps = m.output_fmt, m.output_shape, m.output_exps
    exact = exps is None and m.output_scales is None
    return Stream("m_axis_tdata", "m_axis_tvalid", "m_axis_tready", int(np.prod(shape)), f.bits, f.signed,
                  f.scale_exp if exact else None, tuple(shape),
                  scale_exps=None if exps is None else tuple(int(v) for v in exps), bipolar=f.bipolar,
                  scales=m.output_scales)


def host_info(m: ir.Model) -> dict | None:
    """What the host computes around the core (None: nothing, the core is the whole graph)."""
    if not (m.host_pre or m.host_post):
        return None
    return {"pre": m.host_pre, "post": m.host_post, "input_tensor": m.input_name, "output_tensor": m.output_name,
            "definition": "pre: float ops from the graph input to input_tensor's quantizer (the input port carries its "
                          "codes); post: float ops from output_tensor (the output port's codes times their scale) to "
                          "the graph output; both run on the host in float32 like the ONNX reference "
                          "(codesign.golden applies them)"}


def layer_info(ly: ir.Layer, mod: LayerModule, *, streamed: bool = False, inputs: tuple[str, ...] | None = None,
               skip: Skip | None = None, tap: bool = False) -> LayerInfo:
    exps = ly.out_exps()
    return LayerInfo(
        name=ly.name, kind=ly.kind, onnx_output=ly.onnx_output, fields=ly.n_out, bits=ly.out_fmt.bits,
        signed=ly.out_fmt.signed, scale_exp=ly.out_fmt.scale_exp if exps is None else None, shape=tuple(ly.out_shape),
        latency_cycles=mod.latency, ii=mod.ii, streamed=streamed, pot=ly.pot, sparsity=round(ly.sparsity, 4),
        scale_exps=None if exps is None or streamed else tuple(int(v) for v in exps), inputs=inputs,
        skip_fifo=None if skip is None else {"input": skip.port, "depth": skip.depth, "wait_cycles": skip.wait_cycles},
        tap=Stream(f"dbg_{ly.name}_tdata", f"dbg_{ly.name}_tvalid", None, ly.n_out, ly.out_fmt.bits, ly.out_fmt.signed,
                   ly.out_fmt.scale_exp, (ly.n_out,)) if tap else None)


def vector_interface(m: ir.Model, cfg: RTLConfig, d: VectorDesign, onnx_rel: str) -> Interface:
    mods = {mod.name: mod for mod in d.modules}
    skips = {s.layer: s for s in d.skips}
    layers = []
    for ly in m.layers:
        if ly.is_wiring:
            continue
        inputs = None if m.is_chain else tuple(s or "input" for s in (ly.inputs or ()))
        layers.append(layer_info(ly, mods[ly.name], inputs=inputs if ly.inputs is not None else None,
                                 skip=skips.get(ly.name), tap=cfg.debug_taps))
    return Interface(top=d.top, files=tuple(d.files), input=port_stream(m, "input"), output=port_stream(m, "output"),
                     latency_cycles=d.latency, ii=d.ii, strategy=cfg.strategy, reuse=cfg.reuse, onnx=onnx_rel,
                     layers=tuple(layers), multiplier=cfg.multiplier, axis_slice=cfg.axis_slice, pipeline=cfg.pipeline,
                     host=host_info(m), flow_control="credit" if cfg.flow_control == "credit" else None)


def top_head(m: ir.Model, cfg: RTLConfig, top: str) -> list[str]:
    fin, fout = m.input_fmt, m.output_fmt
    nin = int(np.prod(m.input_shape)) * fin.bits
    nout = int(np.prod(m.output_shape)) * fout.bits
    lines = [
        f"// {top}: generated by codesign.rtl (do not edit)",
        f"//   network : {m.name}, {len([ly for ly in m.layers if not ly.is_wiring])} layer module(s)",
        f"//   input   : {list(m.input_shape)} {fin.describe()} (field i = s_axis_tdata[i*{fin.bits} +: {fin.bits}])",
        f"//   output  : {list(m.output_shape)} {fout.describe()} "
        f"(field i = m_axis_tdata[i*{fout.bits} +: {fout.bits}])",
        f"//   arch    : {cfg.strategy} strategy, reuse {cfg.reuse}, multiplier {cfg.multiplier}, "
        f"pipeline {cfg.pipeline}" + (", flow control credit (valid-only pipeline, output FIFO)"
                                       if cfg.flow_control == "credit" else ""),
        "//   AXI-Stream, one vector per beat; clk rising edge, rst synchronous active high.",
    ]
    for ly in m.layers:
        lines.append(f"//   {ly.name:8s}: {ly.describe()}")
    ports = ["    input  wire clk", "    input  wire rst",
             f"    input  wire [{nin - 1}:0] s_axis_tdata", "    input  wire s_axis_tvalid",
             "    output wire s_axis_tready",
             f"    output wire [{nout - 1}:0] m_axis_tdata", "    output wire m_axis_tvalid",
             "    input  wire m_axis_tready"]
    if cfg.debug_taps:
        for ly in m.layers:
            if not ly.is_wiring:
                ports.append(f"    output wire [{ly.n_out * ly.out_fmt.bits - 1}:0] dbg_{ly.name}_tdata")
                ports.append(f"    output wire dbg_{ly.name}_tvalid")
    lines.append(f"module {top} (\n" + ",\n".join(ports) + "\n);")
    return lines


def _transpose_wire(ly: ir.Transpose, k: int, src: str) -> tuple[str, str]:
    b = ly.in_fmt.bits
    d = f"d{k}_{ly.name}"
    parts = ", ".join(f"{src}[{int(p) * b + b - 1}:{int(p) * b}]" for p in reversed(ly.perm))
    return d, f"    wire [{ly.n_out * b - 1}:0] {d} = {{{parts}}};   // {ly.name}: transpose (wiring)"


def _out_slice(nout: int, s_data: str, s_valid: str, s_ready: str) -> str:
    return (f"    // output register slice: no combinational path from m_axis_tready to s_axis_tready\n"
            f"    cs_skid_buffer #(.W({nout})) u_out_slice (.clk(clk), .rst(rst), .s_tdata({s_data}), "
            f".s_tvalid({s_valid}), .s_tready({s_ready}),\n        .m_tdata(m_axis_tdata), .m_tvalid(m_axis_tvalid), "
            f".m_tready(m_axis_tready));")


def top_chain_text(m: ir.Model, cfg: RTLConfig, top: str, credit_latency: int | None = None) -> str:
    """Top level of a chain of layers. With ``credit_latency`` (flow_control 'credit': the layers'
    summed latency) the layers never stall: an accepted beat enters the first layer, the last one
    writes into ``hw/cs_credit_fifo.v``, whose registered credit count is ``s_axis_tready``."""
    nout = int(np.prod(m.output_shape)) * m.output_fmt.bits
    lines = top_head(m, cfg, top)
    cur_d, cur_v, cur_r = "s_axis_tdata", "s_axis_tvalid", "s_axis_tready"
    if credit_latency is not None:
        lines.append("    // flow control 'credit': valid-only layer pipeline, output FIFO, registered credit ready\n"
                     "    wire s_take = s_axis_tvalid && s_axis_tready;\n    wire s_ready_unused;")
        cur_v, cur_r = "s_take", "s_ready_unused"
    for k, ly in enumerate(m.layers):
        if isinstance(ly, ir.Flatten):
            continue
        if isinstance(ly, ir.Transpose):
            cur_d, line = _transpose_wire(ly, k, cur_d)
            lines.append(line)
            continue
        d, v, r = f"{ly.name}_tdata", f"{ly.name}_tvalid", f"{ly.name}_tready"
        lines.append(f"    wire [{ly.n_out * ly.out_fmt.bits - 1}:0] {d};\n    wire {v};\n    wire {r};")
        in_ready = f"{ly.name}_in_ready"
        lines.append(f"    wire {in_ready};")
        lines.append(f"    {ly.name} u_{ly.name} (.clk(clk), .rst(rst), .in_valid({cur_v}), .in_ready({in_ready}), "
                     f".in_data({cur_d}), .out_valid({v}), .out_ready({r}), .out_data({d}));")
        lines.append(f"    assign {cur_r} = {in_ready};")
        if cfg.debug_taps:
            lines.append(f"    assign dbg_{ly.name}_tdata = {d};\n    assign dbg_{ly.name}_tvalid = {v} && {r};")
        cur_d, cur_v, cur_r = d, v, r
    if credit_latency is not None:
        lines.append(f"    wire [{nout - 1}:0] fifo_tdata;\n    wire fifo_tvalid;\n    wire fifo_tready;\n"
                     f"    assign {cur_r} = 1'b1;   // the layers never stall\n"
                     f"    cs_credit_fifo #(.W({nout}), .LATENCY({credit_latency})) u_credit (.clk(clk), .rst(rst), "
                     f".s_tready(s_axis_tready), .p_take(s_take),\n"
                     f"        .p_tdata({cur_d}), .p_tvalid({cur_v}), .m_tdata(fifo_tdata), .m_tvalid(fifo_tvalid), "
                     f".m_tready(fifo_tready));")
        cur_d, cur_v, cur_r = "fifo_tdata", "fifo_tvalid", "fifo_tready"
    if cfg.axis_slice:
        lines.append(_out_slice(nout, cur_d, cur_v, cur_r))
    else:
        lines.append(f"    assign m_axis_tdata = {cur_d};\n    assign m_axis_tvalid = {cur_v};\n"
                     f"    assign {cur_r} = m_axis_tready;")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


class _GraphTop:
    """Top level of a network that forks and re-joins (residual blocks).

    A stream read by several consumers is a *lazy fork*: each consumer sees ``valid`` only while all
    the others are ready, and the producer sees ``ready`` when all are (no consumer's ready depends on
    its valid, so this has no combinational loop). A join (``add``) fires when both inputs are valid;
    the input that arrives first waits in a ``cs_fifo`` (sized in :func:`plan_skips`), which also
    breaks the fork -> join loop of a skip connection."""

    def __init__(self, m: ir.Model, cfg: RTLConfig, top: str, skips: tuple[Skip, ...]):
        self.m, self.cfg = m, cfg
        self.skips = {(s.layer, s.port): s.depth for s in skips}
        self.lines = top_head(m, cfg, top)
        self.width = {"": int(np.prod(m.input_shape)) * m.input_fmt.bits}
        for ly in m.layers:
            if not ly.is_wiring:
                self.width[ly.name] = ly.n_out * ly.out_fmt.bits
        self.stream = {"": ("s_axis_tdata", "s_axis_tvalid", "s_axis_tready")}
        self.data = {"": "s_axis_tdata"}
        self.edges: dict[str, list[tuple[str, int]]] = {}  # base stream -> consumers (layer, port)
        for k, ly in enumerate(m.layers):
            if not ly.is_wiring:
                for p, src in enumerate(self.ports(k)):
                    self.edges.setdefault(self.base(src), []).append((ly.name, p))
        self.last = m.layers[-1].name
        self.edges.setdefault(self.base(self.last), []).append(("", 0))  # the output stream
        self.ready: dict[tuple[str, int], str] = {}  # consumer edge -> its ready (as the producer sees it)
        self.forks = LazyForks(self.lines, self.edges, self.stream, lambda b: b or "the input", "consumer",
                               "vector", self.ready)

    def base(self, name: str) -> str:
        return base_of(self.m, name)

    def ports(self, k: int) -> list[str]:
        """The sources of layer k that are separate stream edges (Add(x, x): one edge)."""
        srcs = self.m.sources(k)
        return srcs[:1] if len(srcs) == 2 and self.base(srcs[0]) == self.base(srcs[1]) else srcs

    def edge_valid(self, b: str, edge: tuple[str, int]) -> str:
        return self.forks.valid(b, edge, f"{edge[0] or 'out'}_in{edge[1]}_valid")

    def finish(self, b: str, edge: tuple[str, int]) -> None:
        self.forks.finish(b, edge)

    def sides(self, nm: str, k: int) -> list[tuple[str, str, str | None, tuple[str, int]]]:
        """Per input edge of layer ``nm``: (valid, data, ready target or None, edge); a FIFO where the
        operand waits for the other one."""
        out, lines = [], self.lines
        for p, src in enumerate(self.ports(k)):
            b = self.base(src)
            edge = (nm, p)
            ev = self.edge_valid(b, edge)
            if edge not in self.skips:
                out.append((ev, self.data[src], None, edge))
                continue
            depth = self.skips[edge]
            f = f"{nm}_skip{p}"
            lines.append(f"    // skip path into {nm} input {p}: waits here while the other input is computed\n"
                         f"    wire [{self.width[b] - 1}:0] {f}_tdata;\n    wire {f}_tvalid;\n    wire {f}_tready;\n"
                         f"    wire {f}_s_ready;\n"
                         f"    cs_fifo #(.W({self.width[b]}), .DEPTH({depth})) u_{f} (.clk(clk), .rst(rst), "
                         f".s_tdata({self.data[src]}), .s_tvalid({ev}), .s_tready({f}_s_ready),\n"
                         f"        .m_tdata({f}_tdata), .m_tvalid({f}_tvalid), .m_tready({f}_tready));")
            self.ready[edge] = f"{f}_s_ready"
            out.append((f"{f}_tvalid", f"{f}_tdata", f"{f}_tready", edge))
        return out

    def layer(self, k: int, ly: ir.Layer) -> None:
        srcs, lines, nm = self.m.sources(k), self.lines, ly.name
        d, v, r = f"{nm}_tdata", f"{nm}_tvalid", f"{nm}_tready"
        lines.append(f"    wire [{ly.n_out * ly.out_fmt.bits - 1}:0] {d};\n    wire {v};\n    wire {r};")
        in_ready = f"{nm}_in_ready"
        lines.append(f"    wire {in_ready};")
        sides = self.sides(nm, k)
        if len(sides) == 1:
            in_v, in_d = sides[0][0], sides[0][1]
            if len(srcs) == 2:  # both operands from one stream (through wiring only): no wait
                in_d = f"{{{self.data[srcs[1]]}, {self.data[srcs[0]]}}}"
            rdy = [in_ready]
        else:
            in_v = f"{nm}_in_valid"
            lines.append(f"    wire {in_v} = {sides[0][0]} && {sides[1][0]};   // join: both operands present")
            in_d = f"{{{sides[1][1]}, {sides[0][1]}}}"
            rdy = [f"{in_ready} && {sides[1][0]}", f"{in_ready} && {sides[0][0]}"]
        for (_, _, target, edge), rr in zip(sides, rdy, strict=True):
            if target is not None:
                lines.append(f"    assign {target} = {rr};")
            else:
                self.ready[edge] = rr
        lines.append(f"    {nm} u_{nm} (.clk(clk), .rst(rst), .in_valid({in_v}), .in_ready({in_ready}), "
                     f".in_data({in_d}), .out_valid({v}), .out_ready({r}), .out_data({d}));")
        for p, src in enumerate(self.ports(k)):
            self.finish(self.base(src), (nm, p))
        if self.cfg.debug_taps:
            lines.append(f"    assign dbg_{nm}_tdata = {d};\n    assign dbg_{nm}_tvalid = {v} && {r};")
        self.stream[nm] = (d, v, r)
        self.data[nm] = d

    def text(self) -> str:
        m, lines = self.m, self.lines
        for k, ly in enumerate(m.layers):
            srcs = m.sources(k)
            if isinstance(ly, ir.Flatten):
                self.data[ly.name] = self.data[srcs[0]]
            elif isinstance(ly, ir.Transpose):
                self.data[ly.name], line = _transpose_wire(ly, k, self.data[srcs[0]])
                lines.append(line)
            else:
                self.layer(k, ly)
        b = self.base(self.last)
        out_d = self.data[self.last]
        out_v = self.edge_valid(b, ("", 0))
        if self.cfg.axis_slice:
            self.ready[("", 0)] = "out_slice_ready"
            lines.append("    wire out_slice_ready;\n" + _out_slice(int(np.prod(m.output_shape)) * m.output_fmt.bits,
                                                                  out_d, out_v, "out_slice_ready"))
        else:
            self.ready[("", 0)] = "m_axis_tready"
            lines.append(f"    assign m_axis_tdata = {out_d};\n    assign m_axis_tvalid = {out_v};")
        self.finish(b, ("", 0))
        lines.append("endmodule")
        return "\n".join(lines) + "\n"


def top_graph_text(m: ir.Model, cfg: RTLConfig, top: str, skips: tuple[Skip, ...]) -> str:
    """Top level of a network that forks and re-joins (see :class:`_GraphTop`)."""
    return _GraphTop(m, cfg, top, skips).text()
