"""Build the da4ml equivalent of an IR :class:`codesign.rtl.ir.Model` from the SAME integer weights,
biases, shifts and formats (dense MLPs; requant with FLOOR or ROUND = half-to-even rounding)."""

from __future__ import annotations

import numpy as np

BIG_I = 62  # integer bits for 'no wrap' re-quantizations (wider than any accumulator here)


def _requant(v, rq):
    s = int(rq.shift)
    mode = rq.rounding.upper()
    if s <= 0:
        q = v * float(2 ** (-s))
    else:
        t = v * 2.0 ** -s
        if mode == "FLOOR":
            q = t.quantize(1, BIG_I, 0, "WRAP", "TRN")
        elif mode in ("ROUND", "HALF_EVEN"):
            # round half to even == floor(t + 1/2 - 2^-s + lsb(floor t) * 2^-s), exact on integer codes
            bit = t.quantize(0, 1, 0, "WRAP", "TRN")  # floor(t) mod 2
            q = (t + (0.5 - 2.0 ** -s) + bit * 2.0 ** -s).quantize(1, BIG_I, 0, "WRAP", "TRN")
        elif mode == "HALF_UP_POS":  # pragma: no cover - da4ml's own RND (half towards +inf)
            q = t.quantize(1, BIG_I, 0, "WRAP", "RND")
        else:
            raise NotImplementedError(f"rounding {mode} has no da4ml equivalent here")
    lo, hi = rq.lo, rq.hi
    if rq.relu:
        q = q.relu()
    fmt = rq.out
    std_lo = -(1 << (fmt.bits - 1)) if fmt.signed else 0
    if lo == max(std_lo, 0 if rq.relu else std_lo) and hi == (fmt.hi if not fmt.narrow or fmt.signed else fmt.hi):
        k, i = (1, fmt.bits - 1) if fmt.signed and not rq.relu else (0, fmt.bits - (1 if fmt.signed else 0))
        if not fmt.narrow:
            return q.quantize(k, i, 0, "SAT", "TRN")
    return np.minimum(np.maximum(q, lo), hi)


def trace_ir(ir):
    """-> (inputs FixedVariableArray, outputs FixedVariableArray) of the whole IR model."""
    from da4ml.trace import FixedVariableArray, HWConfig

    f = ir.input_fmt
    n = int(np.prod(ir.input_shape))
    x = FixedVariableArray.from_lhs(np.full(n, float(f.lo)), np.full(n, float(f.hi)), np.ones(n),
                                    hwconf=HWConfig(1, -1, -1))
    inp = x
    for ly in ir.layers:
        if ly.kind == "dense":
            acc = x @ ly.weights.astype(np.float64)
            if ly.bias is not None and np.any(ly.bias != 0):
                acc = acc + ly.bias.astype(np.float64)
            x = _requant(acc, ly.requant) if ly.requant is not None else acc
        elif ly.kind == "requant":
            x = _requant(x, ly.requant)
        elif ly.kind == "flatten":
            pass
        elif ly.kind == "transpose":
            x = x[np.asarray(ly.perm)]
        else:
            raise NotImplementedError(f"layer {ly.name}: {ly.kind} not mapped to da4ml in this bench")
    return inp, x


def comb_logic(ir):
    from da4ml.trace import comb_trace

    inp, out = trace_ir(ir)
    return comb_trace(inp, out)
