"""Running a compiled golden model: integer codes, host pre-/post-processing, traces and bounds.

:class:`RunAPI` holds the run-time methods of :class:`codesign.golden.graph.GoldenModel` (compilation is
in ``graph.py``): the steps it compiled run in order on an environment of tensor name -> codes (int64 or
Python ints) or float32 values (float tensors); each step belongs to one stage, ``pre`` (host
pre-processing), ``core`` (the accelerator) or ``post`` (host post-processing).
"""

from __future__ import annotations

import contextlib

import numpy as np

from codesign.errors import CodesignError
from codesign.golden import ops as O
from codesign.golden.quant import exp_scalar

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


def bounds_obj(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(object)


class RunAPI:
    """The run-time half of :class:`codesign.golden.graph.GoldenModel`."""

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

    def trace_codes(self, x_codes) -> dict[str, tuple[np.ndarray, int | float | np.ndarray | None]]:
        """Like :meth:`run_codes`, from codes of the core input: ``{tensor name: (codes, scale)}`` of every
        integer tensor of the core (what per-layer debug taps of the RTL compare against)."""
        x = self._check_codes(np.asarray(x_codes)).astype(np.int64)
        env = self._exec(x)
        return {n: (v, self._scale_of(n)) for n, v in env.items()
                if n not in self._internal and n in self.tensors and not self.tensors[n].is_float}

    def real_value(self, codes: np.ndarray, name: str) -> np.ndarray:
        """The real values of tensor ``name`` from its integer ``codes`` (float32 for a float scale, as the
        reference computes them)."""
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
        y = env[o] if self.partition.host_post else self.real_value(env[o], o)
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
            return self.real_value(c, self.core_output)
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
            ib = [env[n] if c is None else (bounds_obj(c), bounds_obj(c)) for n, c in st.inputs]
            op = O.Op(st.fn, [], (), np.zeros(0), st.bounds)
            env[st.out] = self._bounds(op, ib)
        return {n: (int(np.min(lo_)), int(np.max(hi_)), self._scale_of(n)) for n, (lo_, hi_) in env.items()
                if n not in self._internal}


def to_real(codes: np.ndarray, exp: np.ndarray) -> np.ndarray:
    if codes.dtype == object:
        return np.vectorize(lambda c, e: float(c) * 2.0 ** int(e), otypes=[np.float64])(codes, exp)
    return codes.astype(np.float64) * np.ldexp(1.0, np.asarray(exp, dtype=np.int64))
