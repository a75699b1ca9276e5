"""Quantized constants of a QONNX graph: ``Quant`` on an initializer (weights, biases) as integer codes
with power-of-two scales, and the exact alignment of per-channel weight scales and biases onto one
accumulator scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from codesign.errors import UnsupportedError
from codesign.rtl.formats import FixedFormat

ROUND_FNS = {
    "ROUND": np.round,
    "FLOOR": np.floor,
    "CEIL": np.ceil,
    "ROUND_TO_ZERO": np.fix,
    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5),
}


@dataclass
class QConst:
    """Integer codes of a quantized constant; ``scale_exp`` an int or an array (broadcast to
    ``codes.shape``) for per-channel power-of-two scales; ``fscale`` (broadcast to ``codes.shape``) instead
    for float scales (``scale_exp`` is then 0)."""

    codes: np.ndarray
    scale_exp: int | np.ndarray
    fmt: FixedFormat | None
    fscale: np.ndarray | None = None

    def real_scale(self) -> np.ndarray:
        """The scale of every code, as float64 (broadcast to ``codes.shape``)."""
        if self.fscale is not None:
            return np.broadcast_to(np.asarray(self.fscale, np.float64), self.codes.shape)
        return np.broadcast_to(np.ldexp(1.0, np.asarray(self.scale_exp, np.int64)), self.codes.shape)


def po2_exp(scale: np.ndarray, what: str) -> int:
    """Exponent of one power-of-two scale (activations)."""
    s = np.asarray(scale, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(s == s[0]):
        raise UnsupportedError(f"{what}: per-channel activation scales are not supported (need one power-of-two "
                               "scale; per-channel scales are supported on weights and biases)")
    m, e = math.frexp(float(s[0]))
    if m != 0.5:
        raise UnsupportedError(f"{what}: scale {float(s[0])!r} is not a power of two")
    return e - 1


def po2_exps(scale: np.ndarray, what: str) -> np.ndarray:
    """Exponents of a (per-channel) power-of-two scale, same shape as ``scale``."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise UnsupportedError(f"{what}: scale {s.ravel()[:4].tolist()} is not a positive power of two")
    m, e = np.frexp(s)
    if np.any(m != 0.5):
        raise UnsupportedError(f"{what}: scale {float(s[m != 0.5].ravel()[0])!r} is not a power of two")
    return (e - 1).astype(np.int64)


def uniform(e) -> int | None:
    a = np.asarray(e)
    return int(a.ravel()[0]) if a.size and np.all(a == a.ravel()[0]) else None


def quantize_const(x: np.ndarray, scale: np.ndarray, fmt_bits: int, signed: bool, narrow: bool, mode: str,
                   where: str) -> QConst:
    """``Quant`` of an initializer with a per-tensor or per-channel power-of-two scale."""
    ea = po2_exps(scale, where)
    xv = np.asarray(x, dtype=np.float64)
    if ea.ndim > xv.ndim:
        raise UnsupportedError(f"{where}: scale shape {ea.shape} does not broadcast to {xv.shape}")
    fmt = FixedFormat(fmt_bits, signed, int(ea.min()), narrow)
    v = xv / 2.0 ** ea.astype(np.float64)
    codes = ROUND_FNS[mode](np.clip(v, fmt.lo, fmt.hi)).astype(np.int64)
    u = uniform(ea)
    return QConst(codes, u if u is not None else np.broadcast_to(ea, codes.shape).copy(), fmt)


def quantize_const_float(x: np.ndarray, scale: np.ndarray, bits: int, signed: bool, narrow: bool, mode: str,
                         where: str) -> QConst:
    """``Quant`` of an initializer with a float (non-power-of-two) scale: the reference's own codes
    (qonnx ``int_quant`` arithmetic on the float32 constant)."""
    from codesign.graph.reference import quant_codes

    s = np.asarray(scale, dtype=np.float32)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise UnsupportedError(f"{where}: scale {s.ravel()[:4].tolist()} is not positive")
    xv = np.asarray(x, dtype=np.float32)
    if s.ndim > xv.ndim:
        raise UnsupportedError(f"{where}: scale shape {s.shape} does not broadcast to {xv.shape}")
    codes = quant_codes(xv, s, np.float32(0.0), bits, signed, narrow, mode)
    fmt = FixedFormat(bits, signed, 0, narrow, scale=float(s.ravel()[0]) if s.size == 1 else None)
    return QConst(codes, 0, fmt, np.broadcast_to(s.astype(np.float64), codes.shape).copy())


def bipolar_const(x: np.ndarray, scale: np.ndarray, where: str) -> QConst:
    """``BipolarQuant`` of an initializer: codes +1 where ``x >= 0``, else -1, times the scale."""
    xv = np.asarray(x, dtype=np.float32)
    codes = np.where(xv >= 0, 1, -1).astype(np.int64)
    s = np.asarray(scale, dtype=np.float64)
    if s.size and np.all(np.frexp(s)[0] == 0.5):
        e = (np.frexp(s)[1] - 1).astype(np.int64)
        u = uniform(e)
        exps = u if u is not None else np.broadcast_to(e, codes.shape).copy()
        return QConst(codes, exps, FixedFormat(2, True, 0, True))
    return QConst(codes, 0, FixedFormat(2, True, 0, True), np.broadcast_to(s, codes.shape).copy())


def align_weights(codes: np.ndarray, e, ch_axis: int, where: str):
    """(aligned codes, weight scale exponent, per-channel shift or None): per-channel codes are shifted
    onto the finest scale so one accumulator scale holds every channel exactly."""
    u = uniform(e)
    if u is not None:
        return codes, u, None
    e = np.broadcast_to(np.asarray(e, dtype=np.int64), codes.shape)
    emin = int(e.min())
    other = tuple(a for a in range(codes.ndim) if a != ch_axis)
    ch_min = e.min(axis=other) if other else e
    aligned = codes.astype(np.int64) << (e - emin)
    if int(np.max(np.abs(aligned), initial=0)) >= 1 << 62:
        raise UnsupportedError(f"{where}: per-channel weight scales span too many powers of two")
    return aligned, emin, (ch_min - emin).astype(np.int64)


@dataclass
class BiasFit:
    """A bias on an accumulator: codes per channel, and how the accumulator moves to hold it exactly."""

    codes: np.ndarray  # per output channel, at the (new) accumulator scale
    exps: np.ndarray  # per output channel: the bias constant's own scale exponent
    finer: int  # the weights move left by this much (bias finer than the accumulator); 0 otherwise


def fit_bias(qc, raw, acc_e: int, n_ch: int, where: str) -> BiasFit:
    """Bias codes at accumulator scale ``2^acc_e`` (after moving the accumulator ``finer`` bits left
    when the bias is finer, as the golden model's Add takes the finer scale)."""
    finer = 0
    if isinstance(qc, QConst):
        codes = qc.codes.astype(np.int64).ravel()
        e = np.broadcast_to(np.asarray(qc.scale_exp, dtype=np.int64), qc.codes.shape).ravel()
        d = e - acc_e
        if np.any((d < 0) & (codes % (1 << np.maximum(-d, 0)) != 0)):
            finer = int(-d.min())
            d = e - (acc_e - finer)
        b = np.where(d >= 0, codes << np.maximum(d, 0), codes >> np.maximum(-d, 0))
        b_exp = e
    elif raw is not None:
        v = np.asarray(raw, dtype=np.float64).ravel() * 2.0 ** (-acc_e)
        if not np.all(v == np.round(v)):
            raise UnsupportedError(f"{where}: float bias is not representable at the accumulator scale 2^{acc_e}")
        b = v.astype(np.int64)
        nz = b[b != 0]  # one exponent for the whole constant (its finest set bit), as the golden model
        tz = int(min((int(x) & -int(x)).bit_length() - 1 for x in nz)) if nz.size else -acc_e
        b_exp = np.full(b.shape, acc_e + tz, dtype=np.int64)
    else:
        raise UnsupportedError(f"{where}: bias must be a constant")
    if b.size == 1 and n_ch > 1:
        b = np.repeat(b, n_ch)
        b_exp = np.repeat(b_exp, n_ch)
    if b.size != n_ch:
        raise UnsupportedError(f"{where}: bias has {b.size} values for {n_ch} outputs")
    return BiasFit(b, b_exp, finer)
