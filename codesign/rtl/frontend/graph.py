"""The frontend's working graph: every ONNX node of a QONNX model becomes one :class:`Op` (lowered
one-to-one by :func:`import_onnx`), the named passes of :mod:`codesign.rtl.frontend.passes` fuse them
(bias, relu, quantizer, trunc into the accumulator that produces them), and
:mod:`codesign.rtl.frontend.lower` turns the fused ops into the typed IR.

Ops are small mutable records; an op reads activation tensors (``ins``: ONNX tensor names) and writes
one (``out``). What moves no data is folded at import: quantized constants (``Quant`` of an initializer)
become :class:`~codesign.rtl.frontend.consts.QConst` values, reshapes and identity transposes become
aliases of their input tensor, and the graph input's quantizer defines the network's input format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from codesign.errors import UnsupportedError
from codesign.graph.analysis import (
    ACCUMULATORS,
    DYADIC,
    FLOAT,
    FSCALE,
    QUANTIZERS,
    Grid,
    Kind,
    annotated_grid,
    is_po2,
    partition,
)
from codesign.rtl.formats import FixedFormat, normalize_rounding
from codesign.rtl.frontend.consts import (
    QConst,
    bipolar_const,
    po2_exp,
    quantize_const,
    quantize_const_float,
)

# float ops that may stand between an accumulator and its quantizer (elementwise, monotone per channel
# for the thresholds proof to succeed; a non-monotone one is refused by the proof)
EPILOGUE_OPS = {"BatchNormalization", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Identity", "Sigmoid", "Tanh",
                "LeakyRelu", "HardSigmoid", "Neg"}


def po2_or_none(scale) -> int | None:
    """The exponent of a per-tensor power-of-two scale, else None."""
    a = np.asarray(scale, dtype=np.float64).ravel()
    if a.size == 0 or not np.all(a == a[0]) or not is_po2(a[0]):
        return None
    return int(np.frexp(a[0])[1]) - 1


def grid_format(grid: Grid) -> FixedFormat:
    """The code format of an annotated / ``--input-precision`` grid."""
    if grid.bipolar:
        return FixedFormat(1, False, grid.scale_exp, bipolar=True)
    return FixedFormat(grid.bits, grid.signed, grid.scale_exp)


def multithreshold_format(node, at: dict, thresholds, where: str) -> FixedFormat:
    """Codes of a FINN ``MultiThreshold``: ``count * out_scale + out_bias`` for a count in 0..n, as codes
    ``count + out_bias / out_scale`` at ``out_scale`` (bipolar for scale 2, bias -1)."""
    if thresholds is None:
        raise UnsupportedError(f"{where}: thresholds must be a constant")
    n = int(np.asarray(thresholds).shape[-1])
    osc, ob = float(at.get("out_scale", 1.0)), float(at.get("out_bias", 0.0))
    if osc == 2.0 and ob == -1.0 and n == 1:
        return FixedFormat(1, False, 0, bipolar=True)
    off = ob / osc
    if off != int(off):
        raise UnsupportedError(f"{where}: out_bias {ob} is not a multiple of out_scale {osc}")
    lo, hi = int(off), int(off) + n
    from codesign.rtl.formats import bits_for

    e = po2_or_none(osc)
    if lo >= 0:
        return FixedFormat(max(bits_for(0, hi) - 1, 1), False, e or 0, scale=None if e is not None else osc)
    return FixedFormat(bits_for(lo, hi), True, e or 0, scale=None if e is not None else osc)


@dataclass
class QuantSpec:
    """An activation quantizer: the output format and rounding mode. ``exact`` (a ``Quant`` with one
    power-of-two scale) is a shift-and-round of a dyadic input; anything else (a float scale,
    ``BipolarQuant``, ``MultiThreshold``) is realized as thresholds computed from ``node`` itself."""

    fmt: FixedFormat
    rounding: str
    node: object | None = None  # the ONNX node
    exact: bool = True


@dataclass
class Epilogue:
    """The float function from an accumulator (ONNX tensor ``src``) to a quantizer's output (``dst``):
    realized as integer thresholds (:mod:`codesign.rtl.frontend.thresholds`)."""

    src: str
    dst: str
    quant: QuantSpec


@dataclass(eq=False)
class Op:
    """One node of the working graph (ONNX node ``node``, or several after fusion)."""

    node: str  # name of the ONNX node it came from (for messages)
    op_type: str
    ins: list[str]  # activation inputs (ONNX tensor names of the producing ops; "" = the network input)
    out: str  # ONNX output tensor (the last fused node's output)
    shape: tuple[int, ...]  # output shape without the batch axis
    in_shape: tuple[int, ...] = ()  # shape of the first input as this op sees it
    onnx_nodes: list[str] = field(default_factory=list)
    proto: object | None = None  # the ONNX node it came from
    onnx_in: str | None = None  # the ONNX tensor its activation input stands for, when a pass rewired ``ins``

    @property
    def where(self) -> str:
        return f"node {self.node!r} ({self.op_type})"


@dataclass(eq=False)
class AccOp(Op):
    """An op producing an accumulator (MatMul/Gemm, Conv, residual Add, AveragePool), and what the
    fusion passes attach to it."""

    bias: BiasOp | None = None  # a fused bias Add
    relu: bool = False  # a fused Relu
    quant: QuantSpec | None = None  # a fused activation Quant
    trunc: TruncOp | None = None  # AveragePool: a fused Trunc
    epilogue: Epilogue | None = None  # a fused float epilogue (then no relu / quant)


@dataclass(eq=False)
class LinearOp(AccOp):
    weights: QConst | None = None
    conv: dict | None = None  # Conv: kernel, stride, pads, layout; None for MatMul/Gemm


@dataclass(eq=False)
class AddOp(AccOp):
    """Residual join of two activations."""


@dataclass(eq=False)
class AvgPoolOp(AccOp):
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    layout: str = "NHWC"


@dataclass(eq=False)
class MaxPoolOp(Op):
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    layout: str = "NHWC"


@dataclass(eq=False)
class BiasOp(Op):
    """``Add`` of a constant (or Gemm's C input): the bias of the accumulator it reads."""

    qconst: QConst | None = None
    raw: np.ndarray | None = None


@dataclass(eq=False)
class ReluOp(Op):
    pass


@dataclass(eq=False)
class QuantOp(Op):
    spec: QuantSpec | None = None


@dataclass(eq=False)
class RequantOp(Op):
    """An elementwise relu / requantization that no accumulator absorbed."""

    relu: bool = False
    quant: QuantSpec | None = None
    epilogue: Epilogue | None = None  # a float epilogue of the input codes (thresholds on them)


@dataclass(eq=False)
class FloatOp(Op):
    """A node the reference computes in float (BatchNorm, a float bias or scale, ...): only exists fused
    into an :class:`Epilogue`."""


@dataclass(eq=False)
class TruncOp(Op):
    attrs: dict = field(default_factory=dict)
    params: list = field(default_factory=list)
    version: int = 0


@dataclass(eq=False)
class TransposeOp(Op):
    perm: np.ndarray | None = None  # output field k is input field perm[k]
    float_in: bool = False  # moves a float tensor (between an accumulator and its quantizer): see CommuteTranspose


@dataclass
class Graph:
    """Ops in topological (ONNX node) order; ``""`` is the network input (the quantized graph input)."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str  # the tensor the graph output reads (after alias resolution)
    ops: list[Op]
    input_quant: QuantSpec | None = None
    output_onnx: str = ""  # the ONNX graph output's own name
    model: onnx.ModelProto | None = None  # the QONNX model (epilogues are evaluated on its own nodes)
    core_input: str = ""  # the ONNX tensor the integer core starts from (the RTL input)
    host_pre: bool = False  # float pre-processing on the host before the core input
    host_post: bool = False  # float post-processing on the host after the core output
    kinds: dict = field(default_factory=dict)  # ONNX tensor -> codesign.graph.analysis.Kind
    shapes: dict = field(default_factory=dict)  # ONNX tensor -> shape (with the batch axis)

    def shapes_of(self, tensor: str) -> tuple[int, ...]:
        return tuple(self.shapes[tensor])

    def producer(self, tensor: str) -> Op | None:
        return next((op for op in self.ops if op.out == tensor), None)

    def n_readers(self, tensor: str) -> int:
        """Readers of a tensor: ops, and the graph output."""
        return sum(op.ins.count(tensor) for op in self.ops) + (tensor == self.output_name)

    def fuse(self, into: Op, op: Op) -> None:
        """``op`` (the only reader of ``into``'s output) disappears into ``into``, which now writes
        ``op``'s output."""
        into.out = op.out
        into.onnx_nodes += [n for n in op.onnx_nodes if n not in into.onnx_nodes]
        self.ops.remove(op)


def attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def load_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if hasattr(model, "model") and isinstance(model.model, onnx.ModelProto):  # qonnx ModelWrapper
        return model.model
    return onnx.load(str(model))


def conv_out_shape(ishape, oc, k, stride, pads, layout):
    nd = len(k)
    sp = ishape[:nd] if layout == "NHWC" else ishape[1:]
    if len(sp) != nd:
        raise UnsupportedError(f"kernel rank {nd} does not match input shape {ishape}")
    o = [(sp[d] + pads[d] + pads[d + nd] - k[d]) // stride[d] + 1 for d in range(nd)]
    return (*o, oc) if layout == "NHWC" else (oc, *o)


def _layout(node) -> str:
    return "NHWC" if "channels_last" in node.domain else "NCHW"


class _Importer:
    """ONNX nodes -> ops, one per node (constants, reshapes and the input quantizer folded); the host
    pre- and post-processing of :func:`codesign.graph.analysis.partition` are left out."""

    def __init__(self, mp: onnx.ModelProto, name: str, input_grid: Grid | None):
        g = mp.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            self.shapes[vi.name] = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        self.opsets = {o.domain: int(o.version) for o in mp.opset_import}
        graph_inputs = [i for i in g.input if i.name not in self.inits]
        if len(graph_inputs) != 1:
            raise UnsupportedError(f"graph has {len(graph_inputs)} inputs; exactly one is supported")
        gin = graph_inputs[0]
        in_shape = self.shapes[gin.name][1:]
        if not in_shape or any(d <= 0 for d in in_shape):
            raise UnsupportedError(f"graph input {gin.name!r} needs a static shape (got {self.shapes[gin.name]})")
        grid = annotated_grid(mp, gin.name) or input_grid
        part = partition(mp, Kind(DYADIC))
        self.host = {n.output[0] for n in part.pre + part.post}  # by output tensor (protobuf objects are not stable)
        self.graph = Graph(name, gin.name, tuple(in_shape), part.core_output, [], output_onnx=part.core_output,
                           model=mp, core_input=part.core_input, host_pre=part.host_pre, host_post=part.host_post,
                           kinds=part.kinds, shapes=self.shapes)
        self.consts: dict[str, QConst] = {}  # Quant of an initializer
        self.shape_of: dict[str, tuple[int, ...]] = {gin.name: tuple(in_shape)}  # activation tensors
        self.alias: dict[str, str] = {gin.name: ""}  # tensor -> producing op's output ("": network input)
        self.raw: set[str] = {gin.name}  # tensors before the input quantizer (the unquantized input)
        self.node = None  # the ONNX node being imported
        if part.host_pre:  # the core starts at the first quantizer's output: its codes are the RTL input
            q = part.input_quant
            shape = self.shapes.get(q.output[0]) or self.shapes.get(q.input[0])  # a quantizer keeps its shape
            if shape is None:
                raise UnsupportedError(f"node {q.name!r} ({q.op_type}): output shape unknown; run shape inference "
                                       "(codesign clean) on the model first")
            self.graph.input_shape = shape[1:]
            self.graph.input_quant = self.quant_spec(q, attrs(q), f"node {q.name!r} ({q.op_type})")
            self.shape_of = {q.output[0]: self.graph.input_shape}
            self.alias = {q.output[0]: ""}
            self.raw = set()
        elif part.input_quant is None and grid is not None:  # an annotated / --input-precision grid
            self.graph.input_quant = QuantSpec(grid_format(grid), "FLOOR")
            self.raw = set()

    # ---- helpers ------------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        return self.inits.get(name)

    def act(self, name: str, where: str, quantized: bool = True) -> tuple[str, tuple[int, ...]]:
        """(producer tensor, shape) of an activation input; ``quantized``: refuse the raw input."""
        if name not in self.shape_of:
            raise UnsupportedError(f"{where}: input {name!r} is not an activation tensor")
        if quantized and name in self.raw:
            raise UnsupportedError(f"{where}: applied to the unquantized graph input {self.graph.input_name!r}: give "
                                   "its grid with --input-precision (e.g. 'ap_fixed<16,6>', config key "
                                   "quant.input_precision), a finn_datatype annotation, or add an input quantizer")
        return self.alias.get(name, name), self.shape_of[name]

    def add(self, op: Op) -> None:
        op.onnx_nodes = [op.node]
        op.proto = op.proto or self.node
        self.graph.ops.append(op)
        self.shape_of[op.out] = op.shape

    def is_float(self, tensor: str) -> bool:
        k = self.graph.kinds.get(tensor)
        return k is not None and k.kind == FLOAT

    def run(self, nodes) -> Graph:
        for node in nodes:
            if node.output[0] in self.host:
                continue
            nm = node.name or f"{node.op_type}({', '.join(node.input)})"
            where = f"node {nm!r} ({node.op_type})"
            self.node = node
            if node.op_type not in QUANTIZERS and node.op_type != "Transpose" and self.is_float(node.output[0]):
                self._float(node, nm, where)
                continue
            handler = getattr(self, f"_{node.op_type}", None)
            if handler is None:
                raise UnsupportedError(f"{where}: op {node.domain + '.' if node.domain else ''}{node.op_type} is not "
                                       "supported by the RTL backend")
            handler(node, nm, attrs(node), list(node.input), node.output[0], where)
        if self.graph.input_quant is None:
            raise UnsupportedError(f"graph input {self.graph.input_name!r} has no quantizer: give its grid with "
                                   "--input-precision (e.g. 'ap_fixed<16,6>', config key quant.input_precision) or a "
                                   "finn_datatype annotation")
        out = self.graph.output_name
        if out not in self.shape_of or out in self.raw:
            raise UnsupportedError(f"graph output {out!r} is not the last layer's output")
        self.graph.output_name = self.alias.get(out, out)
        return self.graph

    def _quant_params(self, node, at: dict, where: str) -> tuple[np.ndarray, int, bool, bool, str]:
        """A ``Quant`` node's (scale, bits, signed, narrow, rounding mode); its parameters must be constants
        and its zero point 0."""
        sc, zp, bw = (self.const(i) for i in node.input[1:4])
        if sc is None or zp is None or bw is None:
            raise UnsupportedError(f"{where}: scale, zero point and bit width must be constants")
        if np.any(np.asarray(zp) != 0):
            raise UnsupportedError(f"{where}: non-zero zero point")
        bits = float(np.asarray(bw).ravel()[0])
        if bits != int(bits) or bits < 1:
            raise UnsupportedError(f"{where}: bit width {bits} is not a positive integer")
        mode = normalize_rounding(at.get("rounding_mode", "ROUND"))
        return sc, int(bits), bool(at.get("signed", 1)), bool(at.get("narrow", 0)), mode

    def quant_spec(self, node, at: dict, where: str) -> QuantSpec:
        """The output format of an activation quantizer (Quant, BipolarQuant, MultiThreshold)."""
        op = node.op_type
        if op == "BipolarQuant":
            sc = self.const(node.input[1])
            if sc is None:
                raise UnsupportedError(f"{where}: scale must be a constant")
            e = po2_or_none(sc)
            fmt = FixedFormat(1, False, e if e is not None else 0, bipolar=True,
                              scale=None if e is not None else float(np.asarray(sc).ravel()[0]))
            return QuantSpec(fmt, "ROUND", node, exact=False)
        if op == "MultiThreshold":
            return QuantSpec(multithreshold_format(node, at, self.const(node.input[1]), where), "ROUND", node,
                             exact=False)
        sc, bits, signed, narrow, mode = self._quant_params(node, at, where)
        if np.asarray(sc).size > 1 and not np.all(np.asarray(sc) == np.asarray(sc).ravel()[0]):
            po2_exp(sc, where)  # raises: per-channel activation scales
        e = po2_or_none(sc)
        if bits == 1 and signed:  # qonnx: a 1-bit signed Quant is the bipolar sign
            return QuantSpec(FixedFormat(1, False, e if e is not None else 0, bipolar=True,
                                         scale=None if e is not None else float(np.asarray(sc).ravel()[0])),
                             mode, node, exact=False)
        if e is not None:
            return QuantSpec(FixedFormat(bits, signed, e, narrow), mode, node)
        return QuantSpec(FixedFormat(bits, signed, 0, narrow, scale=float(np.asarray(sc).ravel()[0])), mode, node,
                         exact=False)

    # ---- one method per ONNX op -----------------------------------------------------------------------
    def _Quant(self, node, nm, at, ins, out, where):
        x = self.const(ins[0])
        if x is not None:  # weights / bias: per-tensor or per-channel scale
            self.consts[out] = self._const_quant(node, x, at, ins, where)
            return
        spec = self.quant_spec(node, at, where)
        src, shape = self.act(ins[0], where, quantized=False)
        if ins[0] in self.raw:  # the input quantizer: its output is the network input (after the raw layout ops)
            if self.graph.input_quant is not None:
                raise UnsupportedError(f"{where}: second quantizer on the raw input")
            self.graph.input_quant = spec
            self.alias[out] = src
            self.shape_of[out] = shape
            return
        self.add(QuantOp(nm, node.op_type, [src], out, shape, shape, spec=spec))

    _BipolarQuant = _MultiThreshold = _IntQuant = _Quant

    def _const_quant(self, node, x, at, ins, where) -> QConst:
        if node.op_type == "BipolarQuant":
            return bipolar_const(x, self.const(ins[1]), where)
        if node.op_type == "MultiThreshold":
            raise UnsupportedError(f"{where}: MultiThreshold of a constant")
        sc, bits, signed, narrow, mode = self._quant_params(node, at, where)
        if bits == 1 and signed:
            return bipolar_const(x, sc, where)
        if is_po2(sc):
            return quantize_const(x, sc, bits, signed, narrow, mode, where)
        return quantize_const_float(x, sc, bits, signed, narrow, mode, where)

    def _float(self, node, nm, where):
        """A node the reference computes in float: kept for an epilogue (elementwise, per channel)."""
        floats = [i for i in node.input if self.is_float(i)]
        if node.op_type in ACCUMULATORS and floats:
            src = next((n for n in self.graph.model.graph.node if floats[0] in n.output), None)
            by = f" (computed by node {src.name!r}, {src.op_type})" if src is not None else ""
            raise UnsupportedError(f"{where}: reads the float tensor {floats[0]!r}{by}: an integer layer needs "
                                   "quantized inputs (add a quantizer in front of it)")
        if node.op_type not in EPILOGUE_OPS:
            raise UnsupportedError(f"{where}: a float {node.op_type} between integer layers (only elementwise, "
                                   f"per-channel ops can be folded into thresholds: {', '.join(sorted(EPILOGUE_OPS))})")
        dyn = [i for i in node.input if i and i not in self.inits and i not in self.consts]
        if len(dyn) != 1:
            raise UnsupportedError(f"{where}: a float {node.op_type} of {len(dyn)} activations (an epilogue is a "
                                   "function of one accumulator)")
        src, shape = self.act(dyn[0], where)
        out = node.output[0]
        self.add(FloatOp(nm, node.op_type, [src], out, self.shapes.get(out, (0, *shape))[1:] or shape, shape,
                         proto=node))

    def _MatMul(self, node, nm, at, ins, out, where):
        self._matmul(nm, "MatMul", at, ins, out, where)

    def _Gemm(self, node, nm, at, ins, out, where):
        self._matmul(nm, "Gemm", at, ins, out, where)

    def _matmul(self, nm, op, at, ins, out, where):
        src, a = self.act(ins[0], where)
        w = self.consts.get(ins[1])
        if w is None:
            raise UnsupportedError(f"{where}: weight {ins[1]!r} must be a Quant of an initializer")
        codes, we, fs = w.codes, w.scale_exp, w.fscale
        if op == "Gemm":
            if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0 or at.get("transA", 0):
                raise UnsupportedError(f"{where}: Gemm needs alpha=beta=1, transA=0")
            if at.get("transB", 0):
                codes = codes.T
                we = we if isinstance(we, int) else np.asarray(we).T
                fs = None if fs is None else np.asarray(fs).T
        if codes.ndim != 2 or int(np.prod(a)) != codes.shape[0] or len(a) != 1:
            raise UnsupportedError(f"{where}: needs a flat input vector (got shape {a}, weights {codes.shape})")
        n_out = codes.shape[1]
        has_bias = op == "Gemm" and len(ins) > 2 and ins[2]
        acc = f"{out}::gemm_acc" if has_bias else out
        self.add(LinearOp(nm, op, [src], acc, (n_out,), a, weights=QConst(codes, we, w.fmt, fs)))
        if has_bias:  # Gemm's C input: its own bias op, fused by FuseBias like an Add
            self.add(BiasOp(nm, op, [acc], out, (n_out,), (n_out,), qconst=self.consts.get(ins[2]),
                            raw=self.const(ins[2])))

    def _Conv(self, node, nm, at, ins, out, where):
        src, a = self.act(ins[0], where)
        w = self.consts.get(ins[1])
        if w is None:
            raise UnsupportedError(f"{where}: weight {ins[1]!r} must be a Quant of an initializer")
        if at.get("group", 1) != 1:
            raise UnsupportedError(f"{where}: grouped/depthwise convolution (group={at['group']}) is not supported")
        if any(d != 1 for d in at.get("dilations", [1])):
            raise UnsupportedError(f"{where}: dilation is not supported")
        if at.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise UnsupportedError(f"{where}: auto_pad is not supported (export explicit pads)")
        layout = _layout(node)
        k = tuple(at.get("kernel_shape", w.codes.shape[2:] if layout == "NCHW" else w.codes.shape[1:-1]))
        nd = len(k)
        stride = tuple(at.get("strides", [1] * nd))
        pads = tuple(at.get("pads", [0] * (2 * nd)))
        exp_shape = conv_out_shape(a, w.codes.shape[0], k, stride, pads, layout)
        oshape = self.shapes.get(out, ())[1:] or exp_shape
        if tuple(oshape) != tuple(exp_shape):
            raise UnsupportedError(f"{where}: output shape {oshape} does not match {exp_shape}")
        has_bias = len(ins) > 2 and ins[2]
        acc = f"{out}::conv_acc" if has_bias else out
        self.add(LinearOp(nm, "Conv", [src], acc, tuple(oshape), a, weights=w,
                          conv={"kernel": k, "stride": stride, "pads": pads, "layout": layout}))
        if has_bias:
            self.add(BiasOp(nm, "Conv", [acc], out, tuple(oshape), tuple(oshape), qconst=self.consts.get(ins[2]),
                            raw=self.const(ins[2])))

    def _Add(self, node, nm, at, ins, out, where):
        acts = [i in self.shape_of for i in ins[:2]]
        if all(acts):  # residual join
            (sa, a), (sb, b) = self.act(ins[0], where), self.act(ins[1], where)
            if tuple(a) != tuple(b):
                raise UnsupportedError(f"{where}: Add of activations with shapes {a} and {b} (broadcasting or a "
                                       "different layout) is not supported")
            self.add(AddOp(nm, "Add", [sa, sb], out, a, a))
            return
        if not any(acts):
            raise UnsupportedError(f"{where}: Add of two constants")
        xi, ci = (ins[0], ins[1]) if acts[0] else (ins[1], ins[0])
        src, a = self.act(xi, where)
        self.add(BiasOp(nm, "Add", [src], out, a, a, qconst=self.consts.get(ci), raw=self.const(ci)))

    def _Relu(self, node, nm, at, ins, out, where):
        src, a = self.act(ins[0], where)
        self.add(ReluOp(nm, "Relu", [src], out, a, a))

    def _MaxPool(self, node, nm, at, ins, out, where):
        src, a = self.act(ins[0], where)
        if any(p != 0 for p in at.get("pads", [0])) or at.get("ceil_mode", 0):
            raise UnsupportedError(f"{where}: MaxPool with padding/ceil_mode is not supported")
        if any(d != 1 for d in at.get("dilations", [1])):
            raise UnsupportedError(f"{where}: MaxPool dilation is not supported")
        layout = _layout(node)
        k = tuple(at["kernel_shape"])
        stride = tuple(at.get("strides", [1] * len(k)))  # ONNX default: 1
        ch = a[-1] if layout == "NHWC" else a[0]
        oshape = conv_out_shape(a, ch, k, stride, (0,) * (2 * len(k)), layout)
        self.add(MaxPoolOp(nm, "MaxPool", [src], out, tuple(oshape), a, kernel=k, stride=stride, layout=layout))

    def _AveragePool(self, node, nm, at, ins, out, where):
        self._avgpool(node, nm, at, ins, out, where)

    def _GlobalAveragePool(self, node, nm, at, ins, out, where):
        self._avgpool(node, nm, at, ins, out, where)

    def _avgpool(self, node, nm, at, ins, out, where):
        src, a = self.act(ins[0], where)
        layout = _layout(node)
        nd = len(a) - 1
        if nd < 1:
            raise UnsupportedError(f"{where}: needs a feature map (got shape {a})")
        sp = a[:nd] if layout == "NHWC" else a[1:]
        if node.op_type == "GlobalAveragePool":
            k, stride, pads = tuple(sp), tuple(sp), (0,) * (2 * nd)
        else:
            if at.get("auto_pad", "NOTSET") not in ("NOTSET", "") or at.get("ceil_mode", 0):
                raise UnsupportedError(f"{where}: auto_pad / ceil_mode are not supported (export explicit pads)")
            if any(d != 1 for d in at.get("dilations", [1])):
                raise UnsupportedError(f"{where}: AveragePool dilation is not supported")
            k = tuple(at["kernel_shape"])
            stride = tuple(at.get("strides", [1] * len(k)))
            pads = tuple(at.get("pads", [0] * (2 * len(k))))
            if any(pads) and not at.get("count_include_pad", 0):
                raise UnsupportedError(f"{where}: padding with count_include_pad=0 divides by a varying count")
        kp = int(np.prod(k))
        if kp & (kp - 1):
            raise UnsupportedError(f"{where}: average over a window of {kp} elements: only power-of-two windows "
                                   "are supported (the division is a shift)")
        ch = a[-1] if layout == "NHWC" else a[0]
        oshape = conv_out_shape(a, ch, k, stride, pads, layout)
        self.add(AvgPoolOp(nm, node.op_type, [src], out, tuple(oshape), a, kernel=k, stride=stride, pads=pads,
                           layout=layout))

    def _Trunc(self, node, nm, at, ins, out, where):
        src, a = self.act(ins[0], where, quantized=False)
        params = [self.const(i) for i in ins[1:]]
        self.add(TruncOp(nm, "Trunc", [src], out, a, a, attrs=at, params=params,
                         version=self.opsets.get(node.domain, 0)))

    def _reshape(self, node, nm, at, ins, out, where):
        src, a = self.act(ins[0], where, quantized=False)
        op = node.op_type
        oshape = self.shapes.get(out, ())[1:] if out in self.shapes else None
        if op == "Flatten" or oshape is None or len(self.shapes.get(out, ())) == 0:
            oshape = (int(np.prod(a)),) if op != "Identity" else a
        if int(np.prod(oshape)) != int(np.prod(a)):
            raise UnsupportedError(f"{where}: reshape {a} -> {oshape} changes the batch dimension")
        self.alias[out] = src  # C-order reshape: no data movement
        self.shape_of[out] = tuple(oshape)
        if ins[0] in self.raw:
            self.raw.add(out)

    _Flatten = _Reshape = _Squeeze = _Unsqueeze = _Identity = _reshape

    def _Transpose(self, node, nm, at, ins, out, where):
        src, a = self.act(ins[0], where, quantized=False)
        perm = list(at.get("perm", []))
        if not perm or perm[0] != 0:
            raise UnsupportedError(f"{where}: Transpose must keep the batch axis first (perm={perm})")
        idx = np.arange(int(np.prod(a))).reshape(a).transpose([d - 1 for d in perm[1:]])
        oshape = tuple(idx.shape)
        if ins[0] in self.raw:
            self.raw.add(out)
        if np.array_equal(idx.ravel(), np.arange(idx.size)):  # no data movement
            self.alias[out] = src
            self.shape_of[out] = oshape
            return
        self.add(TransposeOp(nm, "Transpose", [src], out, oshape, a, perm=idx.ravel().astype(np.int64),
                             float_in=self.graph.kinds.get(out, Kind(DYADIC)).kind in (FLOAT, FSCALE)))


def import_onnx(model: str | Path | onnx.ModelProto, name: str = "codesign", input_grid: Grid | None = None) -> Graph:
    """One op per ONNX node of a QONNX model (path, ModelProto or qonnx ModelWrapper); ``input_grid``: the
    grid of a graph input that no quantizer and no annotation defines (``--input-precision``)."""
    mp = load_model(model)
    return _Importer(mp, name, input_grid).run(mp.graph.node)
