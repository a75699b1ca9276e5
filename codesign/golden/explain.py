"""Why a golden-model output differs from the reference's (``execute_onnx``) on one input vector.

The golden model accumulates MatMul / Conv exactly; the reference accumulates them in float32. Where the
scales are not powers of two (or sums pass 2**24) the reference's accumulator can differ from the exact
sum times the scale, and the difference can move a value across a quantizer's rounding boundary (then
codes differ from there on), or reach the output through float ops only. :func:`explain` checks, for one
vector, that the first tensor where the two differ is such an accumulator, and finds the quantizer whose
codes the difference changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from codesign.graph.analysis import ACCUMULATORS, QUANTIZERS
from codesign.graph.reference import to_f32


@dataclass
class Explanation:
    """``kind``: ``accumulator-crossed-quantizer`` (explained: the reference's accumulator differs from
    the exact sum and a quantizer downstream gave other codes for it), ``accumulator-float-tail``
    (explained: the accumulator differs and reaches the output through float ops only), ``unexplained``,
    or ``equal`` (no difference at all)."""

    kind: str
    first_tensor: str = ""
    first_op: str = ""
    accumulator: dict = field(default_factory=dict)
    quantizer: dict = field(default_factory=dict)

    @property
    def explained(self) -> bool:
        return self.kind.startswith("accumulator-")


def golden_floats(gm, trace: dict) -> dict[str, np.ndarray]:
    """Every tensor of a golden-model trace (``gm.trace(x, floats=True)``) as the float32 values the
    reference would hold for it."""
    out = {}
    for name, (v, scale) in trace.items():
        if scale is None:
            out[name] = np.asarray(v, dtype=np.float32)
        else:
            s = gm.tensors[name].fscale if gm.tensors[name].fscale is not None else np.ldexp(
                1.0, np.asarray(gm.tensors[name].exp, dtype=np.int64))
            out[name] = to_f32(v, s)
    return out


def explain(gm, x1: np.ndarray, ref_ctx: dict[str, np.ndarray]) -> Explanation:
    """Explain the difference on one input vector ``x1`` (batch of 1) given the reference's full
    execution context ``ref_ctx`` (``execute_onnx(..., return_full_exec_context=True)`` on ``gm.model``)."""
    producer = {o: n for n in gm.model.graph.node for o in n.output}
    order = [o for n in gm.model.graph.node for o in n.output]
    trace = gm.trace(x1, floats=True)
    mine = golden_floats(gm, trace)
    diff = [t for t in order if t in mine and t in ref_ctx and not np.array_equal(
        np.asarray(ref_ctx[t], dtype=np.float32).reshape(mine[t].shape), mine[t])]
    if not diff:
        return Explanation("equal")
    first = diff[0]
    node = producer[first]
    exp = Explanation("unexplained", first, node.op_type)
    if node.op_type not in ACCUMULATORS:
        return exp
    codes, scale = trace[first]
    ref_v = np.asarray(ref_ctx[first], dtype=np.float32).reshape(mine[first].shape)
    bad = np.argwhere(ref_v != mine[first])[0]
    idx = tuple(int(i) for i in bad)
    exp.accumulator = {"tensor": first, "index": idx, "exact_code": int(np.asarray(codes)[idx]),
                       "scale": scale if np.ndim(scale) == 0 else np.broadcast_to(scale, codes.shape)[idx],
                       "reference": float(ref_v[idx]), "exact_to_f32": float(mine[first][idx])}
    for t in diff[1:]:
        n = producer[t]
        if n.op_type in QUANTIZERS:
            u = n.input[0]
            if u in mine and u in ref_ctx:
                exp.quantizer = _crossing(gm, n, np.asarray(ref_ctx[u]).reshape(mine[u].shape), mine[u],
                                          np.asarray(ref_ctx[t]).reshape(mine[t].shape), mine[t])
                if exp.quantizer["boundary_between"]:
                    exp.kind = "accumulator-crossed-quantizer"
                return exp
    if not any(producer[t].op_type in QUANTIZERS for t in diff):
        exp.kind = "accumulator-float-tail"
    return exp


def _crossing(gm, node, ref_in, gold_in, ref_out, gold_out) -> dict:
    """The quantizer ``node`` gave other outputs for the reference's and the golden model's inputs: the
    same quantizer (the reference's own kernel) run on both inputs reproduces both outputs, so a rounding
    boundary lies between the two inputs."""
    from codesign.graph.reference import NodeKernel, elem_types, model_consts, model_opsets

    consts = getattr(gm, "fconst", None) or model_consts(gm.model)
    k = NodeKernel(node, {i: consts[i] for i in node.input[1:] if i}, model_opsets(gm.model), elem_types(gm.model))
    q_ref, q_gold = np.asarray(k(ref_in)[0]), np.asarray(k(gold_in)[0])
    qi = tuple(int(i) for i in np.argwhere(ref_out != gold_out)[0])
    same = bool(np.array_equal(q_ref, ref_out) and np.array_equal(q_gold, gold_out))
    return {"node": node.name, "index": qi, "reference_in": float(ref_in[qi]), "golden_in": float(gold_in[qi]),
            "reference_out": float(ref_out[qi]), "golden_out": float(gold_out[qi]),
            "boundary_between": same and bool(ref_in[qi] != gold_in[qi])}
