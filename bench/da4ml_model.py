"""Build the da4ml equivalent of an IR :class:`codesign.rtl.ir.Model` from the SAME integer weights,
biases, shifts and formats (dense MLPs; requant with FLOOR or ROUND = half-to-even rounding).

da4ml keeps, per traced variable, a power-of-two ``_factor`` (real value = factor x the integer on the
wire, LSB position included). Every requantization drops LSBs, so the factor shrinks layer after layer,
and da4ml 0.6.0 mis-encodes constants once it reaches 2**-32: ``_const_f`` only searches the LSB of a
constant in (-32, 32], so the saturation constant of ``quantize(..., 'SAT')`` (``min_of(hi)``, an
``msb_mux`` with a constant) gets a finer LSB than the mux output, and its C++ interpreter and Verilog
then output 0 instead of ``hi`` (its Python reference interpreter is right). :func:`_add_same_frame`
keeps the round-half-even construction from shifting the factor by ``2**-shift`` a second time per
layer, which keeps our models far from that limit, and :func:`trace_ir` refuses to trace a network that
reaches it rather than emit a netlist that silently differs from the golden model.
"""

from __future__ import annotations

import math

import numpy as np

BIG_I = 62  # integer bits for 'no wrap' re-quantizations (wider than any accumulator here)
MIN_FACTOR_EXP = -31  # da4ml 0.6.0 encodes integer constants correctly only down to a factor of 2**-31


def _add_same_frame(a, b):
    """Elementwise ``a + b`` whose result keeps ``a``'s da4ml factor (``a + b`` takes ``b``'s when only
    ``a``'s factor is negative): same adder, no drift of the factor."""
    from da4ml.trace import FixedVariableArray

    av, bv = np.ravel(a._vars), np.ravel(b._vars)
    out = [-((-x) + (-y)) if x._factor < 0 else x + y for x, y in zip(av, bv, strict=True)]
    return FixedVariableArray(np.array(out).reshape(a._vars.shape), a.solver_options, hwconf=a.hwconf)


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
            q = _add_same_frame(t + (0.5 - 2.0 ** -s), bit * 2.0 ** -s).quantize(1, BIG_I, 0, "WRAP", "TRN")
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


def min_factor_exp(arr) -> int:
    """Smallest ``log2 |factor|`` over the non-constant variables of a FixedVariableArray."""
    exps = [int(math.log2(abs(v._factor))) for v in np.ravel(arr._vars) if v.opr != "const"]
    return min(exps, default=0)


def trace_ir(ir):
    """-> (inputs FixedVariableArray, outputs FixedVariableArray) of the whole IR model."""
    from da4ml.trace import FixedVariableArray, HWConfig

    from codesign.rtl import ir as irk

    f = ir.input_fmt
    n = int(np.prod(ir.input_shape))
    x = FixedVariableArray.from_lhs(np.full(n, float(f.lo)), np.full(n, float(f.hi)), np.ones(n),
                                    hwconf=HWConfig(1, -1, -1))
    inp = x
    for ly in ir.layers:
        if isinstance(ly, irk.Dense):
            acc = x @ ly.weights.astype(np.float64)
            if ly.bias is not None and np.any(ly.bias != 0):
                acc = acc + ly.bias.astype(np.float64)
            if ly.requant is not None:
                if min_factor_exp(acc) + min(-int(ly.requant.shift), 0) < MIN_FACTOR_EXP:
                    raise NotImplementedError(
                        f"layer {ly.name}: da4ml's scale factor would drop below 2^{MIN_FACTOR_EXP}, where "
                        "da4ml 0.6.0 mis-encodes the saturation constant (see bench/da4ml_model.py)")
                x = _requant(acc, ly.requant)
            else:
                x = acc
        elif isinstance(ly, irk.Requantize):
            x = _requant(x, ly.requant)
        elif isinstance(ly, irk.Flatten):
            pass
        elif isinstance(ly, irk.Transpose):
            x = x[np.asarray(ly.perm)]
        else:
            raise NotImplementedError(f"layer {ly.name}: {ly.kind} not mapped to da4ml in this bench")
    return inp, x


def comb_logic(ir):
    from da4ml.trace import comb_trace

    inp, out = trace_ir(ir)
    return comb_trace(inp, out)
