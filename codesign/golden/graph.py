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


@dataclass
class InputSpec:
    """The quantizer of the graph input (the Quant node that consumes it)."""

    name: str
    shape: tuple[int, ...]  # without batch
    bits: int
    signed: bool
    narrow: bool
    scale_exp: int | np.ndarray
    rounding: str
    code_min: int
    code_max: int
    quant_node: str

    def as_dict(self) -> dict:
        return {
            "name": self.name, "shape": list(self.shape), "bits": self.bits, "signed": self.signed,
            "narrow": self.narrow, "scale_exp": self.scale_exp if isinstance(self.scale_exp, int)
            else np.asarray(self.scale_exp).tolist(), "rounding": self.rounding,
            "code_min": self.code_min, "code_max": self.code_max, "quant_node": self.quant_node,
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
    """Exact integer execution of a QONNX model (raw Brevitas export or cleaned/channels-last).

    ``run(x_real)`` returns real outputs (float64, exactly ``codes * 2**scale_exp``);
    ``run_codes``/``trace`` expose the integer codes; ``ranges`` the integer bounds of every tensor.
    """

    def __init__(self, model: str | Path | onnx.ModelProto):
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
        self.model = proto
        self.opsets = {o.domain: int(o.version) for o in proto.opset_import}
        self._cur_node = None
        self._compile(proto.graph)

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
        self.tensors: dict[str, T] = {}
        for name, arr in inits.items():
            self.tensors[name] = T(name, tuple(arr.shape), raw=arr)
        self.steps: list[Step] = []
        self._internal: set[str] = set()
        nodes = _topo(graph, set(inits) | {gin.name})
        self.input_spec = self._find_input_spec(gin.name, tuple(shape), nodes)
        sp = self.input_spec
        full = (1, *shape)
        e_in = np.asarray(sp.scale_exp, dtype=np.int64)
        e_in = e_in.reshape((1,) * (len(full) - e_in.ndim) + e_in.shape)
        lo = np.full(full, sp.code_min, dtype=object)
        hi = np.full(full, sp.code_max, dtype=object)
        self.tensors[gin.name] = T(gin.name, full, compress_exp(e_in), dynamic=True, lo=lo, hi=hi)
        self._in_exp = compress_exp(e_in)
        self.producer: dict[str, tuple[str, str]] = {}
        for node in nodes:
            self._cur_node = node
            self._compile_node(node)
        self._cur_node = None
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
                                 spec.qmin - z, spec.qmax - z, n.name)
            if n.op_type in ("Transpose", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze"):
                cur, via_layout = n.output[0], True
                continue
            break
        raise UnsupportedError(
            f"graph input {name!r} is not quantized: no Quant node consumes it (directly or through "
            "Transpose/Reshape); the golden model needs the input grid"
        )

    def emit(self, op: O.Op | T, out: str, internal: bool = False) -> T:
        if isinstance(op, T):  # a folded static result
            op.name = out
            self.tensors[out] = op
            return op
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
                    peak >= INT64_SAFE, out_big, op.bounds, internal)
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
        elif dom in QONNX_DOMAINS or dom.endswith("custom_op.general"):
            kind = "qonnx"
        elif dom in CHANNELS_LAST_DOMAINS:
            kind = "cl"
        else:
            raise UnsupportedError(f"node {node.name!r} ({node.op_type}): unknown operator domain {dom!r}")
        handle(self, node, ins, _attrs(node), kind)

    # ------------------------------------------------------------------------------ run
    def _check_codes(self, x) -> np.ndarray:
        x = np.asarray(x)
        shp = self.input_spec.shape
        if x.shape[1:] != shp:
            raise CodesignError(
                f"input has shape {x.shape}, expected (batch, {', '.join(map(str, shp))}) for {self.input_name!r}"
            )
        return x

    def _exec(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        with _one_blas_thread():
            return self._exec_steps(codes)

    def _exec_steps(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        env = {self.input_name: codes}
        for st in self.steps:
            args = [env[n] if c is None else c for n, c in st.inputs]
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

    def codes_from_real(self, x_real) -> np.ndarray:
        """Integer input codes of real values that must lie on the input quantizer's grid."""
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

    def run_codes(self, x_codes) -> tuple[np.ndarray, int | np.ndarray]:
        """Integer codes in -> (output codes, output scale exponent) of the first graph output."""
        x = self._check_codes(np.asarray(x_codes))
        if x.dtype.kind not in "iu":
            if not np.all(np.asarray(x) == np.floor(x)):
                raise CodesignError("run_codes needs integer codes")
        x = x.astype(np.int64)
        sp = self.input_spec
        if x.size and (x.min() < sp.code_min or x.max() > sp.code_max):
            raise CodesignError(f"input codes outside {sp.code_min}..{sp.code_max}")
        env = self._exec(x)
        o = self.output_names[0]
        return env[o], self._exp_of(o)

    def run(self, x_real) -> np.ndarray:
        """Real outputs (float64) of the first graph output; the input must be on the input grid."""
        x = np.asarray(x_real, dtype=np.float64)
        single = x.ndim == len(self.input_spec.shape)
        if single:
            x = x[None]
        codes, e = self.run_codes(self.codes_from_real(x))
        y = to_real(codes, self.tensors[self.output_names[0]].exp)
        return y[0] if single else y

    def run_all(self, x_real) -> dict[str, np.ndarray]:
        """Real values of every graph output."""
        env = self._exec(self.codes_from_real(x_real))
        return {o: to_real(env[o], self.tensors[o].exp) for o in self.output_names}

    def trace(self, x_real) -> dict[str, tuple[np.ndarray, int | np.ndarray]]:
        """Codes and scale exponent of every tensor that depends on the input (graph tensor names)."""
        env = self._exec(self.codes_from_real(x_real))
        return {n: (v, self._exp_of(n)) for n, v in env.items() if n not in self._internal}

    def quantize_input(self, x_float) -> np.ndarray:
        """Snap float inputs to the input grid with the input Quant's rounding and clipping (real values)."""
        x = np.asarray(x_float, dtype=np.float64)
        single = x.ndim == len(self.input_spec.shape)
        if single:
            x = x[None]
        self._check_codes(x)
        sp = self.input_spec
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
    def constants(self) -> dict[str, tuple[np.ndarray, int | np.ndarray]]:
        """Codes and exponent of every quantized constant (e.g. weights after their Quant node)."""
        return {n: (t.codes, exp_scalar(t.exp)) for n, t in self.tensors.items()
                if not t.dynamic and t.codes is not None and t.raw is None and "::" not in n}

    def tensor_info(self, input_range=None) -> dict[str, dict]:
        """Per input-dependent tensor, in execution order: producing node and op, shape without batch,
        scale_exp, code bounds and the two's-complement width that holds them (for sizing registers)."""
        info = {self.input_name: None}
        for name, (lo, hi, e) in self.ranges(input_range).items():
            node, op = self.producer.get(name, ("", "input"))
            signed = lo < 0
            bits = max(hi.bit_length(), (-lo - 1).bit_length() if signed else 0) + (1 if signed else 0)
            info[name] = {"node": node, "op": op, "shape": list(self.tensors[name].shape[1:]),
                          "scale_exp": e if isinstance(e, int) else np.asarray(e).tolist(),
                          "min": lo, "max": hi, "bits": max(bits, 1), "signed": signed}
        return info

    def ranges(self, input_range=None) -> dict[str, tuple[int, int, int | np.ndarray]]:
        """Integer bounds (min_code, max_code, scale_exp) of every input-dependent tensor.

        ``input_range``: None (the whole input quantizer range) or ``(lo, hi)`` real values (scalars
        or arrays broadcastable to the input shape), snapped inwards to the grid.
        """
        sp = self.input_spec
        full = (1, *sp.shape)
        if input_range is None:
            lo = np.full(full, sp.code_min, dtype=object)
            hi = np.full(full, sp.code_max, dtype=object)
        else:
            rlo, rhi = (np.broadcast_to(np.asarray(v, dtype=np.float64), full) for v in input_range)
            clo = np.clip(np.ceil(np.ldexp(rlo, -self._in_exp)), sp.code_min, sp.code_max)
            chi = np.clip(np.floor(np.ldexp(rhi, -self._in_exp)), sp.code_min, sp.code_max)
            if np.any(clo > chi):
                raise CodesignError("input_range is empty on the input grid")
            lo, hi = clo.astype(np.int64).astype(object), chi.astype(np.int64).astype(object)
        env = {self.input_name: (lo, hi)}
        for st in self.steps:
            ib = [env[n] if c is None else (_bounds_obj(c), _bounds_obj(c)) for n, c in st.inputs]
            op = O.Op(st.fn, [], (), np.zeros(0), st.bounds)
            env[st.out] = self._bounds(op, ib)
        return {n: (int(np.min(lo_)), int(np.max(hi_)), self._exp_of(n)) for n, (lo_, hi_) in env.items()
                if n not in self._internal}


def to_real(codes: np.ndarray, exp: np.ndarray) -> np.ndarray:
    if codes.dtype == object:
        return np.vectorize(lambda c, e: float(c) * 2.0 ** int(e), otypes=[np.float64])(codes, exp)
    return codes.astype(np.float64) * np.ldexp(1.0, np.asarray(exp, dtype=np.int64))
