"""The golden model: compile a QONNX graph once into integer kernels, then run them on batches.

Compilation walks the graph in topological order. Every tensor gets a power-of-two exponent that
is fixed at compile time; constant sub-graphs (weight Quant, Transpose of weights, ...) are folded;
every node that depends on the graph input becomes a :class:`Step` whose kernel works on integer
codes only. A bound analysis (interval arithmetic, per element) runs at the same time and decides
per step whether int64 is safe or the step must run on Python ints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from codesign.errors import CodesignError, UnsupportedError
from codesign.golden import ops as O
from codesign.golden.ops import T
from codesign.golden.quant import INT64_SAFE, compress_exp, exp_scalar
from codesign.golden.runtime import RunAPI, bounds_obj

QONNX_DOMAINS = {"qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas", "qonnx", "finn"}
CHANNELS_LAST_DOMAINS = {"qonnx.custom_op.channels_last", "finn.custom_op.channels_last"}
STANDARD_DOMAINS = {"", "ai.onnx"}

SUPPORTED = (
    "MatMul, Gemm, Conv (1-D/2-D/3-D, stride, pads, dilation, groups), Add, Sub, Mul, Div (by powers of two), "
    "Relu, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, BatchNormalization (exactly foldable), "
    "Flatten, Reshape, Transpose, Concat, Squeeze, Unsqueeze, Identity, Dropout, Constant, Quant, "
    "BipolarQuant, Trunc"
)


@dataclass
class Step:
    fn: Callable[..., np.ndarray]
    inputs: list[tuple[str, np.ndarray | None]]  # (name, static codes or None)
    out: str
    big: bool  # run on Python ints
    out_big: bool  # result may not fit int64
    bounds: Callable | None
    internal: bool
    kind: str = "int"  # "int": integer codes out; "float": float32 values out (a reference kernel)
    stage: str = "core"  # "pre" (host pre-processing), "core" (the accelerator), "post" (host post-processing)
    fixed: tuple | None = None  # (lo, hi) code bounds that do not depend on the inputs (a quantizer of floats)


@dataclass
class InputSpec:
    """The core input: the integer codes the accelerator (RTL) takes.

    ``name`` is its ONNX tensor: the graph input, or, when host pre-processing precedes the core
    (``host_pre``), the output of the quantizer that ends it (``quant_node``). Real value = codes times
    ``2**scale_exp`` (power-of-two scale; an int, or an int array per channel) or times ``scale`` (a float,
    or float array, where ``scale_exp`` is None). ``bipolar``: codes -1/+1 (pack as 1-bit fields,
    bit = (code + 1) / 2). ``source``: where the grid comes from (a quantizer node, a ``finn_datatype``
    annotation, an ``--input-precision``)."""

    name: str
    shape: tuple[int, ...]  # without batch
    bits: int
    signed: bool
    narrow: bool
    scale_exp: int | np.ndarray | None
    rounding: str
    code_min: int
    code_max: int
    quant_node: str
    bipolar: bool = False
    scale: float | np.ndarray | None = None  # the float scale where it is not a power of two
    host_pre: bool = False
    graph_input: str = ""
    source: str = ""

    def as_dict(self) -> dict:
        def lst(v):
            return v if v is None or isinstance(v, int | float) else np.asarray(v).tolist()

        return {
            "name": self.name, "shape": list(self.shape), "bits": self.bits, "signed": self.signed,
            "narrow": self.narrow, "scale_exp": lst(self.scale_exp), "rounding": self.rounding,
            "code_min": self.code_min, "code_max": self.code_max, "quant_node": self.quant_node,
            "bipolar": self.bipolar, "scale": lst(self.scale), "host_pre": self.host_pre,
        }


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def _topo(graph, known: set[str]) -> list:
    nodes = list(graph.node)
    avail = set(known) | {""}
    order, pending = [], nodes
    while pending:
        nxt = []
        for n in pending:
            if all(i in avail for i in n.input):
                order.append(n)
                avail.update(n.output)
            else:
                nxt.append(n)
        if len(nxt) == len(pending):
            missing = sorted({i for n in nxt for i in n.input if i not in avail})
            raise UnsupportedError(f"graph has a cycle or undefined tensors: {missing[:5]}")
        pending = nxt
    return order


class GoldenModel(RunAPI):
    """Exact integer execution of a QONNX model (raw Brevitas export, cleaned/channels-last, or a real
    QONNX file made elsewhere).

    Exact mode (every graph the golden model ran before: a quantized graph input, every node exact on
    integers): ``run(x_real)`` returns real outputs (float64, exactly ``codes * 2**scale_exp``). Mixed mode
    (anything else: host pre-/post-processing, float-scale quantizers, float ops; see
    :mod:`codesign.golden.mixed`): the model is cleaned (:func:`codesign.graph.clean.clean_qonnx`, kept in
    ``self.model``), cut by :func:`codesign.graph.analysis.partition` (``self.partition``), and ``run``
    returns the graph output as ``execute_onnx`` gives it (float32 after host post-processing).
    ``run_codes``/``trace`` expose the integer codes of the core; ``ranges`` their integer bounds.

    ``input_precision``: the grid of a graph input that no quantizer defines (hls4ml syntax such as
    ``ap_fixed<16,6>``); a ``finn_datatype`` annotation of the input does the same. ``mixed=False``:
    exact mode only (a graph that needs float kernels raises :class:`UnsupportedError`, as before).
    """

    def __init__(self, model: str | Path | onnx.ModelProto, input_precision: str | None = None,
                 mixed: bool = True):
        if isinstance(model, onnx.ModelProto):
            proto = model
        else:
            p = Path(model)
            if not p.exists():
                raise CodesignError(f"model file {p} not found")
            try:
                proto = onnx.load(str(p))
            except Exception as e:  # noqa: BLE001 - any parse failure is a user error
                raise CodesignError(f"cannot read ONNX model {p}: {e}") from e
        self.input_precision = input_precision
        if input_precision is not None:
            self._precision_grid()  # a malformed precision is an error whatever the graph
        self.mixed = False
        self.partition = None
        self._setup(proto)
        try:
            self._compile(proto.graph)
        except UnsupportedError as exact_error:
            if not mixed:
                raise
            self._compile_mixed(proto, exact_error)

    def _setup(self, proto: onnx.ModelProto) -> None:
        self.model = proto
        self.opsets = {o.domain: int(o.version) for o in proto.opset_import}
        self._cur_node = None
        self._cur_stage = "core"

    def _precision_grid(self):
        from codesign.graph.analysis import parse_precision

        try:
            return parse_precision(self.input_precision)
        except ValueError as e:
            raise CodesignError(str(e)) from None

    def _input_grid(self, name: str):
        """The grid of a graph input without a quantizer: its ``finn_datatype`` annotation, else
        ``input_precision``, else None."""
        from codesign.graph.analysis import annotated_grid

        g = annotated_grid(self.model, name)
        if g is None and self.input_precision is not None:
            g = self._precision_grid()
        return g

    def _compile_mixed(self, proto: onnx.ModelProto, exact_error: UnsupportedError) -> None:
        """Mixed mode: clean, partition, compile every node (see :mod:`codesign.golden.mixed`)."""
        from codesign.graph.analysis import partition
        from codesign.graph.clean import clean_qonnx
        from codesign.graph.reference import elem_types

        try:
            cleaned = clean_qonnx(proto)
            part = partition(cleaned)
        except UnsupportedError:
            raise exact_error from None
        except Exception as e:  # noqa: BLE001 - qonnx cleanup failing on a graph is a user-facing problem
            raise UnsupportedError(f"{exact_error} (cleaning the graph for mixed mode failed too: "
                                   f"{str(e).splitlines()[0][:200]})") from None
        self._setup(cleaned)
        self.mixed, self.partition = True, part
        self.kinds = part.kinds
        self.opsets_full = {o.domain: int(o.version) for o in cleaned.opset_import}
        self.elem_types = elem_types(cleaned)
        self.used = {i for n in cleaned.graph.node for i in n.input} | {o.name for o in cleaned.graph.output}
        self.quant_info: dict[str, tuple] = {}
        # by output tensor: protobuf repeated-field elements need not keep their Python identity
        self._stage_of = {n.output[0]: "pre" for n in part.pre} | {n.output[0]: "post" for n in part.post}
        if not part.host_pre and part.input_quant is None and self._input_grid(part.graph_input) is None:
            raise UnsupportedError(
                f"graph input {part.graph_input!r} has no quantizer and no finn_datatype annotation: give its "
                "grid with --input-precision (input_precision=), e.g. ap_fixed<16,6>")
        self._compile(cleaned.graph)

    # ------------------------------------------------------------------------------ compile
    def _compile(self, graph) -> None:
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        real_inputs = [i for i in graph.input if i.name not in inits]
        if len(real_inputs) != 1:
            raise UnsupportedError(
                f"the golden model needs exactly one graph input, got {[i.name for i in real_inputs]}"
            )
        gin = real_inputs[0]
        dims = gin.type.tensor_type.shape.dim
        if len(dims) < 1:
            raise UnsupportedError(f"graph input {gin.name!r} has no shape")
        shape = []
        for k, d in enumerate(dims):
            if k == 0:
                continue
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise UnsupportedError(
                    f"graph input {gin.name!r} has a dynamic shape (dimension {k} is "
                    f"{d.dim_param or '?'!r}); only the batch dimension may be dynamic"
                )
            shape.append(int(d.dim_value))
        self.input_name = gin.name
        self.output_names = [o.name for o in graph.output]
        self.core_output = self.partition.core_output if self.mixed else self.output_names[0]
        self.tensors: dict[str, T] = {}
        for name, arr in inits.items():
            self.tensors[name] = T(name, tuple(arr.shape), raw=arr)
        self.steps: list[Step] = []
        self._internal: set[str] = set()
        nodes = _topo(graph, set(inits) | {gin.name})
        if self.mixed:
            from codesign.golden.mixed import float_constants

            self.fconst = float_constants(self.model, nodes, inits, {gin.name})
        self.producer: dict[str, tuple[str, str]] = {}
        if self.mixed and self.partition.host_pre:
            self.tensors[gin.name] = T(gin.name, (1, *shape), dynamic=True, is_float=True)
            self.input_spec = None
        else:
            self._input_tensor(gin.name, tuple(shape), nodes)
        for node in nodes:
            self._cur_node = node
            self._cur_stage = self._stage_of.get(node.output[0], "core") if self.mixed else "core"
            self._compile_node(node)
        self._cur_node, self._cur_stage = None, "core"
        if self.input_spec is None:
            self.input_spec = self._core_input_spec(gin.name)
        self._check_outputs()

    def _input_tensor(self, name: str, shape: tuple[int, ...], nodes) -> None:
        """The graph input as the core input: its spec (quantizer or grid) and code bounds."""
        self.input_spec = self._find_input_spec(name, shape, nodes)
        sp = self.input_spec
        full = (1, *shape)
        e_in = np.asarray(sp.scale_exp, dtype=np.int64)
        e_in = e_in.reshape((1,) * (len(full) - e_in.ndim) + e_in.shape)
        lo = np.full(full, sp.code_min, dtype=object)
        hi = np.full(full, sp.code_max, dtype=object)
        self.tensors[name] = T(name, full, compress_exp(e_in), dynamic=True, lo=lo, hi=hi, bipolar=sp.bipolar)
        self._in_exp = compress_exp(e_in)

    def _core_input_spec(self, gin: str) -> InputSpec:
        """Spec of the core input after host pre-processing: the quantizer that ends it."""
        from codesign.golden.fscale import compress_scale

        name = self.partition.core_input
        t = self.tensors[name]
        node, (bits, signed, narrow, rounding) = self.quant_info[name]
        se = exp_scalar(t.exp) if t.fscale is None else None
        sc = None
        if t.fscale is not None:
            f = compress_scale(t.fscale)
            sc = float(f.ravel()[0]) if f.size == 1 else f
        return InputSpec(name, tuple(t.shape[1:]), bits, signed, narrow, se, rounding, int(np.min(t.lo)),
                         int(np.max(t.hi)), node.name, bipolar=t.bipolar, scale=sc, host_pre=True, graph_input=gin,
                         source=f"{node.op_type} node {node.name!r} after host pre-processing")

    def _check_outputs(self) -> None:
        for o in self.output_names:
            t = self.tensors.get(o)
            if t is None:
                raise UnsupportedError(f"graph output {o!r} is not produced by any node")
            if not t.dynamic:
                raise UnsupportedError(f"graph output {o!r} does not depend on the input")
            if t.div != 1:
                raise UnsupportedError(f"graph output {o!r} is an AveragePool with a non-power-of-two window")

    def _find_input_spec(self, name: str, shape: tuple[int, ...], nodes) -> InputSpec:
        consumers: dict[str, list] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        cur, via_layout = name, False
        for _ in range(16):
            cs = consumers.get(cur, [])
            if len(cs) != 1:
                break
            n = cs[0]
            if n.op_type in ("Quant", "IntQuant", "BipolarQuant") and n.input[0] == cur:
                ins = [self.tensors.get(i) if i else None for i in n.input]
                ins[0] = T(cur, (1, *shape))
                spec = O.quant_spec(n, ins, _attrs(n), len(shape) + 1)
                se = compress_exp(spec.out_exp)
                if spec.zp_shift:
                    raise UnsupportedError(
                        f"node {n.name!r} (Quant): the input quantizer's zero point is not an integer"
                    )
                if np.any(spec.zp_num != spec.zp_num.ravel()[0]) or (via_layout and se.size > 1):
                    raise UnsupportedError(f"node {n.name!r}: per-channel input quantizer after a layout op")
                z = int(spec.zp_num.ravel()[0])
                return InputSpec(name, shape, spec.bits, spec.signed, spec.narrow, exp_scalar(se), spec.rounding,
                                 spec.qmin - z, spec.qmax - z, n.name, bipolar=spec.bipolar,
                                 source=f"{n.op_type} node {n.name!r}")
            if n.op_type in ("Transpose", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze"):
                cur, via_layout = n.output[0], True
                continue
            break
        g = self._input_grid(name)
        if g is not None:
            return InputSpec(name, shape, g.bits, g.signed, False, g.scale_exp, "FLOOR", g.code_min, g.code_max, "",
                             bipolar=g.bipolar, source=g.source)
        raise UnsupportedError(
            f"graph input {name!r} is not quantized: no Quant node consumes it (directly or through "
            "Transpose/Reshape) and it has no finn_datatype annotation; give its grid with --input-precision "
            "(input_precision=), e.g. ap_fixed<16,6>"
        )

    def emit(self, op: O.Op | T, out: str, internal: bool = False) -> T:
        if isinstance(op, T):  # a folded static result
            op.name = out
            self.tensors[out] = op
            return op
        t = self._emit_op(op, out, internal)
        t.fscale = op.fscale
        return t

    def _emit_op(self, op: O.Op, out: str, internal: bool) -> T:
        dyn = any(a.dynamic for a in op.args)
        for a in op.args:
            if a.codes is None and not a.dynamic:
                c, e = O.dyadic(a.raw, f"tensor {a.name!r}: ")
                a.codes, a.exp = c, np.full((1,) * len(a.shape), e, dtype=np.int64)
        if not dyn:
            ib = [(a.codes, a.codes) for a in op.args]
            big = op.peak is not None and op.peak(ib) >= INT64_SAFE
            args = [a.codes.astype(object) if big else a.codes for a in op.args]
            codes = O.to_compact(np.asarray(op.fn(*args)))
            t = T(out, tuple(codes.shape), compress_exp(op.exp), codes=codes, div=op.div)
            self.tensors[out] = t
            return t
        ib = [(a.lo, a.hi) if a.dynamic else (bounds_obj(a.codes), bounds_obj(a.codes)) for a in op.args]
        lo, hi = self._bounds(op, ib)
        peak = max([O.amax(x) for pair in ib for x in pair] + [O.amax(lo), O.amax(hi)])
        if op.peak is not None:
            peak = max(peak, op.peak(ib))
        if lo.shape[0] != 1:
            raise UnsupportedError(f"tensor {out!r}: a constant operand would change the batch dimension")
        out_big = max(O.amax(lo), O.amax(hi)) >= INT64_SAFE
        step = Step(op.fn, [(a.name, None if a.dynamic else a.codes) for a in op.args], out,
                    peak >= INT64_SAFE, out_big, op.bounds, internal, stage=self._cur_stage)
        self.steps.append(step)
        if self._cur_node is not None:
            self.producer[out] = (self._cur_node.name, self._cur_node.op_type)
        t = T(out, tuple(lo.shape), compress_exp(op.exp), dynamic=True, lo=lo, hi=hi, div=op.div)
        self.tensors[out] = t
        if internal:
            self._internal.add(out)
        return t

    @staticmethod
    def _bounds(op, ib):
        if op.bounds is not None:
            lo, hi = op.bounds(ib)
        else:
            lo = op.fn(*[bounds_obj(b[0]) for b in ib])
            hi = op.fn(*[bounds_obj(b[1]) for b in ib])
        return bounds_obj(lo), bounds_obj(hi)

    def _compile_node(self, node) -> None:
        from codesign.golden.handlers import handle

        ins = []
        for i in node.input:
            if not i:
                ins.append(None)
            elif i not in self.tensors:
                raise UnsupportedError(f"node {node.name!r} ({node.op_type}): input {i!r} is undefined")
            else:
                ins.append(self.tensors[i])
        dom = node.domain or ""
        if dom in STANDARD_DOMAINS:
            kind = "std"
        elif dom in QONNX_DOMAINS or dom.endswith("custom_op.general") or (self.mixed and dom.endswith(".general")):
            kind = "qonnx"
        elif dom in CHANNELS_LAST_DOMAINS:
            kind = "cl"
        else:
            raise UnsupportedError(f"node {node.name!r} ({node.op_type}): unknown operator domain {dom!r}")
        if self.mixed:
            from codesign.golden.mixed import handle_node

            handle_node(self, node, ins, _attrs(node), kind)
        else:
            handle(self, node, ins, _attrs(node), kind)

    def add_step(self, fn, inputs: list[str], out: str, t: T, kind: str, fixed: tuple | None = None) -> T:
        """Add a step that :mod:`codesign.golden.mixed` built (a reference float kernel, or a quantizer of
        floats whose code bounds ``fixed`` do not depend on its input)."""
        self.steps.append(Step(fn, [(i, None) for i in inputs], out, False, False, None, False, kind=kind,
                               stage=self._cur_stage, fixed=fixed))
        if self._cur_node is not None:
            self.producer[out] = (self._cur_node.name, self._cur_node.op_type)
        self.tensors[out] = t
        return t
