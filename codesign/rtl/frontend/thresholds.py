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
from codesign.rtl.formats import FixedFormat, Thresholds

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
