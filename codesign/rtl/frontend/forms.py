"""The form of each float epilogue in the emitted design: an IR pass run with the RTL config.

A :class:`~codesign.rtl.formats.Thresholds` epilogue of a fully parallel layer may instead be emitted as
the equivalent :class:`~codesign.rtl.formats.MulShift` (found by
:func:`~codesign.rtl.frontend.thresholds.mulshift_form`, checked equal to the proven thresholds).
``rtl.epilogue``: ``thresholds`` keeps every layer as it is, ``mulshift`` takes the multiply-shift form
wherever one exists, ``auto`` takes the cheaper per layer by an estimate in adder bits: a threshold costs
a comparator as wide as the accumulator plus a popcount bit; the multiply-shift form one adder per
canonical-signed-digit of ``m`` as wide as the product, plus the clip comparators.
"""

from __future__ import annotations

import numpy as np

from codesign.rtl import ir
from codesign.rtl.formats import MulShift, Thresholds, bits_for
from codesign.rtl.frontend.thresholds import mulshift_form


def _csd_digits(v: int) -> int:
    from codesign.rtl.emit.netlist import csd

    return len(csd(int(v)))


def _field_ranges(ly: ir.Layer) -> tuple[list[tuple[int, int]], np.ndarray]:
    bounds = ly.acc_bounds() if isinstance(ly, ir.AccLayer) else [(ly.in_fmt.lo, ly.in_fmt.hi)] * ly.n_out
    return bounds, ly.field_channels()


def threshold_cost(th: Thresholds, ly: ir.Layer) -> int:
    bounds, ch = _field_ranges(ly)
    return sum(len(th.field(int(c), lo, hi)[1]) * (bits_for(lo, hi) + 1)
               for (lo, hi), c in zip(bounds, ch, strict=True))


def mulshift_cost(ms: MulShift, ly: ir.Layer) -> int:
    bounds, ch = _field_ranges(ly)
    cost = 0
    for (lo, hi), c in zip(bounds, ch, strict=True):
        m, b = ms.m[int(c)], ms.b[int(c)]
        w = bits_for(min(lo * m, hi * m) + b, max(lo * m, hi * m) + b)
        cost += _csd_digits(m) * w + 2 * (w - ms.shift)
    return cost


def choose_forms(model: ir.Model, mode: str, folded: bool) -> ir.Model:
    """``model`` with each fully parallel layer's thresholds in the form ``mode`` asks for (``folded``: linear
    layers are time-multiplexed and keep threshold ROMs)."""
    if mode == "thresholds":
        return model
    layers = []
    for ly in model.layers:
        th = getattr(ly, "requant", None)
        if isinstance(th, Thresholds) and not (folded and isinstance(ly, ir.Linear)) and th.levels > 1:
            bounds, ch = _field_ranges(ly)
            n = int(ch.max()) + 1
            lo = np.full(n, np.iinfo(np.int64).max)
            hi = np.full(n, np.iinfo(np.int64).min)
            for (a, b), c in zip(bounds, ch, strict=True):
                lo[c], hi[c] = min(lo[c], a), max(hi[c], b)
            ms = mulshift_form(th, lo, hi)
            if ms is not None and (mode == "mulshift" or mulshift_cost(ms, ly) < threshold_cost(th, ly)):
                ly = ly.replace(requant=ms)
        layers.append(ly)
    return model.replace(layers=tuple(layers))
