"""An epilogue as a function of the integer accumulator, evaluated by the reference's own kernels.

:func:`epilogue_codes_fn` returns ``f(acc) -> codes`` for one layer: the accumulator values (one column
per output channel) become the float32 tensor the graph's float ops see (:func:`codesign.graph.reference.to_f32`
with the channel's real scale), run through the graph's own nodes from the accumulator tensor to the
quantizer's output (:class:`codesign.graph.reference.Subgraph`, execute_onnx's kernels), and the
quantizer's float output is turned back into the stored code of the output format (a bipolar output:
the bit ``b`` of ``2b - 1``). :mod:`codesign.rtl.frontend.thresholds` finds and proves the thresholds.
"""

from __future__ import annotations

import numpy as np
import onnx

from codesign.errors import UnsupportedError
from codesign.graph.reference import Subgraph, to_f32
from codesign.rtl.formats import FixedFormat
from codesign.rtl.frontend.graph import Epilogue
from codesign.rtl.frontend.thresholds import CodesFn


def _attr(node, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(onnx.helper.get_attribute_value(a))
    return default


def output_codes(ep: Epilogue, y: np.ndarray, consts: dict[str, np.ndarray]) -> np.ndarray:
    """Stored codes of the quantizer's float output ``y``."""
    q, fmt = ep.quant.node, ep.quant.fmt
    y = np.asarray(y, dtype=np.float64)
    if q.op_type == "MultiThreshold":
        osc, ob = _attr(q, "out_scale", 1.0), _attr(q, "out_bias", 0.0)
        cnt = np.rint((y - ob) / osc).astype(np.int64)
        return cnt if fmt.bipolar else cnt + int(ob / osc)
    if fmt.bipolar:
        return (y > 0).astype(np.int64)  # +-scale -> 1 / 0
    sc = np.asarray(consts[q.input[1]], dtype=np.float64)
    return np.rint(y / sc).astype(np.int64)


def epilogue_codes_fn(model: onnx.ModelProto, ep: Epilogue, scale: np.ndarray, ch_axis: int, rank: int,
                      where: str) -> CodesFn:
    """``f(acc)`` for accumulators ``acc`` (L, C): channel ``c`` at real scale ``scale[c]``; the accumulator
    tensor ``ep.src`` has ``rank`` axes (batch included) with its channels on ``ch_axis``."""
    from codesign.graph.reference import model_consts

    try:
        sub = Subgraph(model, [ep.src], [ep.dst])
    except ValueError as e:
        raise UnsupportedError(f"{where}: the epilogue {ep.src} -> {ep.dst} is not a function of the accumulator "
                               f"alone ({e})") from None
    consts = model_consts(model)
    scale = np.asarray(scale, dtype=np.float64)
    ax = ch_axis % rank

    def f(acc: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc, dtype=np.int64)
        n, c = acc.shape
        shape = [n] + [1] * (rank - 1)
        shape[ax] = c
        x = to_f32(acc, scale[None, :]).reshape(shape)
        y = np.asarray(sub({ep.src: x})[ep.dst])
        if y.size != n * c:
            raise UnsupportedError(f"{where}: the epilogue changes the tensor's shape ({x.shape} -> {y.shape})")
        return output_codes(ep, y.reshape(n, c), consts)

    return f


def format_of(ep: Epilogue) -> FixedFormat:
    return ep.quant.fmt
