"""Exact integer thresholds for a monotone epilogue, found and proven against the reference.

Between an integer accumulator and the next quantizer a real model computes float scales, bias,
BatchNorm, relu and the quantizer's rounding and clipping. Per output channel that is a monotone step
function ``f_c`` of the accumulator (decreasing where a BatchNorm gamma is negative), so it is exactly
``code = base_c + dir_c * #{k : acc >= t_c[k]}`` for integer thresholds ``t_c``.

:func:`find_thresholds` gets ``f`` as a callable that evaluates the reference on a batch of accumulator
values (one column per channel; :mod:`codesign.rtl.frontend.epilogue` builds it from the graph's own
nodes), finds every step by bisection over the accumulator's exact range, then proves the result: on
every accumulator value of the range when the ranges hold at most ``EXHAUSTIVE`` values in all, else at
every threshold and both neighbours, the range ends and ``SAMPLE`` random values per channel (the
function is checked monotone on all of them). A disagreement is an :class:`UnsupportedError` naming the
layer: the epilogue is not monotone, so no threshold form exists.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from codesign.errors import UnsupportedError
from codesign.rtl.formats import FixedFormat, MulShift, Thresholds

EXHAUSTIVE = 1 << 22  # accumulator values checked one by one when the ranges are this small in total
SAMPLE = 1 << 12  # random accumulator values per channel checked otherwise
CodesFn = Callable[[np.ndarray], np.ndarray]  # (L, C) int64 accumulators -> (L, C) int64 codes


def _eval(f: CodesFn, cols: list[np.ndarray]) -> list[np.ndarray]:
    """``f`` on per-channel value lists of different lengths (padded with each column's first value)."""
    n = max((len(c) for c in cols), default=0)
    if n == 0:
        return [np.zeros(0, np.int64) for _ in cols]
    m = np.stack([np.concatenate([c, np.full(n - len(c), c[0] if len(c) else 0, np.int64)]) for c in cols], axis=1)
    y = np.asarray(f(m), dtype=np.int64)
    return [y[:len(c), k] for k, c in enumerate(cols)]


def find_thresholds(f: CodesFn, lo: np.ndarray, hi: np.ndarray, out: FixedFormat, what: str) -> Thresholds:
    """Thresholds of ``f`` over accumulator ranges ``[lo[c], hi[c]]``, proven (see the module doc)."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    ends = _eval(f, [np.array([a, b], np.int64) for a, b in zip(lo, hi, strict=True)])
    q_lo = np.array([e[0] for e in ends])
    q_hi = np.array([e[1] for e in ends])
    direction = np.where(q_hi >= q_lo, 1, -1)
    steps = np.abs(q_hi - q_lo)
    # bisection for every step j of every channel at once: the smallest acc with dir*(f(acc)-f(lo)) >= j
    pairs = [(c, j) for c in range(len(lo)) for j in range(1, int(steps[c]) + 1)]
    a = np.array([lo[c] for c, _ in pairs], dtype=np.int64)  # f(a) below step j
    b = np.array([hi[c] for c, _ in pairs], dtype=np.int64)  # f(b) at or past step j
    need = np.array([j for _, j in pairs], dtype=np.int64)
    ch = np.array([c for c, _ in pairs], dtype=np.int64)
    while len(pairs) and np.any(b - a > 1):
        mid = a + (b - a) // 2
        cols = [mid[ch == c] for c in range(len(lo))]
        got = _eval(f, cols)
        q = np.empty(len(pairs), np.int64)
        for c in range(len(lo)):
            q[ch == c] = got[c]
        past = direction[ch] * (q - q_lo[ch]) >= need
        b = np.where(past, mid, b)
        a = np.where(past, a, mid)
    t = [tuple(sorted(int(v) for v in b[ch == c])) for c in range(len(lo))]
    # a step already taken at lo itself (cannot happen: q_lo = f(lo)) or thresholds at lo+1.. hi: fine
    th = Thresholds(tuple(t), tuple(int(v) for v in q_lo), tuple(int(d) for d in direction), out)
    return _prove(f, th, lo, hi, what)


def _prove(f: CodesFn, th: Thresholds, lo: np.ndarray, hi: np.ndarray, what: str) -> Thresholds:
    total = int(np.sum(hi - lo + 1))
    rng = np.random.default_rng(0)
    if total <= EXHAUSTIVE:
        method = "exhaustive"
        cols = [np.arange(a, b + 1, dtype=np.int64) for a, b in zip(lo, hi, strict=True)]
    else:
        method = f"thresholds+-1, range ends, {SAMPLE} random per channel"
        cols = []
        for c, (a, b) in enumerate(zip(lo, hi, strict=True)):
            t = np.asarray(th.t[c], np.int64)
            pts = np.concatenate([[a, b], t - 1, t, t + 1, rng.integers(a, b + 1, size=SAMPLE, dtype=np.int64)])
            cols.append(np.unique(np.clip(pts, a, b)))
    got = _eval(f, cols)
    checked = 0
    for c, (x, y) in enumerate(zip(cols, got, strict=True)):
        want = th.apply(x[:, None], np.array([c]))[:, 0]
        bad = np.nonzero(want != y)[0]
        if bad.size:
            i = int(bad[0])
            raise UnsupportedError(f"{what}: channel {c}: the epilogue is not a monotone step function of the "
                                   f"accumulator (at {int(x[i])} the reference gives code {int(y[i])}, the threshold "
                                   f"form {int(want[i])}); only monotone epilogues have an exact threshold form")
        if np.any(np.diff(y) * th.dir[c] < 0):
            raise UnsupportedError(f"{what}: channel {c}: the epilogue is not monotone in the accumulator")
        checked += len(x)
    return Thresholds(th.t, th.base, th.dir, th.out, {"method": method, "values_checked": checked,
                                                     "range_values": total, "mismatches": 0})


# ---- the multiply-shift form -----------------------------------------------------------------------
MAX_SHIFT = 48


def _channel_constraints(q0: int, d: int, t: list[int], lo: int, hi: int, shift: int):
    """Lower bounds ``B >= a - x*M`` and upper bounds ``B <= b - y*M`` on the bias of
    ``(acc * M + B) >> shift`` so that, clipped to the channel's codes, it equals the step function: every
    threshold is where the code steps (below the first and above the last one the clip holds the code)."""
    one = 1 << shift
    n = len(t)
    lower, upper = [], []  # (a, x) / (b, y)
    if d > 0:
        for k, tk in enumerate(t, 1):
            lower.append(((q0 + k) * one, tk))
            upper.append(((q0 + k) * one - 1, tk - 1))
    else:
        for k, tk in enumerate(t, 1):
            upper.append(((q0 - k + 1) * one - 1, tk))
            lower.append(((q0 - k + 1) * one, tk - 1))
    if not t:  # a constant channel: M = 0, B = q0 << shift
        lower.append((q0 * one, 0))
        upper.append(((q0 + 1) * one - 1, 0))
    del n, lo, hi
    return lower, upper


def _m_interval(lower, upper) -> tuple[float, float]:
    """The multipliers M for which some B meets every bound: ``a_i - x_i M <= b_j - y_j M`` for all pairs,
    i.e. ``(y_j - x_i) M <= b_j - a_i`` (vectorized over the pairs, exact integers)."""
    big = max(abs(v) for pair in lower + upper for v in pair) >= 1 << 60
    dt = object if big else np.int64
    a = np.array([v[0] for v in lower], dtype=dt)[:, None]
    x = np.array([v[1] for v in lower], dtype=dt)[:, None]
    b = np.array([v[0] for v in upper], dtype=dt)[None, :]
    y = np.array([v[1] for v in upper], dtype=dt)[None, :]
    e, f = (y - x).ravel(), (b - a).ravel()
    if np.any((e == 0) & (f < 0)):
        return 1.0, 0.0
    pos, neg = e > 0, e < 0
    m_hi = min((f[pos] // e[pos]).tolist(), default=float("inf"))
    m_lo = max((-(f[neg] // -e[neg])).tolist(), default=-float("inf"))
    return m_lo, m_hi


def _fit_channel(q0: int, d: int, t: list[int], lo: int, hi: int) -> tuple[int, int, int] | None:
    """(M, B, shift) with the smallest shift, then the smallest |M|, or None."""
    for shift in range(MAX_SHIFT + 1):
        lower, upper = _channel_constraints(q0, d, t, lo, hi, shift)
        m_lo, m_hi = _m_interval(lower, upper)
        if d > 0:
            m_lo = max(m_lo, 0 if not t else 1)
        else:
            m_hi = min(m_hi, 0 if not t else -1)
        if m_lo > m_hi:
            continue
        m = int(m_lo) if d > 0 else int(m_hi)
        b = max(a - x * m for a, x in lower)
        return m, b, shift
    return None


def mulshift_form(th: Thresholds, lo: np.ndarray, hi: np.ndarray) -> MulShift | None:
    """The multiply-shift form of ``th`` on accumulator ranges ``[lo[c], hi[c]]`` (None when some channel
    needs more than :data:`MAX_SHIFT` fraction bits), checked against the thresholds."""
    fits = []
    for c in range(len(th.t)):
        f = _fit_channel(th.base[c], th.dir[c], list(th.t[c]), int(lo[c]), int(hi[c]))
        if f is None:
            return None
        fits.append(f)
    shift = max(f[2] for f in fits)
    m = tuple(f[0] << (shift - f[2]) for f in fits)
    b = tuple(f[1] << (shift - f[2]) for f in fits)
    clip = tuple((min(q, q + d * len(t)), max(q, q + d * len(t)))
                 for q, d, t in zip(th.base, th.dir, th.t, strict=True))
    ms = MulShift(m, b, shift, th.out, clip=clip)
    total = int(np.sum(np.asarray(hi) - np.asarray(lo) + 1))
    rng = np.random.default_rng(1)
    for c in range(len(th.t)):
        if total <= EXHAUSTIVE:
            x = np.arange(lo[c], hi[c] + 1, dtype=np.int64)
        else:
            t = np.asarray(th.t[c], np.int64)
            x = np.unique(np.clip(np.concatenate([[lo[c], hi[c]], t - 1, t, t + 1,
                                                  rng.integers(lo[c], hi[c] + 1, size=SAMPLE, dtype=np.int64)]),
                                  lo[c], hi[c]))
        ch = np.array([c])
        if not np.array_equal(ms.apply(x[:, None], ch)[:, 0], th.apply(x[:, None], ch)[:, 0]):  # pragma: no cover
            raise AssertionError(f"multiply-shift form of channel {c} differs from its thresholds")
    proof = dict(th.proof or {})
    proof["method"] = f"equal to the proven thresholds ({proof.get('method', 'checked')})"
    return MulShift(m, b, shift, th.out, proof, clip=clip)
