"""The one QONNX cleaning function, :func:`clean_qonnx`, used by the export stage, the CLI (models made
elsewhere), the golden model's mixed mode, the RTL test fixtures, the tests and the benchmarks.

Steps, each one what the later stages need:

1. ``cleanup_model`` (qonnx): old ``finn`` domains converted on load, shapes inferred, constants
   folded (Quant nodes kept; the flatten ``Shape/Gather/Unsqueeze/Concat`` subgraph becomes a constant
   ``Reshape``), quantizer transposes folded into their initializers, unique node names, readable
   tensor names (the graph is the same on every export of the same model).
2. Channels-last, only when asked (``channels_last=True``, or ``None`` and the graph has a Conv; the
   export stage and the test fixtures of codesign's own conv models): ``ConvertToChannelsLastAndClean``
   turns the NCHW conv/pool nodes into qonnx's channels-last ops and removes the transposes it can, so a
   pixel's channels are the innermost dimension (the layout of the golden model, the RTL and hls4ml).
   ``input_channels_last`` makes the graph input NHWC too (the export stage: ``test_x.npy`` is in that
   layout); otherwise one Transpose stays at the input and the graph takes PyTorch's NCHW input. qonnx
   moves transposes through ``Quant`` but not through ``BipolarQuant``: a ``Transpose`` pair around a
   ``BipolarQuant`` with a scalar scale (element-wise) is removed (:func:`drop_transposes_around_bipolar`).
   Models made elsewhere keep their layout (the RTL frontend reads NCHW and NHWC convs).
3. Every accumulator becomes a node of its own, so the integer core can end at it: a ``Gemm`` without
   bias becomes [Transpose] + ``MatMul`` [+ ``Mul`` by alpha] (qonnx's ``GemmToMatMul`` needs a bias);
   ``GemmToMatMul`` rewrites the others into ``MatMul`` + ``Add`` (its warning about opset 9 is silenced:
   the export stage checks the cleaned graph against PyTorch); a standard-domain ``Conv``'s bias becomes
   an ``Add`` after it (qonnx ``ExtractBiasFromConv``; that pass reads NCHW shapes, so it is not run on
   channels-last convs, whose bias stays on the conv).
4. ``cleanup_model`` again (shapes and names of the new nodes), then ``rounding_mode`` attributes as
   upper-case QONNX names (:func:`qonnx_rounding`: Brevitas may write ``ROUND_TO_ZERO`` or ``HALF_EVEN``).

The reference of a cleaned model is ``execute_onnx`` on that cleaned model: the golden model and the
RTL frontend both see these same nodes and tensor names.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

STANDARD = ("", "ai.onnx")


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _split_biasless_gemm(model: onnx.ModelProto) -> bool:
    """Rewrite each ``Gemm`` without ``C`` into [Transpose] + ``MatMul`` [+ ``Mul`` by alpha], in place."""
    g = model.graph
    changed = False
    for idx, n in enumerate(list(g.node)):
        if n.op_type != "Gemm" or n.domain not in STANDARD or (len(n.input) > 2 and n.input[2]):
            continue
        new, a, b, out = [], n.input[0], n.input[1], n.output[0]
        for flag, name, which in (("transA", a, "A"), ("transB", b, "B")):
            if int(_attr(n, flag, 0)):
                t = f"{n.name or 'Gemm'}_{which}T_{idx}"
                new.append(helper.make_node("Transpose", [name], [t], perm=[1, 0]))
                a, b = (t, b) if which == "A" else (a, t)
        alpha = float(_attr(n, "alpha", 1.0))
        mm_out = out if alpha == 1.0 else f"{out}_unscaled"
        new.append(helper.make_node("MatMul", [a, b], [mm_out], name=n.name))
        if alpha != 1.0:
            c = f"{n.name or 'Gemm'}_alpha_{idx}"
            g.initializer.append(onnx.numpy_helper.from_array(np.asarray(alpha, dtype=np.float32), c))
            new.append(helper.make_node("Mul", [mm_out, c], [out]))
        pos = list(g.node).index(n)
        g.node.remove(n)
        for k, m in enumerate(new):
            g.node.insert(pos + k, m)
        changed = True
    return changed


def qonnx_rounding(mode: str) -> str:
    """Brevitas rounding name -> upper-case QONNX name (``ROUND_TO_ZERO`` is QONNX ``DOWN``)."""
    m = mode.upper().split(".")[-1]
    return {"ROUND_TO_ZERO": "DOWN", "HALF_EVEN": "ROUND"}.get(m, m)


def drop_transposes_around_bipolar(mw: ModelWrapper) -> ModelWrapper:
    """Remove every ``Transpose(p) -> BipolarQuant(scalar scale) -> Transpose(p^-1)`` chain's two transposes
    (each with a single consumer): the sign is element-wise, so the chain equals the ``BipolarQuant`` alone.
    Modifies and returns ``mw``."""
    g = mw.graph
    for bq in [n for n in g.node if n.op_type == "BipolarQuant"]:
        t1, t2s = mw.find_producer(bq.input[0]), mw.find_consumers(bq.output[0]) or []
        if t1 is None or t1.op_type != "Transpose" or len(t2s) != 1 or t2s[0].op_type != "Transpose":
            continue
        t2 = t2s[0]
        p1 = list(next(a.ints for a in t1.attribute if a.name == "perm"))
        p2 = list(next(a.ints for a in t2.attribute if a.name == "perm"))
        scale = mw.get_initializer(bq.input[1]) if len(bq.input) > 1 else None
        if ([p1[i] for i in p2] != list(range(len(p1))) or len(mw.find_consumers(t1.output[0]) or []) != 1
                or (scale is not None and np.asarray(scale).size != 1)):
            continue
        bq.input[0], bq.output[0] = t1.input[0], t2.output[0]
        g.node.remove(t1)
        g.node.remove(t2)
    return mw


def clean_qonnx(model: str | Path | onnx.ModelProto, *, channels_last: bool | None = False,
                input_channels_last: bool = True) -> onnx.ModelProto:
    """The cleaned copy of ``model`` (a path or an ``onnx.ModelProto``, not modified) that every later
    stage reads; the steps are in the module docstring. ``channels_last``: convert conv graphs to
    channels-last (``None``: when the graph has a Conv); ``input_channels_last``: the graph input too."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.extract_conv_bias import ExtractBiasFromConv
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    proto = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) \
        else onnx.ModelProto.FromString(model.SerializeToString())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mw = cleanup_model(ModelWrapper(proto))
        if channels_last is None:
            channels_last = any(n.op_type == "Conv" for n in mw.graph.node)
        if channels_last:
            from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean

            mw = mw.transform(ConvertToChannelsLastAndClean(make_input_channels_last=input_channels_last))
            mw = cleanup_model(drop_transposes_around_bipolar(mw))
        ops = {(n.op_type, n.domain) for n in mw.graph.node}
        if ("Gemm", "") in ops or ("Conv", "") in ops:
            _split_biasless_gemm(mw.model)
            mw = mw.transform(GemmToMatMul())
            if not channels_last:
                mw = mw.transform(ExtractBiasFromConv())
            mw = cleanup_model(mw)
    for n in mw.graph.node:
        for a in n.attribute:
            if a.name == "rounding_mode":
                a.s = qonnx_rounding(a.s.decode()).encode()
    return mw.model


def is_clean(model: onnx.ModelProto) -> bool:
    """True when ``model`` looks like the output of a cleaning (codesign's export stage or
    (:func:`clean_qonnx`): every node output has a shape, no old ``finn`` domain, no Gemm, no shape
    arithmetic left to fold."""
    g = model.graph
    known = {vi.name for vi in list(g.value_info) + list(g.output) + list(g.input)}
    for n in g.node:
        if n.op_type in ("Gemm", "Shape", "Gather", "Concat", "Unsqueeze") and n.domain in STANDARD:
            return False
        if n.domain.startswith("finn") or any(o not in known for o in n.output):
            return False
    return True
