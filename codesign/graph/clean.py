"""Cleaning of QONNX files made elsewhere, before :func:`codesign.graph.analysis.partition`.

:func:`clean_model` is qonnx's ``cleanup_model`` (old ``finn`` domains converted on load, shapes inferred,
constants folded, the flatten ``Shape/Gather/Unsqueeze/Concat`` subgraph folded into a constant
``Reshape``, quantizer transposes folded into their initializers, readable tensor names) plus two
rewrites that make every accumulator a node of its own, so that the integer core can end at it:

* ``Gemm`` -> ``MatMul`` (+ ``Add`` of its bias, ``Mul`` by ``alpha``/``beta``; qonnx ``GemmToMatMul``;
  a bias-less ``Gemm`` is rewritten here, as qonnx's pass needs a bias);
* a ``Conv`` bias -> an ``Add`` after the ``Conv`` (qonnx ``ExtractBiasFromConv``).

The reference of a cleaned model is ``execute_onnx`` on that cleaned model: the golden model and the
RTL frontend both see these same nodes and tensor names.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import helper

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


def clean_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A cleaned copy of ``model`` (see the module docstring); the input is left unchanged."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.extract_conv_bias import ExtractBiasFromConv
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mw = cleanup_model(ModelWrapper(onnx.ModelProto.FromString(model.SerializeToString())))
        ops = {(n.op_type, n.domain) for n in mw.graph.node}
        if ("Gemm", "") in ops or ("Conv", "") in ops:
            _split_biasless_gemm(mw.model)
            mw = mw.transform(GemmToMatMul()).transform(ExtractBiasFromConv())
            mw = cleanup_model(mw)
    return mw.model


def is_clean(model: onnx.ModelProto) -> bool:
    """True when ``model`` looks like the output of a cleaning (codesign's export stage or
    :func:`clean_model`): every node output has a shape, no old ``finn`` domain, no Gemm, no shape
    arithmetic left to fold."""
    g = model.graph
    known = {vi.name for vi in list(g.value_info) + list(g.output) + list(g.input)}
    for n in g.node:
        if n.op_type in ("Gemm", "Shape", "Gather", "Concat", "Unsqueeze") and n.domain in STANDARD:
            return False
        if n.domain.startswith("finn") or any(o not in known for o in n.output):
            return False
    return True
