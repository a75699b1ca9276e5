"""Build the alkaid equivalent of an IR :class:`codesign.rtl.ir.Model` from the SAME integer weights,
biases, shifts and formats (dense MLPs; requant with FLOOR or ROUND = half-to-even rounding).

alkaid 0.8.2 is the renamed successor of da4ml (``alkaid.trace.FVArray`` / ``FVariable`` / ``trace``,
``alkaid.codegen.RTLModel``). Round half to even uses the construction of bench/da4ml_model.py,
``floor(t + 1/2 - 2^-s + lsb(floor t) * 2^-s)``, by default (``rounding='construct'``); alkaid's own
``RND_CONV`` quantizer (``rounding='native'``) is the alternative the settings sweep of ``bench peers``
also measures. alkaid's ``WRAP`` quantizer resets the variable's scale factor to 1, so the factor drift
behind da4ml 0.6.0's 2^-32 constant bug (see bench/da4ml_model.py) does not build up here; whether the
constant encoding itself still fails below 2^-32 is checked by :func:`factor_bug_check` (tests/test_bench.py)
rather than guarded against.
"""

from __future__ import annotations

import numpy as np

BIG_I = 62  # integer bits for 'no wrap' re-quantizations (wider than any accumulator here)


def _requant(v, rq, rounding: str = "construct"):
    s = int(rq.shift)
    mode = rq.rounding.upper()
    if s <= 0:
        q = v * float(2 ** (-s))
    else:
        t = v * 2.0 ** -s
        if mode == "FLOOR":
            q = t.quantize(1, BIG_I, 0, "WRAP", "TRN")
        elif mode in ("ROUND", "HALF_EVEN"):
            if rounding == "native":  # alkaid's own round-half-to-even quantizer
                q = t.quantize(1, BIG_I, 0, "WRAP", "RND_CONV")
            else:
                # round half to even == floor(t + 1/2 - 2^-s + lsb(floor t) * 2^-s), exact on integer codes
                bit = t.quantize(0, 1, 0, "WRAP", "TRN")  # floor(t) mod 2
                q = (t + (0.5 - 2.0 ** -s) + bit * 2.0 ** -s).quantize(1, BIG_I, 0, "WRAP", "TRN")
        else:
            raise NotImplementedError(f"rounding {mode} has no alkaid equivalent here")
    lo, hi = rq.lo, rq.hi
    if rq.relu:
        q = q.relu()
    fmt = rq.out
    std_lo = -(1 << (fmt.bits - 1)) if fmt.signed else 0
    if lo == max(std_lo, 0 if rq.relu else std_lo) and hi == fmt.hi and not fmt.narrow:
        k, i = (1, fmt.bits - 1) if fmt.signed and not rq.relu else (0, fmt.bits - (1 if fmt.signed else 0))
        return q.quantize(k, i, 0, "SAT", "TRN")
    return np.minimum(np.maximum(q, lo), hi)


def trace_ir(ir, solver_options: dict | None = None, hwconf: tuple[int, int, int] = (1, -1, -1),
             rounding: str = "construct"):
    """-> (inputs FVArray, outputs FVArray) of the whole IR model. ``solver_options``: alkaid's CMVM
    solver options (``method0``, ``method1``, ``hard_dc``, ``decompose_dc``, ...); ``hwconf``:
    ``HWConfig(adder_size, carry_size, latency_cutoff)``."""
    from alkaid.trace import FVArray, HWConfig

    from codesign.rtl import ir as irk

    f = ir.input_fmt
    n = int(np.prod(ir.input_shape))
    x = FVArray.from_lhs(np.full(n, float(f.lo)), np.full(n, float(f.hi)), np.ones(n), hwconf=HWConfig(*hwconf),
                         solver_options=solver_options)
    inp = x
    for ly in ir.layers:
        if isinstance(ly, irk.Dense):
            acc = x @ ly.weights.astype(np.float64)
            if ly.bias is not None and np.any(ly.bias != 0):
                acc = acc + ly.bias.astype(np.float64)
            x = _requant(acc, ly.requant, rounding) if ly.requant is not None else acc
        elif isinstance(ly, irk.Requantize):
            x = _requant(x, ly.requant, rounding)
        elif isinstance(ly, irk.Flatten):
            pass
        elif isinstance(ly, irk.Transpose):
            x = x[np.asarray(ly.perm)]
        else:
            raise NotImplementedError(f"layer {ly.name}: {ly.kind} not mapped to alkaid in this bench")
    return inp, x


def comb_logic(ir, **kw):
    from alkaid.trace import trace

    inp, out = trace_ir(ir, **kw)
    return trace(inp, out)


def factor_bug_check(exp: int = -40) -> dict:
    """da4ml 0.6.0's bug: a saturation constant next to a variable whose scale factor is below 2^-32 came
    out as 0 in its C++ interpreter. Build that case in alkaid (x * 2^exp, then SAT to 4 bits) and compare
    its interpreter with the exact result on every input code. -> {"mismatches": n, "codes": m}."""
    from alkaid.trace import FVArray, HWConfig, trace

    x = FVArray.from_lhs(np.array([-128.0]), np.array([127.0]), np.ones(1), hwconf=HWConfig(1, -1, -1))
    y = (x * 2.0 ** exp).quantize(1, 3 + exp, -exp, "SAT", "TRN")  # the codes clipped to [-8, 7], times 2^exp
    comb = trace(x, y)
    codes = np.arange(-128, 128, dtype=np.float64)[:, None]
    want = np.clip(codes, -8, 7) * 2.0 ** exp
    got = comb.predict(codes)
    return {"mismatches": int((got != want).sum()), "codes": len(codes)}
