"""Where a QONNX graph is integer and where it is float: the host / accelerator split.

Every tensor after the network input is one of three kinds (:func:`tensor_kinds`):

* ``dyadic``: integer codes times a power-of-two scale (per tensor or per channel): what codesign's own
  exports are made of, computed exactly in integers everywhere;
* ``fscale``: integer codes times a float (non-power-of-two) scale: still exact integers (a quantizer's
  output, a MatMul/Conv of such codes with quantized weights: the scales multiply);
* ``float``: a float32 value (BatchNorm, a float bias, ``Mul``/``Div``/``Sub`` by non-power-of-two
  constants, Softmax, ...), which only the reference's float kernels compute.

:func:`partition` cuts the graph into host pre-processing (float ops from the graph input up to and
including the first quantizer; none when only layout ops stand before it), the integer core, and host
post-processing (the float tail after the last integer tensor, with no quantizer in it). Float tensors
*inside* the core, between an accumulator and the next quantizer, are epilogues: the RTL realizes them as
exact integer thresholds on the accumulator. Both the golden model and the RTL frontend use this one
partition, so they cut the graph at the same tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from codesign.errors import UnsupportedError
from codesign.graph.reference import model_consts

LAYOUT_OPS = {"Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Dropout"}
QUANTIZERS = {"Quant", "IntQuant", "BipolarQuant", "MultiThreshold"}
ACCUMULATORS = {"MatMul", "Gemm", "Conv"}
SAME_KIND = LAYOUT_OPS | {"Relu", "MaxPool", "GlobalMaxPool", "Concat"}  # the output is the input's kind
DYADIC, FSCALE, FLOAT = "dyadic", "fscale", "float"


@dataclass(frozen=True)
class Kind:
    kind: str  # dyadic | fscale | float


def is_po2(s) -> bool:
    a = np.asarray(s, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        return False
    return bool(np.all(np.frexp(a)[0] == 0.5))


def _quant_kind(scale) -> Kind:
    return Kind(DYADIC) if is_po2(scale) else Kind(FSCALE)


def _node_kind(n, ins: list[Kind | None], consts: dict[str, np.ndarray], qscale: dict[str, np.ndarray]) -> Kind:
    """Kind of the output of node ``n`` (``ins``: kinds of its inputs, None for constants; ``qscale``: the
    scale of every quantized constant)."""
    op = n.op_type
    dyn = [k for k in ins if k is not None]
    if op in QUANTIZERS:
        if op == "MultiThreshold":
            sc = next((a.f for a in n.attribute if a.name == "out_scale"), 1.0)
            return _quant_kind(sc)
        return _quant_kind(consts.get(n.input[1], np.float32(1.0)) if op != "BipolarQuant" or len(n.input) > 1
                           else np.float32(1.0))
    if not dyn or any(k.kind == FLOAT for k in dyn):
        return Kind(FLOAT)
    if op in SAME_KIND:
        return dyn[0]
    if op in ACCUMULATORS:
        w = qscale.get(n.input[1])
        if len(dyn) != 1 or w is None or ins[0] is None:
            return Kind(FLOAT)  # two activations, or float (unquantized) weights
        acc = Kind(DYADIC) if dyn[0].kind == DYADIC and is_po2(w) else Kind(FSCALE)
        return _with_bias(n, acc, consts, qscale)
    if op in ("AveragePool", "GlobalAveragePool", "Trunc"):
        return dyn[0] if dyn[0].kind == DYADIC else Kind(FLOAT)
    if op in ("Add", "Sub"):
        if len(dyn) == 2:
            return dyn[0] if dyn[0].kind == dyn[1].kind == DYADIC else Kind(FLOAT)
        # a quantized constant (a bias) with a power-of-two scale stays exact; a raw float constant makes
        # the sum float (BatchNorm-like shifts, TensorNorm): an epilogue or post-processing
        c = next((i for i in n.input if i in qscale), None)
        return dyn[0] if dyn[0].kind == DYADIC and c is not None and is_po2(qscale[c]) else Kind(FLOAT)
    if op in ("Mul", "Div"):
        c = next((consts[i] for i in n.input if i in consts), None)
        if len(dyn) == 1 and dyn[0].kind == DYADIC and c is not None and is_po2(np.abs(c)):
            return dyn[0]
        return Kind(FLOAT)
    return Kind(FLOAT)


def _with_bias(n, acc: Kind, consts: dict[str, np.ndarray], qscale: dict[str, np.ndarray]) -> Kind:
    """Kind of a Gemm / Conv output that also adds a bias (Gemm ``C``, Conv's third input) or scales by
    ``alpha``/``beta``: exact only for a dyadic accumulator plus a power-of-two quantized bias."""
    attrs = {a.name: a.f for a in n.attribute if a.name in ("alpha", "beta")}
    if not all(is_po2(abs(v)) for v in attrs.values()):
        return Kind(FLOAT)
    bias = n.input[2] if len(n.input) > 2 and n.input[2] else None
    if bias is None:
        return acc
    return acc if acc.kind == DYADIC and bias in qscale and is_po2(qscale[bias]) else Kind(FLOAT)


def quantized_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Scale of every quantized constant: a quantizer's output on an initializer (quantized weights and
    biases), also after layout ops on it (a Transpose of quantized weights keeps their scales)."""
    consts = model_consts(model)
    out = {}
    for n in model.graph.node:
        if n.op_type in QUANTIZERS and n.op_type != "MultiThreshold" and n.input[0] in consts:
            out[n.output[0]] = consts[n.input[1]] if len(n.input) > 1 and n.input[1] in consts else np.float32(1.0)
        elif n.op_type in LAYOUT_OPS and n.input and n.input[0] in out and all(
                i in consts for i in n.input[1:] if i):
            out[n.output[0]] = out[n.input[0]]
    return out


def _float_average(model: onnx.ModelProto, n, consumers: dict[str, list]) -> bool:
    """An AveragePool / GlobalAveragePool over a window whose size is not a power of two, not followed by
    a Trunc: its mean has no exact dyadic value (a Trunc after it rounds it exactly, as the RTL does)."""
    if n.op_type not in ("AveragePool", "GlobalAveragePool"):
        return False
    k = next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), None)
    if k is None:
        vi = {v.name: v for v in list(model.graph.value_info) + list(model.graph.input)}.get(n.input[0])
        k = [d.dim_value for d in vi.type.tensor_type.shape.dim][2:] if vi is not None else []
    size = int(np.prod(k)) if k else 1
    cs = consumers.get(n.output[0], [])
    return size & (size - 1) != 0 and (not cs or any(c.op_type != "Trunc" for c in cs))


def tensor_kinds(model: onnx.ModelProto, start: str, start_kind: Kind) -> dict[str, Kind]:
    """Kind of every tensor computed from ``start`` (the integer core's input)."""
    consts, qscale = model_consts(model), quantized_constants(model)
    cons = _consumers(model)
    kinds = {start: start_kind}
    for n in model.graph.node:
        if not any(i in kinds for i in n.input):
            continue
        k = _node_kind(n, [kinds.get(i) for i in n.input if i], consts, qscale)
        if _float_average(model, n, cons):
            k = Kind(FLOAT)
        for o in n.output:
            kinds[o] = k
    return kinds


@dataclass
class Partition:
    """Host pre-processing, integer core, host post-processing of a graph."""

    graph_input: str
    core_input: str  # the integer core starts here: the graph input, or the first quantizer's output
    input_quant: object | None  # the node that quantizes the core input (None: annotated / precision / layout-only)
    pre: list = field(default_factory=list)  # host nodes before the core (empty: none)
    core_output: str = ""
    post: list = field(default_factory=list)  # host nodes after the core (empty: none)
    kinds: dict[str, Kind] = field(default_factory=dict)

    @property
    def host_pre(self) -> bool:
        return bool(self.pre)

    @property
    def host_post(self) -> bool:
        return bool(self.post)


def _consumers(model: onnx.ModelProto) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _input_region(model: onnx.ModelProto, gin: str, consts) -> tuple[list, object | None]:
    """Nodes from the graph input along its single-consumer chain up to the first quantizer (included),
    and that quantizer (None when an accumulator or a fork comes first)."""
    cons = _consumers(model)
    chain, cur = [], gin
    for _ in range(len(model.graph.node)):
        cs = cons.get(cur, [])
        if len(cs) != 1:
            return chain, None
        n = cs[0]
        if n.op_type in QUANTIZERS and n.input[0] == cur:
            return chain + [n], n
        if n.op_type in ACCUMULATORS or any(i and i != cur and i not in consts for i in n.input):
            return chain, None
        chain.append(n)
        cur = n.output[0]
    return chain, None


def _exact_input_quantizer(quant, consts: dict[str, np.ndarray]) -> bool:
    """Whether the graph input's quantizer maps real values on its grid one to one onto codes
    (a power-of-two scale): then the graph input itself is the core input. A float-scale quantizer or
    a MultiThreshold (float thresholds) is host pre-processing that makes the core's codes."""
    if quant.op_type == "MultiThreshold":
        return False
    if len(quant.input) < 2 or not quant.input[1]:
        return True
    return quant.input[1] in consts and is_po2(consts[quant.input[1]])


def partition(model: onnx.ModelProto, input_kind: Kind | None = None) -> Partition:
    """Cut ``model`` (cleaned: shapes inferred, constants folded) into host / core / host.

    ``input_kind``: the kind of the graph input when no quantizer defines it (an annotated or
    ``--input-precision`` grid: dyadic)."""
    g = model.graph
    consts = model_consts(model)
    gin = [i.name for i in g.input if i.name not in consts]
    if len(gin) != 1:
        raise UnsupportedError(f"graph has {len(gin)} inputs; exactly one is supported")
    gin = gin[0]
    region, quant = _input_region(model, gin, consts)
    float_pre = any(n.op_type not in LAYOUT_OPS for n in region if n is not quant) or (
        quant is not None and not _exact_input_quantizer(quant, consts))
    p = Partition(gin, gin, quant)
    if quant is not None and float_pre:
        p.pre, p.core_input = region, quant.output[0]
        start_kind = _node_kind(quant, [Kind(FLOAT)], consts, {})
    elif quant is None and float_pre:
        bad = next(n for n in region if n.op_type not in LAYOUT_OPS)
        raise UnsupportedError(f"node {bad.name!r} ({bad.op_type}): float pre-processing of the graph input without a "
                               "quantizer after it; the integer core needs quantized inputs")
    else:
        start_kind = input_kind or Kind(DYADIC)
    p.kinds = tensor_kinds(model, p.core_input, start_kind)
    outs = [o.name for o in g.output]
    if len(outs) != 1:
        raise UnsupportedError(f"graph has {len(outs)} outputs; exactly one is supported")
    p.core_output, p.post = _output_region(model, outs[0], p.kinds)
    return p


def _output_region(model: onnx.ModelProto, out: str, kinds: dict[str, Kind]) -> tuple[str, list]:
    """The float tail feeding the graph output (no quantizer in it) and the integer tensor it starts from."""
    if kinds.get(out, Kind(FLOAT)).kind != FLOAT:
        return out, []
    producer = {o: n for n in model.graph.node for o in n.output}
    post, frontier, seen = [], [out], set()
    starts: set[str] = set()
    while frontier:
        t = frontier.pop()
        if t in seen:
            continue
        seen.add(t)
        k = kinds.get(t)
        if k is None:  # a constant
            continue
        if k.kind != FLOAT:
            starts.add(t)
            continue
        n = producer[t]
        if n.op_type in QUANTIZERS:  # pragma: no cover - a quantizer's output is never float
            starts.add(t)
            continue
        post.append(n)
        frontier += [i for i in n.input if i]
    if len(starts) != 1:
        raise UnsupportedError(f"the float post-processing before graph output {out!r} reads {len(starts)} integer "
                               f"tensors ({sorted(starts)[:4]}); one is supported")
    index = {n.output[0]: k for k, n in enumerate(model.graph.node)}
    post.sort(key=lambda n: index[n.output[0]])
    return starts.pop(), post


# ---- input grids ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """An integer grid for a graph input: ``bits`` wide codes, real value = code * 2**scale_exp
    (``bipolar``: codes -1 / +1)."""

    bits: int
    signed: bool
    scale_exp: int
    bipolar: bool = False
    source: str = ""

    @property
    def code_min(self) -> int:
        if self.bipolar:
            return -1
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def code_max(self) -> int:
        if self.bipolar:
            return 1
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


def parse_precision(text: str) -> Grid:
    """hls4ml's precision syntax: ``fixed<W,I>``, ``ufixed<W,I>``, ``ap_fixed<W,I>``, ``ap_ufixed<W,I>``
    (W bits, I integer bits including the sign), ``int<W>``, ``uint<W>``, ``ap_int<W>``, ``ap_uint<W>``."""
    import re

    t = text.replace(" ", "").lower()
    m = re.fullmatch(r"(?:ap_)?(u?)fixed<(\d+),(-?\d+)(?:,[a-z_]+)*>", t)
    if m:
        w, i = int(m.group(2)), int(m.group(3))
        if w < 1:
            raise ValueError(f"precision {text!r}: width must be >= 1")
        return Grid(w, m.group(1) != "u", i - w, source=f"precision {text}")
    m = re.fullmatch(r"(?:ap_)?(u?)int<(\d+)>", t)
    if m:
        return Grid(int(m.group(2)), m.group(1) != "u", 0, source=f"precision {text}")
    raise ValueError(f"precision {text!r}: expected fixed<W,I>, ufixed<W,I>, ap_fixed<W,I>, int<W> (hls4ml syntax)")


def annotated_grid(model: onnx.ModelProto, tensor: str) -> Grid | None:
    """The grid a ``quantization_annotation`` (``finn_datatype``) gives a tensor: BIPOLAR, BINARY, INTn,
    UINTn, FIXED<W,I>, UFIXED<W,I>; None when absent or FLOAT32."""
    import re

    for a in model.graph.quantization_annotation:
        if a.tensor_name != tensor:
            continue
        for kv in a.quant_parameter_tensor_names:
            if kv.key != "finn_datatype":
                continue
            v = kv.value.upper()
            if v == "BIPOLAR":
                return Grid(1, True, 0, bipolar=True, source="finn_datatype BIPOLAR")
            if v == "BINARY":
                return Grid(1, False, 0, source="finn_datatype BINARY")
            if v == "TERNARY":
                return Grid(2, True, 0, source="finn_datatype TERNARY")
            m = re.fullmatch(r"(U?)INT(\d+)", v)
            if m:
                return Grid(int(m.group(2)), m.group(1) != "U", 0, source=f"finn_datatype {v}")
            m = re.fullmatch(r"(U?)FIXED<(\d+),(-?\d+)>", v)
            if m:
                w, i = int(m.group(2)), int(m.group(3))
                return Grid(w, m.group(1) != "U", i - w, source=f"finn_datatype {v}")
            if v.startswith("FLOAT"):
                return None
            raise UnsupportedError(f"graph input {tensor!r}: finn_datatype {kv.value!r} is not supported")
    return None


def grid_scale_exp(scale: float) -> int | None:
    """The exponent of a power-of-two scale, else None."""
    m, e = math.frexp(float(scale))
    return e - 1 if m == 0.5 else None
