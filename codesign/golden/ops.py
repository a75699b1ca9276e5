"""Operator handlers of the golden model.

A handler receives the compile context, the ONNX node, its input tensors (:class:`T`) and its
attributes, and emits one or more :class:`Op` s through ``ctx.emit``. An ``Op`` carries a batch-
vectorized kernel ``fn(*codes) -> codes`` on integer arrays (``int64``, or ``object`` arrays of Python
ints when the bound analysis says int64 could overflow), the output exponent (fixed at compile
time), and an interval function for the bound analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from codesign.errors import UnsupportedError
from codesign.golden.quant import (
    INT64_SAFE,
    _adjust,
    canonical_rounding,
    compress_exp,
    dyadic,
    max_int,
    min_int,
    po2_exponent,
    round_shift,
)

FLOAT_EXACT = 2**53


@dataclass
class T:
    """A tensor known at compile time: its shape and exponent, and its codes when static.

    Dynamic tensors carry the batch as their first axis (``shape[0] == 1`` at compile time) and
    per-element code bounds ``lo``/``hi`` (shape ``(1, ...)``). ``exp`` is an int64 array with
    ``ndim == len(shape)`` broadcastable to the tensor (size-1 axes where the exponent is uniform).
    ``raw`` holds an unquantized static value (float weights, shape vectors). ``div`` != 1 marks a
    window sum still to be divided by a non-power-of-two count (AveragePool before Trunc).
    """

    name: str
    shape: tuple[int, ...]
    exp: np.ndarray | None = None
    dynamic: bool = False
    codes: np.ndarray | None = None
    raw: np.ndarray | None = None
    div: int = 1
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    fscale: np.ndarray | None = None  # fscale tensors: codes * fscale (float64, broadcastable; exp is 0)
    is_float: bool = False  # a float32 tensor (no codes): the reference's float kernels compute it
    bipolar: bool = False  # codes -1 / +1 only


@dataclass
class Op:
    fn: Callable[..., np.ndarray]
    args: list[T]
    shape: tuple[int, ...]
    exp: np.ndarray
    bounds: Callable[[list[tuple[np.ndarray, np.ndarray]]], tuple[np.ndarray, np.ndarray]] | None = None
    peak: Callable[[list[tuple[np.ndarray, np.ndarray]]], int] | None = None
    div: int = 1
    fscale: np.ndarray | None = None  # float scale of the result (fscale tensors)


def amax(a) -> int:
    a = np.asarray(a)
    if a.size == 0:
        return 0
    return int(max(abs(int(np.max(a))), abs(int(np.min(a)))))


def _fits(a) -> bool:
    return amax(a) < INT64_SAFE


def to_compact(a: np.ndarray) -> np.ndarray:
    """int64 when every value fits comfortably, else object."""
    a = np.asarray(a)
    if a.dtype == object:
        return a.astype(np.int64) if _fits(a) else a
    return a.astype(np.int64, copy=False)


def lshift(a, s):
    """a * 2**s for s >= 0 (array or int), skipping the work when s is all zero."""
    s = np.asarray(s)
    if not np.any(s):
        return a
    if isinstance(a, np.ndarray) and a.dtype == object:
        return a << s.astype(object)
    return a << s


def exact_matmul(a: np.ndarray, b: np.ndarray, bound: int | None = None) -> np.ndarray:
    """Exact integer a @ b: float32/float64 BLAS when every partial sum is provably below 2**24/2**53,
    else int64, else Python ints. ``bound`` (>= max|a| * max|b| * K) comes from the compile-time
    bound analysis; without it the magnitudes are measured."""
    if bound is None:
        k = a.shape[-1] if a.ndim else 1
        bound = amax(a) * amax(b) * max(k, 1)
    if bound < 2**24:  # float32 sums of integers below 2**24 are exact
        return np.matmul(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)).astype(np.int64)
    if bound < FLOAT_EXACT:
        return np.matmul(a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)).astype(np.int64)
    if bound < INT64_SAFE:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    return np.matmul(a.astype(object), b.astype(object))


def split_sign(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    zero = np.zeros_like(w)
    return np.maximum(w, zero), np.minimum(w, zero)


def broadcast_exp(e: np.ndarray, ndim: int) -> np.ndarray:
    e = np.asarray(e, dtype=np.int64)
    return e.reshape((1,) * (ndim - e.ndim) + e.shape)


def num(t: T) -> T:
    """Give a raw static tensor (float initializer) exact codes/exponent (in place) and return it."""
    if not t.dynamic and t.codes is None:
        c, e = dyadic(t.raw, f"tensor {t.name!r}: ")
        t.codes, t.exp = c, np.full((1,) * len(t.shape), e, dtype=np.int64)
    return t


def err(node, msg: str) -> UnsupportedError:
    return UnsupportedError(f"node {node.name or '?'!r} ({node.op_type}): {msg}")


# ---------------------------------------------------------------------------------------------
# elementwise


def add_op(a: T, b: T, sign: int = 1) -> Op:
    a, b = num(a), num(b)
    ea, eb = broadcast_exp(a.exp, len(a.shape)), broadcast_exp(b.exp, len(b.shape))
    eo = np.minimum(ea, eb)
    shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    # shifts must broadcast against each operand's own shape
    sa_k = _reduce_to(ea - eo, a.shape)
    sb_k = _reduce_to(eb - eo, b.shape)

    def fn(x, y):
        x = lshift(x, sa_k)
        y = lshift(y, sb_k)
        return x + y if sign > 0 else x - y

    def bounds(ib):
        (la, ha), (lb, hb) = ib
        if sign > 0:
            return fn(la, lb), fn(ha, hb)
        return fn(la, hb), fn(ha, lb)

    def peak(ib):
        (la, ha), (lb, hb) = ib
        return (max(amax(la), amax(ha)) << int(np.max(sa_k))) + (max(amax(lb), amax(hb)) << int(np.max(sb_k)))

    return Op(fn, [a, b], shape, compress_exp(eo), bounds, peak)


def _reduce_to(e: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Shift array ``e`` (broadcast of several operands) reduced so it broadcasts against ``shape``
    without enlarging it: axes where shape is 1 (or missing) must be constant."""
    e = np.asarray(e, dtype=np.int64)
    nd = len(shape)
    lead = e.ndim - nd
    for _ax in range(lead):
        if not np.all(e == np.take(e, [0], axis=0)):
            raise UnsupportedError("exponent varies along a broadcast axis")
        e = np.take(e, 0, axis=0)
    for ax in range(nd):
        if shape[ax] == 1 and e.shape[ax] > 1:
            first = np.take(e, [0], axis=ax)
            if not np.all(e == first):
                raise UnsupportedError("exponent varies along a broadcast axis")
            e = first
    return compress_exp(e)


def mul_op(a: T, b: T) -> Op:
    a, b = num(a), num(b)
    ea, eb = broadcast_exp(a.exp, len(a.shape)), broadcast_exp(b.exp, len(b.shape))
    shape = tuple(np.broadcast_shapes(a.shape, b.shape))

    def fn(x, y):
        return x * y

    def bounds(ib):
        (la, ha), (lb, hb) = ib
        c = [la * lb, la * hb, ha * lb, ha * hb]
        lo = c[0]
        hi = c[0]
        for v in c[1:]:
            lo = np.minimum(lo, v)
            hi = np.maximum(hi, v)
        return lo, hi

    def peak(ib):
        (la, ha), (lb, hb) = ib
        return max(amax(la), amax(ha)) * max(amax(lb), amax(hb))

    return Op(fn, [a, b], shape, compress_exp(ea + eb), bounds, peak)


def relu_op(a: T) -> Op:
    a = num(a)
    return Op(lambda x: np.maximum(x, 0), [a], a.shape, a.exp)


# ---------------------------------------------------------------------------------------------
# Quant / BipolarQuant / Trunc


def _static_param(node, t: T | None, what: str) -> np.ndarray:
    if t is None:
        raise err(node, f"missing {what} input")
    if t.dynamic:
        raise err(node, f"{what} must be a constant (initializer), got a computed tensor {t.name!r}")
    if t.raw is not None:
        return np.asarray(t.raw, dtype=np.float64)
    # a quantized constant used as a parameter: real value
    return np.ldexp(t.codes.astype(np.float64), t.exp)


@dataclass
class QuantSpec:
    """Parameters of one Quant node (exponents broadcast to the quantized tensor's ndim)."""

    scale_exp: np.ndarray
    zp_num: np.ndarray  # zero point = zp_num * 2**-zp_shift (integer arrays)
    zp_shift: int
    bits: int
    signed: bool
    narrow: bool
    rounding: str
    bipolar: bool

    @property
    def qmin(self) -> int:
        return -1 if self.bipolar else min_int(self.signed, self.narrow, self.bits)

    @property
    def qmax(self) -> int:
        return 1 if self.bipolar else max_int(self.signed, self.narrow, self.bits)

    @property
    def out_exp(self) -> np.ndarray:
        return compress_exp(self.scale_exp - self.zp_shift)


def quant_spec(node, ins: list[T | None], attrs: dict, ndim: int) -> QuantSpec:
    where = f"node {node.name or '?'!r} ({node.op_type}): "
    if node.op_type == "BipolarQuant":
        scale = _static_param(node, ins[1] if len(ins) > 1 else None, "scale")
        se = po2_exponent(scale, where)
        if se.ndim > ndim:
            raise err(node, f"scale shape {se.shape} does not broadcast to the input")
        return QuantSpec(broadcast_exp(se, ndim), np.zeros((1,) * ndim, np.int64), 0, 1, True, False,
                         "ROUND", True)
    if len(ins) < 4:
        raise err(node, "Quant needs 4 inputs (x, scale, zero_point, bit_width)")
    scale = _static_param(node, ins[1], "scale")
    zp = _static_param(node, ins[2], "zero_point")
    bw = _static_param(node, ins[3], "bit_width")
    se = po2_exponent(scale, where)
    if se.ndim > ndim or zp.ndim > ndim:
        raise err(node, "scale/zero_point has more dimensions than the quantized tensor")
    if bw.size != 1 or float(bw.ravel()[0]) != int(bw.ravel()[0]) or int(bw.ravel()[0]) < 1:
        raise err(node, f"bit_width must be one integer >= 1, got {bw.ravel()[:4].tolist()}")
    bits = int(bw.ravel()[0])
    if bits > 60:
        raise err(node, f"bit_width {bits} > 60 is not supported")
    zc, ze = dyadic(zp, where)
    if ze >= 0:
        zn, zsh = lshift(zc, ze), 0
    else:
        zn, zsh = zc, -ze
        if zsh > 60:
            raise err(node, f"zero_point {zp.ravel()[:4].tolist()} cannot be represented exactly")
    if zn.dtype == object or amax(zn) > 2**62 >> zsh:
        raise err(node, f"zero_point {zp.ravel()[:4].tolist()} is out of range")
    signed = bool(attrs.get("signed", 1))
    narrow = bool(attrs.get("narrow", 1))
    rounding = canonical_rounding(attrs.get("rounding_mode", "ROUND"), where)
    return QuantSpec(broadcast_exp(se, ndim), broadcast_exp(np.asarray(zn, np.int64), ndim), zsh, bits,
                     signed, narrow, rounding, bits == 1 and signed)


def clip_codes(y, lo: int, hi: int):
    if isinstance(y, np.ndarray) and y.dtype == np.int64:
        if y.base is None and y.flags.writeable:
            return np.clip(y, lo, hi, out=y)
        return np.clip(y, lo, hi)
    return np.minimum(np.maximum(y, lo), hi)


def quant_codes(q, e_in: np.ndarray, sp: QuantSpec, clip: bool = True):
    """Exact Quant of integer codes ``q`` at exponent ``e_in``: returns output codes at sp.out_exp.
    ``clip=False`` only where the bound analysis proved the clamp cannot act."""
    d = e_in - sp.scale_exp  # q * 2**d is x/scale
    j = sp.zp_shift
    m = np.maximum(np.maximum(0, -d), j)
    t = lshift(q, m + d)
    if np.any(sp.zp_num):
        t = t + lshift(sp.zp_num, m - j)
    if sp.bipolar:
        one = np.ones_like(t)
        y = np.where(t >= 0, one, -one)
    else:
        y = round_shift(t, m, sp.rounding)
        if clip:
            y = clip_codes(y if y is not q else y.copy(), sp.qmin, sp.qmax)
    y = lshift(y, np.full(1, j))
    if np.any(sp.zp_num):
        y = y - sp.zp_num
    if isinstance(y, np.ndarray) and y.dtype == object and _fits(y):
        y = y.astype(np.int64)
    return y


def quant_float(x: np.ndarray, sp: QuantSpec) -> np.ndarray | None:
    """Exact Quant of float values (weights, user inputs) as integer codes at sp.out_exp, without
    going through a common exponent; ``None`` if float64 cannot do it exactly (caller falls back)."""
    x = np.asarray(x, dtype=np.float64)
    if sp.zp_shift or not np.all(np.isfinite(x)):
        return None
    s = sp.scale_exp
    v = np.ldexp(x, -s)
    if not np.all(np.ldexp(v, s) == x):  # over/underflow
        return None
    f = np.floor(v)
    r = v - f
    z = sp.zp_num.astype(np.float64)
    big = float(2**61)
    F = np.clip(f, -big, big) + z
    if sp.bipolar:
        y = np.where(F >= 0, 1.0, -1.0)
    else:
        neg = F < 0
        pos = (F > 0) | ((F == 0) & (r > 0))
        y = _adjust(F, r, 0.5, neg, pos, sp.rounding)
        y = np.clip(y, sp.qmin, sp.qmax)
    y = y - z
    return y.astype(np.int64)


def quant_op(node, ins: list[T | None], attrs: dict) -> Op | T:
    x = ins[0]
    nd = len(x.shape)
    sp = quant_spec(node, ins, attrs, nd)
    if x.div != 1:
        raise err(node, "input is an AveragePool with a non-power-of-two window: only Trunc may follow it")
    out_exp = broadcast_exp(sp.out_exp, nd)
    if not x.dynamic and x.raw is not None:
        codes = quant_float(x.raw, sp)
        if codes is None:
            c, e = dyadic(x.raw, f"node {node.name!r}: ")
            codes = quant_codes(c, np.full((1,) * nd, e), sp)
        shape = tuple(np.broadcast_shapes(x.shape, out_exp.shape))
        return T("", shape, compress_exp(out_exp), codes=np.broadcast_to(codes, shape).copy())
    e_in = broadcast_exp(x.exp, nd)
    d = e_in - sp.scale_exp
    m = np.maximum(np.maximum(0, -d), sp.zp_shift)
    clip = True
    if x.dynamic and x.lo is not None and not sp.bipolar and sp.zp_shift == 0:
        # the clamp is a no-op if the unclamped result of the whole input range already fits
        ylo = quant_codes(x.lo, e_in, sp, clip=False)
        yhi = quant_codes(x.hi, e_in, sp, clip=False)
        clip = not (np.all(ylo + sp.zp_num >= sp.qmin) and np.all(yhi + sp.zp_num <= sp.qmax))
    if not clip and not np.any(sp.zp_num) and not np.any(d) and sp.zp_shift == 0:
        return Op(lambda q: q, [x], x.shape, compress_exp(broadcast_exp(sp.out_exp, nd)))

    def fn(q):
        return quant_codes(q, e_in, sp, clip)

    def peak(ib):
        (lo, hi), = ib
        return (max(amax(lo), amax(hi)) << int(np.max(m + d))) + (amax(sp.zp_num) << int(np.max(m))) + 2

    shape = tuple(np.broadcast_shapes(x.shape, out_exp.shape))
    return Op(fn, [x], shape, compress_exp(out_exp), None, peak)


def trunc_op(node, ins: list[T | None], attrs: dict, v2: bool) -> Op:
    x = ins[0]
    where = f"node {node.name or '?'!r} (Trunc): "
    if not x.dynamic and x.codes is None:
        x_codes, xe = dyadic(x.raw, where)
        x = T(x.name, x.shape, np.full((1,) * len(x.shape), xe), codes=x_codes)
    scale = _static_param(node, ins[1], "scale")
    zp = _static_param(node, ins[2], "zero_point")
    if np.any(zp != 0):
        raise err(node, "non-zero zero_point is not supported for Trunc")
    if scale.size != 1:
        raise err(node, "per-channel Trunc scale is not supported")
    rounding = canonical_rounding(attrs.get("rounding_mode", "FLOOR"), where)
    e_in = broadcast_exp(x.exp, len(x.shape))
    if np.any(e_in != e_in.ravel()[0]):
        raise err(node, "per-channel input exponents are not supported for Trunc")
    ein = int(e_in.ravel()[0])
    # x / scale = codes * R,  R = 2**ein / (div * scale)
    sc = Fraction(float(scale.ravel()[0]))
    R = Fraction(2) ** ein / (x.div * sc)
    if v2:
        out_scale = _static_param(node, ins[4], "output_scale")
        out_bw = _static_param(node, ins[5], "output_bit_width")
        t_pow = int(np.round(np.log2(float(out_scale.ravel()[0]) / float(scale.ravel()[0]))))
        out_exp = int(po2_exponent(out_scale, where).ravel()[0])
        bits = int(out_bw.ravel()[0])
        signed = bool(attrs.get("signed", 1))
        narrow = bool(attrs.get("narrow", 0))
        qmin, qmax = min_int(signed, narrow, bits), max_int(signed, narrow, bits)
    else:
        in_bw = _static_param(node, ins[3], "input_bit_width")
        out_bw = _static_param(node, ins[4], "output_bit_width")
        t_pow = int(in_bw.ravel()[0]) - int(out_bw.ravel()[0])
        out_exp = int(po2_exponent(scale, where).ravel()[0])
        qmin = qmax = None
    # R must be dyadic, or so close to an integer power of two P >= 1 that round(q*R) == q*P for
    # every reachable q (checked against the bounds in `check`).
    num, den = R.numerator, R.denominator
    exact = den & (den - 1) == 0
    if exact:
        r_num, r_sh = num, den.bit_length() - 1
        tol = None
    else:
        p = round(math.log2(R))
        if p < 0:
            raise err(node, f"input scale / Trunc scale = {float(R)!r} is not a power of two")
        r_num, r_sh = 2**p, 0
        tol = abs(R / r_num - 1)

    def fn(q):
        y0 = round_shift(q * r_num if r_num != 1 else q, r_sh, "ROUND")
        if t_pow >= 0:
            y = round_shift(y0, t_pow, rounding)
        else:
            y = lshift(y0, -t_pow)
        if qmin is not None:
            y = np.minimum(np.maximum(y, qmin), qmax)
        return y

    def peak(ib):
        (lo, hi), = ib
        m = max(amax(lo), amax(hi))
        if tol is not None and m * r_num * tol >= Fraction(1, 2):
            raise err(node, f"Trunc scale is not exactly input scale / {x.div}: rounding is not exact")
        return m * r_num << max(0, -t_pow)

    return Op(fn, [x], x.shape, np.full((1,) * len(x.shape), out_exp), None, peak)


# ---------------------------------------------------------------------------------------------
# MatMul / Gemm


def matmul_op(node, a: T, b: T) -> Op:
    a, b = num(a), num(b)
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise err(node, "MatMul operands must have at least 2 dimensions")
    ea, eb = broadcast_exp(a.exp, len(a.shape)), broadcast_exp(b.exp, len(b.shape))
    ea_min = ea.min(axis=-1, keepdims=True)
    eb_min = eb.min(axis=-2, keepdims=True)
    sa, sb = compress_exp(ea - ea_min), compress_exp(eb - eb_min)
    out_exp = compress_exp(ea_min + eb_min)
    shape = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])) + (a.shape[-2], b.shape[-1])
    if a.shape[-1] != b.shape[-2]:
        raise err(node, f"shapes {a.shape} and {b.shape} do not match")

    static_bound = None
    if a.dynamic and a.lo is not None and not b.dynamic:
        static_bound = (max(amax(a.lo), amax(a.hi)) << int(np.max(sa))) * (amax(b.codes) << int(np.max(sb))) \
            * a.shape[-1]

    def fn(x, y):
        x, y = lshift(x, sa), lshift(y, sb)
        fast = static_bound is not None and x.dtype != object and y.dtype != object
        return exact_matmul(x, y, static_bound if fast else None)

    def bounds(ib):
        (la, ha), (lb, hb) = ib
        if not a.dynamic:
            ap, an = split_sign(lshift(la, sa))
            hb_, lb_ = lshift(hb, sb), lshift(lb, sb)
            return exact_matmul(ap, lb_) + exact_matmul(an, hb_), exact_matmul(ap, hb_) + exact_matmul(an, lb_)
        if not b.dynamic:
            bp, bn = split_sign(lshift(lb, sb))
            la_, ha_ = lshift(la, sa), lshift(ha, sa)
            return exact_matmul(la_, bp) + exact_matmul(ha_, bn), exact_matmul(ha_, bp) + exact_matmul(la_, bn)
        la_, ha_ = lshift(la, sa).astype(object)[..., None], lshift(ha, sa).astype(object)[..., None]
        lb_, hb_ = lshift(lb, sb).astype(object)[..., None, :, :], lshift(hb, sb).astype(object)[..., None, :, :]
        c = [la_ * lb_, la_ * hb_, ha_ * lb_, ha_ * hb_]
        lo, hi = c[0], c[0]
        for v in c[1:]:
            lo, hi = np.minimum(lo, v), np.maximum(hi, v)
        return lo.sum(axis=-2), hi.sum(axis=-2)

    def peak(ib):
        (la, ha), (lb, hb) = ib
        return (max(amax(la), amax(ha)) << int(np.max(sa))) * (max(amax(lb), amax(hb)) << int(np.max(sb))) * a.shape[-1]

    return Op(fn, [a, b], shape, out_exp, bounds, peak)


# ---------------------------------------------------------------------------------------------
# BatchNormalization


def _frac_sqrt(f: Fraction) -> Fraction | None:
    if f < 0:
        return None
    n, d = f.numerator, f.denominator
    rn, rd = math.isqrt(n), math.isqrt(d)
    if rn * rn == n and rd * rd == d:
        return Fraction(rn, rd)
    return None


def _frac_dyadic(f: Fraction) -> tuple[int, int] | None:
    d = f.denominator
    if d & (d - 1):
        return None
    return f.numerator, -(d.bit_length() - 1)


def batchnorm_affine(node, ins: list[T | None], attrs: dict, channel_axis: int, nd: int):
    """Per-channel (a, b) with y = a*x + b exactly, as static tensors; UnsupportedError if not exact."""
    if int(attrs.get("training_mode", 0)):
        raise err(node, "training_mode=1 is not supported")
    gamma, beta, mean, var = (_static_param(node, ins[i], n) for i, n in
                              zip(range(1, 5), ("scale", "B", "input_mean", "input_var"), strict=True))
    eps = Fraction(float(np.float32(attrs.get("epsilon", 1e-5))))
    C = gamma.size
    a_c, a_e, b_c, b_e = [], [], [], []
    for c in range(C):
        root = _frac_sqrt(Fraction(float(var.ravel()[c])) + eps)
        if root is None or root == 0:
            raise err(node, f"channel {c}: sqrt(var + epsilon) = sqrt({float(var.ravel()[c]) + float(eps)!r}) is not "
                      "exactly representable; fold the BatchNormalization into the previous layer before export "
                      "or make its folded scale a power of two")
        a = Fraction(float(gamma.ravel()[c])) / root
        b = Fraction(float(beta.ravel()[c])) - Fraction(float(mean.ravel()[c])) * a
        da, db = _frac_dyadic(a), _frac_dyadic(b)
        if da is None or db is None:
            raise err(node, f"channel {c}: folded scale {float(a)!r} / shift {float(b)!r} is not a dyadic rational "
                      "(not exactly representable as integer * power of two)")
        a_c.append(da[0])
        a_e.append(da[1])
        b_c.append(db[0])
        b_e.append(db[1])
    shape = [1] * nd
    shape[channel_axis] = C

    def mk(cs, es):
        arr = np.array(cs, dtype=object)
        arr = to_compact(arr).reshape(shape)
        return T("", tuple(shape), compress_exp(np.array(es, dtype=np.int64).reshape(shape)), codes=arr)

    return mk(a_c, a_e), mk(b_c, b_e)
