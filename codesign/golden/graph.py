"""The golden model: compile a QONNX graph once into integer kernels, then run them on batches.

Compilation walks the graph in topological order. Every tensor gets a power-of-two exponent that
is fixed at compile time; constant sub-graphs (weight Quant, Transpose of weights, ...) are folded;
every node that depends on the graph input becomes a :class:`Step` whose kernel works on integer
codes only. A bound analysis (interval arithmetic, per element) runs at the same time and decides
per step whether int64 is safe or the step must run on Python ints.
"""

from __future__ import annotations

import contextlib
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


_BLAS = None


def _one_blas_thread():
    """Run BLAS single-threaded: the matmuls here are small, and a multi-threaded OpenBLAS on a
    shared, loaded machine is 20-40x slower than one thread."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except ImportError:  # pragma: no cover
            _BLAS = False
    if _BLAS is False:
        return contextlib.nullcontext()
    return _BLAS.limit(limits=1, user_api="blas")


def _bounds_obj(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(object)


class GoldenModel:
    """Exact integer execution of a QONNX model (raw Brevitas export, cleaned/channels-last, or a real
    QONNX file made elsewhere).

    Exact mode (every graph the golden model ran before: a quantized graph input, every node exact on
    integers): ``run(x_real)`` returns real outputs (float64, exactly ``codes * 2**scale_exp``). Mixed mode
    (anything else: host pre-/post-processing, float-scale quantizers, float ops; see
    :mod:`codesign.golden.mixed`): the model is cleaned (:func:`codesign.graph.clean.clean_model`, kept in
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
        from codesign.graph.clean import clean_model
        from codesign.graph.reference import elem_types

        try:
            cleaned = clean_model(proto)
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
        self._stage_of = {id(n): "pre" for n in part.pre} | {id(n): "post" for n in part.post}
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
            self._cur_stage = self._stage_of.get(id(node), "core") if self.mixed else "core"
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
        ib = [(a.lo, a.hi) if a.dynamic else (_bounds_obj(a.codes), _bounds_obj(a.codes)) for a in op.args]
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
            lo = op.fn(*[_bounds_obj(b[0]) for b in ib])
            hi = op.fn(*[_bounds_obj(b[1]) for b in ib])
        return _bounds_obj(lo), _bounds_obj(hi)

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

    # ------------------------------------------------------------------------------ run
    def _check_codes(self, x) -> np.ndarray:
        x = np.asarray(x)
        shp = self.input_spec.shape
        if x.shape[1:] != shp:
            raise CodesignError(
                f"input has shape {x.shape}, expected (batch, {', '.join(map(str, shp))}) for "
                f"{self.input_spec.name!r}"
            )
        return x

    def _exec(self, codes: np.ndarray, stages: tuple[str, ...] = ("core",)) -> dict[str, np.ndarray]:
        with _one_blas_thread():
            return self._run_steps({self.input_spec.name: codes}, stages)

    def _run_steps(self, env: dict[str, np.ndarray], stages: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Run the steps of ``stages`` in order on ``env`` (tensor name -> codes or float32 values)."""
        for st in self.steps:
            if st.stage not in stages:
                continue
            args = [env[n] if c is None else c for n, c in st.inputs]
            if st.kind == "float":
                env[st.out] = st.fn(*args)
                continue
            if st.big:
                args = [np.asarray(a).astype(object) for a in args]
            out = np.asarray(st.fn(*args))
            if out.dtype == object and not st.out_big:
                out = out.astype(np.int64)
            elif out.dtype != object and out.dtype != np.int64:
                out = out.astype(np.int64)
            env[st.out] = out
        return env

    def _exp_of(self, name: str):
        return exp_scalar(self.tensors[name].exp)

    def _scale_of(self, name: str):
        """The scale of an integer tensor: its exponent (int or int array: real = codes * 2**exp) for a
        dyadic tensor, its float scale (float or float64 array: real = codes * scale) for an fscale one."""
        t = self.tensors[name]
        if t.fscale is None:
            return exp_scalar(t.exp)
        f = np.asarray(t.fscale)
        return float(f.ravel()[0]) if f.size and np.all(f == f.ravel()[0]) else f

    def codes_from_real(self, x_real) -> np.ndarray:
        """Integer input codes of real values that must lie on the input quantizer's grid."""
        if self.input_spec.host_pre:
            raise CodesignError("the graph input is float (host pre-processing makes the codes): use preprocess()")
        x = np.asarray(x_real, dtype=np.float64)
        x = self._check_codes(x)
        c = x * np.ldexp(1.0, -self._in_exp)  # exact: multiplication by a power of two
        sp = self.input_spec
        with np.errstate(invalid="ignore"):
            ci = c.astype(np.int64)  # inf/nan/huge give garbage that the comparison below rejects
        ok = bool(np.array_equal(ci, c)) and (not ci.size or (ci.min() >= sp.code_min and ci.max() <= sp.code_max))
        if ok and self.input_spec.bits == 1 and self.input_spec.signed:
            ok = not np.any(ci == 0)
        if not ok:
            bad = ~np.isfinite(c) | (c != np.floor(c)) | (c < sp.code_min) | (c > sp.code_max)
            if self.input_spec.bits == 1 and self.input_spec.signed:
                bad |= c == 0
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CodesignError(
                f"input value {x[idx]!r} at index {idx} is not on the input quantizer's grid "
                f"(codes {sp.code_min}..{sp.code_max} times 2**{sp.scale_exp}); use quantize_input() first"
            )
        return ci

    def run_codes(self, x_codes) -> tuple[np.ndarray, int | float | np.ndarray]:
        """Codes of the core input in -> (codes, scale) of the core output: what the accelerator's ports
        carry. The scale is an exponent (int or int array) for a dyadic output, a float (or float64 array)
        for an fscale one. In exact mode the core is the whole graph (its first output)."""
        x = self._check_codes(np.asarray(x_codes))
        if x.dtype.kind not in "iu":
            if not np.all(np.asarray(x) == np.floor(x)):
                raise CodesignError("run_codes needs integer codes")
        x = x.astype(np.int64)
        sp = self.input_spec
        if x.size and (x.min() < sp.code_min or x.max() > sp.code_max):
            raise CodesignError(f"input codes outside {sp.code_min}..{sp.code_max}")
        if sp.bipolar and x.size and np.any(x == 0):
            raise CodesignError("bipolar input codes must be -1 or +1")
        env = self._exec(x)
        o = self.core_output
        return env[o], self._scale_of(o)

    def _real_out(self, codes: np.ndarray, name: str) -> np.ndarray:
        t = self.tensors[name]
        if t.fscale is not None:
            from codesign.graph.reference import to_f32

            return to_f32(codes, t.fscale)
        return to_real(codes, t.exp)

    def _graph_env(self, x) -> tuple[dict[str, np.ndarray], bool]:
        """Run every stage on graph input ``x`` (one sample or a batch); (env, single)."""
        x = np.asarray(x)
        nd = len(self.tensors[self.input_name].shape) - 1
        single = x.ndim == nd
        if single:
            x = x[None]
        if self.input_spec.host_pre:
            want = self.tensors[self.input_name].shape[1:]
            if x.shape[1:] != want:
                raise CodesignError(f"input has shape {x.shape}, expected (batch, {', '.join(map(str, want))})")
            env = {self.input_name: x.astype(np.float32)}
        else:
            env = {self.input_name: self.codes_from_real(np.asarray(x, dtype=np.float64))}
        with _one_blas_thread():
            return self._run_steps(env, ("pre", "core", "post")), single

    def run(self, x_real) -> np.ndarray:
        """The first graph output. Exact mode: real values (float64), the input on the input grid. Mixed
        mode: the graph output as ``execute_onnx`` gives it: float32 after host post-processing (or the
        core output's exact reals when there is none: float64 for a dyadic output, ``to_f32`` for an fscale
        one); the input is float (host pre-processing) or on the input grid."""
        if not self.mixed:
            x = np.asarray(x_real, dtype=np.float64)
            single = x.ndim == len(self.input_spec.shape)
            if single:
                x = x[None]
            codes, e = self.run_codes(self.codes_from_real(x))
            y = to_real(codes, self.tensors[self.output_names[0]].exp)
            return y[0] if single else y
        env, single = self._graph_env(x_real)
        o = self.output_names[0]
        y = env[o] if self.partition.host_post else self._real_out(env[o], o)
        return y[0] if single else y

    def preprocess(self, x_float) -> np.ndarray:
        """Host pre-processing only: float graph inputs -> codes of the core input (what the host sends to
        the accelerator). Without host pre-processing: the codes of ``quantize_input(x_float)``."""
        x = np.asarray(x_float)
        if not self.input_spec.host_pre:
            return self.codes_from_real(self.quantize_input(x))
        env = {self.input_name: x.astype(np.float32)}
        with _one_blas_thread():
            return self._run_steps(env, ("pre",))[self.input_spec.name]

    def postprocess(self, codes) -> np.ndarray:
        """Host post-processing only: core output codes (as ``run_codes`` returns them) -> the graph output
        (float32 after host post-processing; the exact reals when there is none, as ``run``)."""
        c = np.asarray(codes)
        if not (self.mixed and self.partition.host_post):
            return self._real_out(c, self.core_output)
        env = self._run_steps({self.core_output: c}, ("post",))
        return env[self.output_names[0]]

    def run_all(self, x_real) -> dict[str, np.ndarray]:
        """Real values of every graph output (mixed mode: the one output, as ``run``)."""
        if self.mixed:
            return {self.output_names[0]: self.run(x_real)}
        env = self._exec(self.codes_from_real(x_real))
        return {o: to_real(env[o], self.tensors[o].exp) for o in self.output_names}

    def trace(self, x_real, floats: bool = False) -> dict[str, tuple[np.ndarray, int | float | np.ndarray | None]]:
        """``{tensor name: (codes, scale)}`` for every integer tensor that depends on the input (scale as in
        :meth:`run_codes`; :meth:`tensor_info` says which are bipolar). Float tensors (host pre-/post-
        processing, float epilogues) are left out, or with ``floats=True`` given as ``(float32 values,
        None)``."""
        if self.mixed:
            env, _ = self._graph_env(x_real)
        else:
            env = self._exec(self.codes_from_real(x_real))
        out = {}
        for n, v in env.items():
            if n in self._internal:
                continue
            if self.tensors[n].is_float:
                if floats:
                    out[n] = (v, None)
                continue
            out[n] = (v, self._scale_of(n))
        return out

    def quantize_input(self, x_float) -> np.ndarray:
        """Snap float inputs to the input grid (real values). With an input quantizer: its rounding and
        clipping. With a grid from ``input_precision`` or a ``finn_datatype`` annotation: floor (truncation,
        hls4ml's ``ap_fixed`` default, AP_TRN) and saturation to the grid's range; bipolar: +1 where
        x >= 0, else -1. With host pre-processing the graph input is float: the float32 values."""
        if self.input_spec.host_pre:
            return np.asarray(x_float, dtype=np.float32)
        x = np.asarray(x_float, dtype=np.float64)
        single = x.ndim == len(self.input_spec.shape)
        if single:
            x = x[None]
        self._check_codes(x)
        sp = self.input_spec
        if not sp.quant_node:
            if sp.bipolar:
                codes = np.where(x >= 0, 1.0, -1.0)
            else:
                codes = np.clip(np.floor(np.ldexp(x, -self._in_exp)), sp.code_min, sp.code_max)
            y = np.ldexp(codes, self._in_exp)
            return y[0] if single else y
        spec = O.QuantSpec(np.asarray(self._in_exp), np.zeros_like(self._in_exp), 0, sp.bits, sp.signed,
                           sp.narrow, sp.rounding, sp.bits == 1 and sp.signed)
        z = -sp.code_min + O.min_int(sp.signed, sp.narrow, sp.bits) if not spec.bipolar else 0
        spec.zp_num = np.full_like(self._in_exp, z)
        codes = O.quant_float(x, spec)
        if codes is None:
            c, e = O.dyadic(x, "input: ")
            codes = O.quant_codes(c, np.full((1,) * x.ndim, e), spec)
        y = np.ldexp(np.asarray(codes, dtype=np.float64), self._in_exp)
        return y[0] if single else y

    @property
    def constants(self) -> dict[str, tuple[np.ndarray, int | float | np.ndarray]]:
        """Codes and scale (exponent, or float scale for fscale) of every quantized constant (e.g. weights
        after their Quant node)."""
        return {n: (t.codes, self._scale_of(n)) for n, t in self.tensors.items()
                if not t.dynamic and t.codes is not None and t.raw is None and "::" not in n}

    def tensor_info(self, input_range=None) -> dict[str, dict]:
        """Per integer core tensor, in execution order: producing node and op, shape without batch,
        scale_exp (None for fscale tensors, whose float ``scale`` is given), code bounds and the two's-
        complement width that holds them (for sizing registers), ``bipolar`` (codes -1/+1: one bit each)."""
        info = {self.input_spec.name: None}
        for name, (lo, hi, e) in self.ranges(input_range).items():
            node, op = self.producer.get(name, ("", "input"))
            signed = lo < 0
            bits = max(hi.bit_length(), (-lo - 1).bit_length() if signed else 0) + (1 if signed else 0)
            t = self.tensors[name]
            fs = t.fscale is not None
            info[name] = {"node": node, "op": op, "shape": list(t.shape[1:]),
                          "scale_exp": None if fs else e if isinstance(e, int) else np.asarray(e).tolist(),
                          "min": lo, "max": hi, "bits": max(bits, 1), "signed": signed, "bipolar": t.bipolar,
                          "kind": "fscale" if fs else "dyadic"}
            if fs:
                info[name]["scale"] = e if isinstance(e, float) else np.asarray(e).tolist()
        return info

    def ranges(self, input_range=None) -> dict[str, tuple[int, int, int | float | np.ndarray]]:
        """Integer bounds (min_code, max_code, scale) of every integer core tensor (scale as in
        :meth:`run_codes`).

        ``input_range``: None (the whole input quantizer range) or ``(lo, hi)`` real values (scalars
        or arrays broadcastable to the input shape), snapped inwards to the grid.
        """
        sp = self.input_spec
        full = (1, *sp.shape)
        if input_range is None:
            lo = np.full(full, sp.code_min, dtype=object)
            hi = np.full(full, sp.code_max, dtype=object)
        else:
            if sp.scale_exp is None or sp.host_pre:
                raise CodesignError("input_range needs a power-of-two input grid without host pre-processing")
            rlo, rhi = (np.broadcast_to(np.asarray(v, dtype=np.float64), full) for v in input_range)
            clo = np.clip(np.ceil(np.ldexp(rlo, -self._in_exp)), sp.code_min, sp.code_max)
            chi = np.clip(np.floor(np.ldexp(rhi, -self._in_exp)), sp.code_min, sp.code_max)
            if np.any(clo > chi):
                raise CodesignError("input_range is empty on the input grid")
            lo, hi = clo.astype(np.int64).astype(object), chi.astype(np.int64).astype(object)
        env = {sp.name: (lo, hi)}
        for st in self.steps:
            if st.stage != "core" or st.kind == "float":
                continue
            if st.fixed is not None:
                env[st.out] = st.fixed
                continue
            ib = [env[n] if c is None else (_bounds_obj(c), _bounds_obj(c)) for n, c in st.inputs]
            op = O.Op(st.fn, [], (), np.zeros(0), st.bounds)
            env[st.out] = self._bounds(op, ib)
        return {n: (int(np.min(lo_)), int(np.max(hi_)), self._scale_of(n)) for n, (lo_, hi_) in env.items()
                if n not in self._internal}


def to_real(codes: np.ndarray, exp: np.ndarray) -> np.ndarray:
    if codes.dtype == object:
        return np.vectorize(lambda c, e: float(c) * 2.0 ** int(e), otypes=[np.float64])(codes, exp)
    return codes.astype(np.float64) * np.ldexp(1.0, np.asarray(exp, dtype=np.int64))
