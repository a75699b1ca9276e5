"""The golden model against qonnx ``execute_onnx``: exact on every quantizer grid, a stated bound on a
float tail.

Whatever a graph computes on a quantizer grid (every ``Quant``/``BipolarQuant``/``MultiThreshold`` output,
and the graph output when a quantizer makes it) is compared **exactly**. A graph whose output is not on a
quantizer grid (no output quantizer: the last MatMul's accumulator with a float scale, a float bias, a
Softmax or TensorNorm on the host) ends in a float tail. There the golden model and the reference part
by design: the golden model computes the accumulator exactly on integers and rounds once to float32,
while the reference's float32 MatMul/Conv rounds every product and partial sum. Those outputs are
compared within

    ``|golden - reference| <= TAIL_RTOL * max(1, max |reference| of the vector)``

``TAIL_RTOL = 2**-14`` is a stated tolerance, not a proof: float32 summation of K terms is off by at most
about ``K * 2**-24`` of the sum of the terms' magnitudes (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., sec. 4.2), so the bound holds while ``K * sum|terms| / max(1, |output|)`` stays under
1,024. A vector over the bound counts as a mismatch; the largest difference seen and the number of
vectors whose top class differs are reported beside it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from codesign.graph.analysis import QUANTIZERS

TAIL_RTOL = 2.0**-14


def count_mismatches(a: np.ndarray, b: np.ndarray) -> int:
    """Number of vectors (first axis) whose real values differ anywhere."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        return len(a)
    return int(np.sum(np.any(a != b, axis=1)))


def _quiet_onnxruntime() -> None:
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:  # pragma: no cover
        pass


def _execute_batched(mw, x: np.ndarray, full: bool) -> dict[str, np.ndarray] | None:
    """``execute_onnx`` on the whole batch (ChangeBatchSize + InferShapes), or None where qonnx cannot do
    it (e.g. some channels-last conv graphs)."""
    from qonnx.core.onnx_exec import execute_onnx

    try:
        from qonnx.transformation.change_batchsize import ChangeBatchSize
        from qonnx.transformation.infer_shapes import InferShapes

        mb = mw.transform(ChangeBatchSize(len(x))).transform(InferShapes())
        ctx = execute_onnx(mb, {mb.graph.input[0].name: x.astype(np.float32)}, return_full_exec_context=full)
        if np.asarray(ctx[mb.graph.output[0].name]).shape[0] == len(x):
            return ctx
    except Exception:  # noqa: BLE001 - the caller falls back to one vector at a time
        pass
    return None


def reference_context(model: onnx.ModelProto | str | Path, x: np.ndarray, full: bool = True,
                      batched: bool = True) -> dict[str, np.ndarray]:
    """qonnx ``execute_onnx`` on ``model`` for the batch ``x``: every tensor (``full``) or the graph
    outputs, batched where qonnx can change the batch size (and ``batched``), else one vector at a time
    and concatenated."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    _quiet_onnxruntime()
    x = np.asarray(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mw = ModelWrapper(model if isinstance(model, onnx.ModelProto) else str(model))
        if batched and len(x) > 1:
            ctx = _execute_batched(mw, x, full)
            if ctx is not None:
                return ctx
        iname = mw.graph.input[0].name
        ctxs = [execute_onnx(mw, {iname: x[i:i + 1].astype(np.float32)}, return_full_exec_context=full)
                for i in range(len(x))]
    if not ctxs:
        return {o.name: np.zeros((0,)) for o in mw.graph.output}
    return {k: np.concatenate([np.asarray(c[k]) for c in ctxs]) for k in ctxs[0]
            if np.ndim(ctxs[0][k]) > 0 and np.shape(ctxs[0][k])[0] == 1}


def qonnx_reference(model: onnx.ModelProto | str | Path, x: np.ndarray, batched: bool = True) -> np.ndarray:
    """qonnx ``execute_onnx``'s first graph output (float64) for ``x``, batched if the graph allows, else
    one vector at a time."""
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    return np.asarray(reference_context(m, x, full=False, batched=batched)[m.graph.output[0].name],
                      dtype=np.float64)


def qonnx_reference_batched(model: onnx.ModelProto | str | Path, x: np.ndarray) -> np.ndarray | None:
    """``qonnx_reference`` on the whole batch at once, or None where qonnx cannot change the batch size."""
    from qonnx.core.modelwrapper import ModelWrapper

    _quiet_onnxruntime()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mw = ModelWrapper(model if isinstance(model, onnx.ModelProto) else str(model))
        ctx = _execute_batched(mw, np.asarray(x), full=False)
    return None if ctx is None else np.asarray(ctx[mw.graph.output[0].name], dtype=np.float64)


def grid_mismatches(gm, x: np.ndarray, ctx: dict[str, np.ndarray] | None = None) -> tuple[int, int]:
    """(vectors, tensors): vectors where any quantizer output of the golden model's graph differs from
    the reference's, and how many quantizer outputs were compared. ``ctx``: the reference's full context
    for ``x`` where the caller has it (else it is computed)."""
    ctx = reference_context(gm.model, x) if ctx is None else ctx
    trace = gm.trace(x)
    bad = np.zeros(len(x), dtype=bool)
    compared = 0
    for node in gm.model.graph.node:
        t = node.output[0]
        if node.op_type not in QUANTIZERS or t not in trace or t not in ctx:
            continue
        codes, _ = trace[t]
        mine = np.asarray(gm.real_value(codes, t), dtype=np.float64).reshape(len(x), -1)
        ref = np.asarray(ctx[t], dtype=np.float64).reshape(len(x), -1)
        bad |= np.any(mine != ref, axis=1) if mine.shape == ref.shape else True
        compared += 1
    return int(bad.sum()), compared


def on_quantizer_grid(gm) -> bool:
    """Whether the graph output is a quantizer's output (then it is compared exactly)."""
    if not gm.mixed:
        return True
    if gm.partition.post:
        return False
    o = gm.output_names[0]
    return any(n.op_type in QUANTIZERS and n.output[0] == o for n in gm.model.graph.node)


def tail_differences(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per vector: the largest absolute difference of ``out`` from the reference's ``ref``, whether it exceeds
    the float-tail bound ``TAIL_RTOL * max(1, max |ref|)``; and how many vectors' top class differs."""
    a = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
    b = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    diff = np.abs(a - b).max(axis=1)
    over = diff > TAIL_RTOL * np.maximum(1.0, np.abs(b).max(axis=1))
    return diff, over, int(np.sum(np.argmax(a, axis=1) != np.argmax(b, axis=1)))


def compare(gm, x: np.ndarray, out: np.ndarray, ref: np.ndarray,
            ctx: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Figures of the golden outputs ``out`` against the reference's ``ref`` (see the module docstring).
    ``qonnx_mismatches`` counts vectors that differ on a quantizer grid or exceed the float-tail bound.
    ``ctx``: the reference's full context for ``x``, if the caller has it (a float tail needs it)."""
    exact = count_mismatches(out, ref)
    if exact == 0 or on_quantizer_grid(gm):
        return {"qonnx_mismatches": exact, "qonnx_compare": "exact"}
    grid, tensors = grid_mismatches(gm, x, ctx)
    diff, over, flips = tail_differences(out, ref)
    return {
        "qonnx_mismatches": int(np.sum(over) + grid),
        "qonnx_compare": f"quantizer grids exact ({tensors} tensors), float tail within 2^-14 of max(1, |output|)",
        "qonnx_grid_mismatches": grid,
        "qonnx_tail_over_bound": int(over.sum()),
        "qonnx_tail_max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "qonnx_tail_exact_vectors": int(np.sum(diff == 0)),
        "qonnx_top_class_differs": flips,
    }
