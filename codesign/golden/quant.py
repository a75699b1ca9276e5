"""Exact rounding, clipping and scale helpers for the golden model.

Everything here works on integer numpy arrays (``int64`` or ``object`` arrays of Python ints) and
never rounds through floating point. ``round_shift(q, k, mode)`` is ``round(q / 2**k)`` with the
QONNX rounding ``mode``; float constants are converted exactly (every finite float is a dyadic
rational ``m * 2**e``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from codesign.errors import UnsupportedError

#: QONNX rounding-mode names (upper case) -> canonical name. ``ROUND`` is round-half-to-even.
ROUNDING_MODES = {
    "ROUND": "ROUND",
    "HALF_EVEN": "ROUND",
    "FLOOR": "FLOOR",
    "CEIL": "CEIL",
    "ROUND_TO_ZERO": "ROUND_TO_ZERO",
    "DOWN": "ROUND_TO_ZERO",
    "UP": "UP",
    "HALF_UP": "HALF_UP",
    "HALF_DOWN": "HALF_DOWN",
}

INT64_SAFE = 2**62  # magnitudes below this never overflow int64 in one more add/shift


def canonical_rounding(mode: str | bytes, where: str = "") -> str:
    if isinstance(mode, bytes):
        mode = mode.decode()
    m = ROUNDING_MODES.get(str(mode).upper())
    if m is None:
        raise UnsupportedError(f"{where}unknown rounding_mode {mode!r} (known: {', '.join(ROUNDING_MODES)})")
    return m


def min_int(signed: bool, narrow: bool, bits: int) -> int:
    """Smallest code of a QONNX Quant (same formula as qonnx.custom_op.general.intquant.min_int)."""
    if signed and narrow:
        return -(2 ** (bits - 1)) + 1
    if signed:
        return -(2 ** (bits - 1))
    return 0


def max_int(signed: bool, narrow: bool, bits: int) -> int:
    """Largest code of a QONNX Quant (same formula as qonnx.custom_op.general.intquant.max_int)."""
    if not signed and not narrow:
        return 2**bits - 1
    if not signed and narrow:
        return 2**bits - 2
    return 2 ** (bits - 1) - 1


def _adjust(f, r, half, neg, pos, mode: str):
    """floor ``f`` plus the rounding increment, given remainder ``r`` (0 <= r < 1 unit) and ``half``."""
    if mode == "FLOOR":
        return f
    nz = r != 0
    if mode == "CEIL":
        inc = nz
    elif mode == "ROUND_TO_ZERO":
        inc = nz & neg
    elif mode == "UP":
        inc = nz & pos
    else:
        gt = r > half
        eq = (r == half) & nz
        if mode == "HALF_UP":
            inc = gt | (eq & pos)
        elif mode == "HALF_DOWN":
            inc = gt | (eq & neg)
        else:  # ROUND: half to even
            odd = (f % 2) != 0
            inc = gt | (eq & odd)
    return f + inc


def round_shift(q, k, mode: str):
    """Exact ``round(q / 2**k)`` for integer arrays ``q`` and shift(s) ``k >= 0`` (broadcastable)."""
    k = np.asarray(k)
    if k.size and not np.any(k):
        return q
    if (isinstance(q, np.ndarray) and q.dtype == np.int64 and k.size and np.all(k == k.ravel()[0])
            and 0 < int(k.ravel()[0]) <= 61):
        return _round_shift_fast(q, int(k.ravel()[0]), mode)
    if isinstance(q, np.ndarray) and q.dtype == object or (k.size and int(np.max(k)) > 61):
        q = np.asarray(q, dtype=object)
        k = k.astype(object)
        one = 1
    else:
        one = np.int64(1)
    f = q >> k
    r = q - (f << k)
    half = (one << k) >> 1
    return _adjust(f, r, half, q < 0, q > 0, mode)


def _round_shift_fast(q: np.ndarray, k: int, mode: str) -> np.ndarray:
    """int64 ``round(q / 2**k)`` for one shift 1 <= k <= 61 (|q| < 2**62 guaranteed by the caller's
    bound analysis): add a mode-dependent offset, then an arithmetic (floor) shift."""
    h = np.int64(1 << (k - 1))
    if mode == "FLOOR":
        return q >> k
    if mode == "CEIL":
        return (q + np.int64((1 << k) - 1)) >> k
    if mode == "ROUND":  # half to even: ties go up iff floor(q / 2**k) is odd
        return (q + (h - 1) + ((q >> k) & 1)) >> k
    if mode == "HALF_UP":  # ties away from zero
        return (q + h - (q < 0)) >> k
    if mode == "HALF_DOWN":  # ties towards zero
        return (q + h - (q > 0)) >> k
    if mode == "ROUND_TO_ZERO":
        return (q + (q < 0) * np.int64((1 << k) - 1)) >> k
    if mode == "UP":
        return (q + (q > 0) * np.int64((1 << k) - 1)) >> k
    raise ValueError(mode)


def round_float(v: np.ndarray, mode: str) -> np.ndarray:
    """Exact rounding of float64 values to integers (as float64) with a QONNX rounding mode."""
    f = np.floor(v)
    r = v - f  # exact: both are floats of the same binade or smaller
    return _adjust(f, r, 0.5, v < 0, v > 0, mode)


def po2_exponent(scale, where: str) -> np.ndarray:
    """Exponents ``e`` with ``scale == 2**e`` exactly; UnsupportedError if any scale is not a power of two."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise UnsupportedError(f"{where}scale {s.ravel()[:4].tolist()} is not a positive finite power of two")
    m, e = np.frexp(s)
    if np.any(m != 0.5):
        bad = s[m != 0.5].ravel()[0]
        raise UnsupportedError(
            f"{where}scale {bad!r} is not a power of two (only power-of-two scales map to exact shifts)"
        )
    return (e - 1).astype(np.int64)


def dyadic(value, where: str) -> tuple[np.ndarray, int]:
    """Exact ``(codes, exp)`` with ``value == codes * 2**exp`` and one exponent for the whole array.

    Any finite float is a dyadic rational, so this never rounds. Codes are int64 when they fit,
    else an object array of Python ints.
    """
    v = np.asarray(value)
    if v.dtype.kind in "iub":
        return v.astype(np.int64), 0
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise UnsupportedError(f"{where}constant contains inf/nan")
    nz = v[v != 0]
    if nz.size == 0:
        return np.zeros(v.shape, dtype=np.int64), 0
    m, e = np.frexp(nz)
    mant = np.ldexp(m, 53).astype(np.int64)
    # trailing zeros of each mantissa
    tz = np.zeros(mant.shape, dtype=np.int64)
    mm = np.abs(mant)
    for b in (32, 16, 8, 4, 2, 1):
        sel = (mm & ((1 << b) - 1)) == 0
        tz = tz + np.where(sel, b, 0)
        mm = np.where(sel, mm >> b, mm)
    exp = int(np.min(e.astype(np.int64) - 53 + tz))
    top = int(np.max(e)) - exp
    if top < 62:
        return np.ldexp(v, -exp).astype(np.int64), exp
    codes = np.empty(v.shape, dtype=object)
    for idx, x in np.ndenumerate(v):
        fr = Fraction(float(x)) * Fraction(2) ** (-exp)
        codes[idx] = int(fr)
    return codes, exp


def compress_const_axes(a: np.ndarray) -> np.ndarray:
    """Shrink an array along axes where it is constant (keeps ndim)."""
    for ax in range(a.ndim):
        if a.shape[ax] > 1:
            first = np.take(a, [0], axis=ax)
            if np.all(a == first):
                a = first
    return a


def compress_exp(e: np.ndarray) -> np.ndarray:
    """Shrink an exponent array along axes where it is constant (keeps ndim)."""
    return compress_const_axes(np.asarray(e, dtype=np.int64))


def exp_scalar(e: np.ndarray):
    """An int when the exponent is uniform, else the array."""
    e = np.asarray(e)
    if e.size and np.all(e == e.ravel()[0]):
        return int(e.ravel()[0])
    return e
