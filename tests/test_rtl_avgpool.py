"""RTL backend: AveragePool / GlobalAveragePool followed by a QONNX Trunc (or a Quant).

A power-of-two window is a sum (an ``avgpool`` accumulator at ``input scale - log2(window)``) and the
Trunc is its requantization: ``round_half_even(x / scale)`` then ``round_mode(. / 2^t)`` (+ saturation
for Trunc v2), one requantizer when the two roundings merge exactly, two otherwise. Graphs are built
with onnx.helper (Brevitas exports GlobalAveragePool as ReduceMean, which the golden model lacks) and
verified with cocotb + Verilator against the golden model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from rtl_helpers import (
    QDOMAIN,
    assert_ir_matches_golden,
    const,
    lint,
    make_model,
    needs_verilator,
    quant_node,
    verify_ok,
)

from codesign.errors import UnsupportedError
from codesign.rtl import generate, lower

# name: (pool op, pool attrs, input shape, trunc spec or ("quant", ...), head)
#   trunc spec v2: (scale_exp, out_scale_exp, out_bits, signed, mode); v1: ("v1", scale_exp, in_bw, out_bw, mode)
CASES = {
    "avg2x2_v2_round_sat": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), (1, 3, 4, 4),
                            (-5, -3, 4, 1, "ROUND"), False),
    "gap_v2_floor_unsigned": ("GlobalAveragePool", {}, (1, 2, 4, 4), (-7, -4, 5, 0, "FLOOR"), False),
    "avg_pad_v1_half_up": ("AveragePool", dict(kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0],
                                               count_include_pad=1), (1, 2, 3, 3), ("v1", -5, 8, 6, "HALF_UP"), False),
    "double_rounding": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), (1, 2, 4, 4),
                        (-4, -2, 4, 1, "FLOOR"), False),
    "left_shift": ("AveragePool", dict(kernel_shape=[1, 2], strides=[1, 2]), (1, 2, 2, 4), (-4, -5, 8, 1, "CEIL"),
                   False),
    "avg1d_quant": ("AveragePool", dict(kernel_shape=[4], strides=[2]), (1, 2, 10), ("quant", -4, 6, "HALF_DOWN"),
                    False),
    "gap_head": ("GlobalAveragePool", {}, (1, 3, 2, 4), (-6, -3, 6, 1, "ROUND_TO_ZERO"), True),
    # Conv -> Relu -> Quant -> GlobalAveragePool -> Trunc -> Flatten -> MatMul + bias
    "conv_gap_head": ("GlobalAveragePool", {}, (1, 2, 2, 4), (-7, -3, 6, 1, "HALF_UP"), "conv"),
}


def pool_graph(name: str) -> onnx.ModelProto:
    op, attrs, shape, tr, head = CASES[name]
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    src = "xq"
    if head == "conv":  # 3x3 same-padding conv to 3 channels, relu, u5 at 2^-4
        rng = np.random.default_rng(1)
        inits.append(const("CW", rng.normal(scale=0.3, size=(3, shape[1], 3, 3))))
        nodes.append(quant_node("CW", "CWq", 2.0**-5, 0, 6, 1, 1, "ROUND", inits, name="cwq"))
        nodes.append(helper.make_node("Conv", ["xq", "CWq"], ["c"], name="conv", pads=[1, 1, 1, 1],
                                      kernel_shape=[3, 3]))
        nodes.append(helper.make_node("Relu", ["c"], ["cr"], name="relu"))
        nodes.append(quant_node("cr", "cq", 2.0**-4, 0, 5, 0, 0, "ROUND", inits, name="cq"))
        src = "cq"
        shape_p = (1, 3, *shape[2:])
    else:
        shape_p = shape
    nodes.append(helper.make_node(op, [src], ["ap"], name="pool", **attrs))
    qonnx_opset = 2
    if tr[0] == "quant":
        nodes.append(quant_node("ap", "t", 2.0 ** tr[1], 0, tr[2], 1, 1, tr[3], inits, name="q"))
    elif tr[0] == "v1":
        qonnx_opset = 1
        _, se, ibw, obw, mode = tr
        inits += [const("ts", 2.0**se), const("tz", 0.0), const("tib", float(ibw)), const("tob", float(obw))]
        nodes.append(helper.make_node("Trunc", ["ap", "ts", "tz", "tib", "tob"], ["t"], domain=QDOMAIN, name="trunc",
                                      rounding_mode=mode))
    else:
        se, oe, bits, signed, mode = tr
        inits += [const("ts", 2.0**se), const("tz", 0.0), const("tib", 16.0), const("tos", 2.0**oe),
                  const("tob", float(bits))]
        nodes.append(helper.make_node("Trunc", ["ap", "ts", "tz", "tib", "tos", "tob"], ["t"], domain=QDOMAIN,
                                      name="trunc", rounding_mode=mode, signed=signed, narrow=0))
    # output shape of the pool
    sp = shape[2:]
    if op == "GlobalAveragePool":
        osp = [1] * len(sp)
    else:
        k, s = attrs["kernel_shape"], attrs["strides"]
        p = attrs.get("pads", [0] * (2 * len(k)))
        osp = [(sp[d] + p[d] + p[d + len(k)] - k[d]) // s[d] + 1 for d in range(len(k))]
    oshape = (1, shape_p[1], *osp)
    if not head:
        nodes.append(helper.make_node("Identity", ["t"], ["y"], name="id"))
        return make_model(nodes, inits, shape, oshape, qonnx_opset=qonnx_opset)
    n = int(np.prod(oshape))
    nodes.append(helper.make_node("Flatten", ["t"], ["f"], name="flat"))
    rng = np.random.default_rng(0)
    inits.append(const("W", rng.normal(scale=0.4, size=(n, 4))))
    nodes.append(quant_node("W", "Wq", 2.0**-5, 0, 6, 1, 1, "ROUND", inits, name="wq"))
    inits.append(const("B", rng.normal(scale=0.2, size=4)))
    nodes.append(quant_node("B", "Bq", 2.0**-8, 0, 16, 1, 0, "ROUND", inits, name="bq"))
    nodes.append(helper.make_node("MatMul", ["f", "Wq"], ["mm"], name="mm"))
    nodes.append(helper.make_node("Add", ["mm", "Bq"], ["y"], name="bias"))
    return make_model(nodes, inits, shape, (1, 4), qonnx_opset=qonnx_opset)


@pytest.fixture
def case_path(tmp_path):
    def get(name: str):
        p = tmp_path / f"{name}.onnx"
        onnx.save(pool_graph(name), str(p))
        return p

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_lower_pool_trunc_matches_golden(case_path, name):
    p = case_path(name)
    m = lower(p)
    pools = [ly for ly in m.layers if ly.kind == "avgpool"]
    assert len(pools) == 1 and pools[0].requant is not None
    k = int(np.prod(pools[0].kernel))
    if CASES[name][4] != "conv":
        assert pools[0].acc_fmt.scale_exp == m.input_fmt.scale_exp - (k.bit_length() - 1)
    if name == "double_rounding":  # Trunc's half-even rounding, then its FLOOR: two requantizers
        assert [ly.kind for ly in m.layers] == ["avgpool", "requant"]
        assert pools[0].requant.rounding == "ROUND" and m.layers[1].requant.rounding == "FLOOR"
    elif not CASES[name][4]:
        assert [ly.kind for ly in m.layers] == ["avgpool"]
    if name == "left_shift":
        assert pools[0].requant.shift < 0
    assert_ir_matches_golden(p, m, n=3000)


@needs_verilator
@pytest.mark.parametrize("name,kw", [(n, {}) for n in CASES] + [
    ("conv_gap_head", {"strategy": "resource", "reuse": 4, "pipeline": 2, "debug_taps": True}),
    ("avg2x2_v2_round_sat", {"strategy": "resource", "reuse": 8, "pipeline": 0, "axis_slice": True}),
])
def test_pool_trunc_rtl_verifies(case_path, tmp_path, name, kw):
    p = case_path(name)
    d = tmp_path / "rtl"
    iface = generate(p, d, **kw)
    lint(d, iface)
    verify_ok(d, p, vectors=3000)


def _bad(op, attrs, follow="trunc"):
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    src = "xq"
    if op:
        nodes.append(helper.make_node(op, ["xq"], ["ap"], name="pool", **attrs))
        src = "ap"
    inits += [const("ts", 2.0**-5), const("tz", 0.0), const("tib", 16.0), const("tos", 2.0**-3), const("tob", 6.0)]
    nodes.append(helper.make_node("Trunc", [src, "ts", "tz", "tib", "tos", "tob"], ["y"], domain=QDOMAIN,
                                  name="trunc", rounding_mode="ROUND"))
    return make_model(nodes, inits, (1, 2, 6, 6), (1, 2, 2, 2))


def test_pool_errors():
    with pytest.raises(UnsupportedError, match="pool.*window of 9 elements.*power-of-two"):
        lower(_bad("AveragePool", dict(kernel_shape=[3, 3], strides=[3, 3])))
    with pytest.raises(UnsupportedError, match="pool.*count_include_pad=0"):
        lower(_bad("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1])))
    with pytest.raises(UnsupportedError, match="trunc.*only supported directly after AveragePool"):
        lower(_bad(None, {}))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_default_strides_are_one(tmp_path, op):
    """ONNX pools without a ``strides`` attribute step by 1 (as the golden model reads them)."""
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    nodes.append(helper.make_node(op, ["xq"], ["y"], name="pool", kernel_shape=[2, 2]))
    p = tmp_path / "pool.onnx"
    onnx.save(make_model(nodes, inits, (1, 2, 4, 4), (1, 2, 3, 3)), str(p))
    m = lower(p)
    assert m.layers[0].stride == (1, 1) and m.layers[0].out_shape == (2, 3, 3)
    assert_ir_matches_golden(p, m, n=500)
