"""The RTL frontend as a pipeline: one-to-one import, each named pass alone, the IR passes, the typed IR's
JSON round trip, and the threshold search and proof (the exact realization of float epilogues)."""

from __future__ import annotations

import numpy as np
import pytest
from golden_models import const, make_model, quant_node
from onnx import helper

from codesign.errors import UnsupportedError
from codesign.rtl import ir
from codesign.rtl.formats import FixedFormat, Thresholds
from codesign.rtl.frontend import FUSION_PASSES, build_model, import_onnx, lower, run_passes
from codesign.rtl.frontend import graph as G
from codesign.rtl.frontend.passes import (
    CheckFused,
    FoldTrunc,
    FuseBias,
    FuseEpilogue,
    FuseQuant,
    FuseRelu,
    QuantToRequant,
    ReluToRequant,
)
from codesign.rtl.frontend.thresholds import find_thresholds


def _mlp_graph(relu: bool = True, bias: bool = True, out_quant: bool = True, bn: bool = False,
               act_scale: float = 2**-4):
    """x -> Quant -> MatMul -> [Add bias] -> [BatchNorm] -> [Relu] -> [Quant] (a hand-built QONNX graph)."""
    rng = np.random.default_rng(3)
    inits = [const("w", rng.integers(-60, 61, (6, 4)) * 2.0**-6), const("bias", rng.integers(-200, 200, 4) * 2.0**-12)]
    nodes = [quant_node("x", "xq", 2**-6, 0, 8, inits=inits, name="qin"),
             quant_node("w", "wq", 2**-6, 0, 8, inits=inits, name="qw"),
             helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm")]
    cur = "acc"
    if bias:
        nodes += [quant_node("bias", "bq", 2**-12, 0, 32, inits=inits, name="qb"),
                  helper.make_node("Add", [cur, "bq"], ["accb"], name="add")]
        cur = "accb"
    if bn:
        inits += [const("g", [1.5, -0.7, 1e-3, 2.0]), const("be", [0.1, 0.2, -0.3, 0.0]),
                  const("mu", [0.05, -0.1, 0.0, 0.2]), const("var", [0.5, 1.0, 2.0, 0.3])]
        nodes.append(helper.make_node("BatchNormalization", [cur, "g", "be", "mu", "var"], ["bn"], name="bn"))
        cur = "bn"
    if relu:
        nodes.append(helper.make_node("Relu", [cur], ["r"], name="relu"))
        cur = "r"
    if out_quant:
        nodes.append(quant_node(cur, "y", act_scale, 0, 8, signed=0, inits=inits, name="qout"))
    else:
        nodes.append(helper.make_node("Identity", [cur], ["y"], name="id"))
    return make_model(nodes, inits, (1, 6), (1, 4))


def test_import_is_one_op_per_node():
    g = import_onnx(_mlp_graph())
    # the input quantizer and the weight / bias quantizers are folded; MatMul, Add, Relu, Quant stay one op each
    assert [type(op).__name__ for op in g.ops] == ["LinearOp", "BiasOp", "ReluOp", "QuantOp"]
    assert [op.node for op in g.ops] == ["mm", "add", "relu", "qout"]


@pytest.mark.parametrize("passes,kinds", [
    ((FuseBias(),), ["LinearOp", "ReluOp", "QuantOp"]),
    ((FuseBias(), FuseRelu()), ["LinearOp", "QuantOp"]),
    ((FuseBias(), FuseRelu(), FuseQuant()), ["LinearOp"]),
    ((FuseBias(), ReluToRequant(), QuantToRequant()), ["LinearOp", "RequantOp", "RequantOp"]),
    ((FuseBias(), ReluToRequant(), FuseQuant()), ["LinearOp", "RequantOp"]),  # relu layer + its quantizer
])
def test_each_fusion_pass_alone(passes, kinds):
    g = run_passes(import_onnx(_mlp_graph()), passes)
    assert [type(op).__name__ for op in g.ops] == kinds
    lin = g.ops[0]
    assert lin.bias is not None and lin.out == ("accb" if len(kinds) == 3 and kinds[1] == "ReluOp" else lin.out)


def test_fold_trunc_and_check_fused_refuse_what_is_left():
    g = import_onnx(_mlp_graph(relu=False, out_quant=False))
    g.ops.append(G.TruncOp("t", "Trunc", [g.ops[-1].out], "t_out", (4,), (4,), ["t"]))
    with pytest.raises(UnsupportedError, match="Trunc is only supported directly after AveragePool"):
        run_passes(g, (FuseBias(), FoldTrunc(), CheckFused()))


def test_fuse_epilogue_takes_batchnorm_relu_quant_into_thresholds():
    m = _mlp_graph(bn=True)
    g = run_passes(import_onnx(m), (FuseBias(), FuseEpilogue()))
    assert len(g.ops) == 1 and g.ops[0].epilogue is not None and g.ops[0].epilogue.src == "accb"
    model = build_model(run_passes(import_onnx(m), FUSION_PASSES))
    th = model.layers[0].requant
    assert isinstance(th, Thresholds) and th.proof["method"] == "exhaustive" and th.proof["mismatches"] == 0
    assert -1 in th.dir  # the negative gamma makes channel 1 decreasing


def test_float_epilogue_matches_the_reference_on_every_input():
    """IR with thresholds == the graph's own float kernels, input by input (BN with negative and tiny gamma)."""
    from codesign.graph.reference import Subgraph

    m = _mlp_graph(bn=True)
    model = lower(m)
    ramp = np.arange(-128, 128, dtype=np.int64)[:, None].repeat(6, axis=1)
    x = np.clip(ramp * np.array([1, -1, 1, 1, -1, 1]), -128, 127)
    x = np.vstack([x, np.random.default_rng(0).integers(-128, 128, (2000, 6))])
    ref = Subgraph(m, ["x"], ["y"])({"x": (x * 2.0**-6).astype(np.float32)})["y"]
    assert np.array_equal(model.run(x), np.rint(ref / 2**-4).astype(np.int64))


def test_ir_json_round_trip():
    model = lower(_mlp_graph(bn=True))
    back = ir.model_from_json(model.to_json())
    x = np.random.default_rng(1).integers(-128, 128, (500, 6))
    assert np.array_equal(back.run(x), model.run(x)) and back.summary() == model.summary()


# ---- thresholds ------------------------------------------------------------------------------------
def _step_fn(kind: str):
    def f(acc):
        a = acc.astype(np.float64)
        if kind == "inc":
            return np.clip(np.floor(a / 7.0 + 0.3), -3, 4).astype(np.int64)
        if kind == "dec":
            return np.clip(np.floor(-a / 5.0), -4, 3).astype(np.int64)
        if kind == "jump":  # two codes at one accumulator step
            return np.clip(np.floor(a / 0.5), 0, 15).astype(np.int64)
        return np.abs(acc) // 9  # not monotone
    return f


@pytest.mark.parametrize("kind", ["inc", "dec", "jump"])
def test_thresholds_are_exact_on_every_value(kind):
    lo, hi = np.array([-50, -3, 0]), np.array([60, 40, 7])
    th = find_thresholds(_step_fn(kind), lo, hi, FixedFormat(4, True, 0), "test")
    for c in range(3):
        a = np.arange(lo[c], hi[c] + 1)
        assert np.array_equal(th.apply(a[:, None], np.array([c]))[:, 0], _step_fn(kind)(a[:, None].repeat(3, 1))[:, c])
    assert th.proof["method"] == "exhaustive" and th.proof["values_checked"] == int(np.sum(hi - lo + 1))


def test_thresholds_sampled_proof_on_huge_ranges():
    lo, hi = np.array([-(1 << 30)]), np.array([1 << 30])
    th = find_thresholds(lambda a: np.clip(a // (1 << 27), -8, 7), lo, hi, FixedFormat(4, True, 0), "big")
    assert "random" in th.proof["method"] and len(th.t[0]) == 15


def test_non_monotone_epilogue_is_refused():
    with pytest.raises(UnsupportedError, match="not a monotone"):
        find_thresholds(_step_fn("abs"), np.array([-40]), np.array([40]), FixedFormat(4, False, 0), "layer x")


def test_float_op_without_quantizer_inside_the_core_is_refused():
    """A Sigmoid between two layers with no quantizer after it: not thresholdable, named in the error."""
    inits = [const("w", np.eye(4) * 0.25)]
    nodes = [quant_node("x", "q", 2**-4, 0, 8, inits=inits, name="qin"),
             quant_node("w", "wq", 2**-4, 0, 8, inits=inits, name="qw"),
             helper.make_node("MatMul", ["q", "wq"], ["a"], name="mm1"),
             helper.make_node("Sigmoid", ["a"], ["sg"], name="sig"),
             helper.make_node("MatMul", ["sg", "wq"], ["a2"], name="mm2"),
             quant_node("a2", "y", 2**-4, 0, 8, inits=inits, name="qout")]
    with pytest.raises(UnsupportedError, match="sig"):
        lower(make_model(nodes, inits, (1, 4), (1, 4)))


def test_mulshift_form_equals_the_thresholds():
    from codesign.rtl.frontend.thresholds import mulshift_form

    def f(acc):  # an affine map on a binary grid (float64-exact): a multiply-shift form exists
        return np.clip(np.floor(acc * np.array([[13 / 256, -11 / 512]]) + 0.375), -40, 200).astype(np.int64)

    lo, hi = np.array([-5000, -20000]), np.array([9000, 25000])
    th = find_thresholds(f, lo, hi, FixedFormat(9, True, 0), "t")
    ms = mulshift_form(th, lo, hi)
    assert ms is not None and ms.m[0] > 0 > ms.m[1]
    x = np.stack([np.random.default_rng(0).integers(a, b + 1, 20000) for a, b in zip(lo, hi, strict=True)], axis=1)
    assert np.array_equal(ms.apply(x, np.arange(2)), f(x))
    # a quantizer's round-half-even ties are no floor of an affine function: no multiply-shift form
    th2 = find_thresholds(lambda a: np.clip(np.round(a / 2.0), 0, 100).astype(np.int64), np.array([0]), np.array([150]),
                          FixedFormat(8, False, 0), "ties")
    assert mulshift_form(th2, np.array([0]), np.array([150])) is None


@pytest.mark.needs("iverilog")
@pytest.mark.parametrize("mode", ["thresholds", "mulshift"])
def test_epilogue_forms_are_bit_exact_in_simulation(tmp_path, mode):
    """An 8-bit BatchNorm epilogue (255 levels per channel) as comparators or as multiply-shift: same codes."""
    from codesign.rtl import generate
    from codesign.verify import run_codes

    rng = np.random.default_rng(3)
    inits = [const("w", rng.integers(-60, 61, (12, 6)) * 2.0**-6), const("g", rng.uniform(-2, 2, 6)),
             const("be", rng.uniform(-1, 1, 6)), const("mu", rng.uniform(-.2, .2, 6)),
             const("var", rng.uniform(.3, 2, 6))]
    nodes = [quant_node("x", "xq", 2**-6, 0, 8, inits=inits, name="qin"),
             quant_node("w", "wq", 2**-6, 0, 8, inits=inits, name="qw"),
             helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"),
             helper.make_node("BatchNormalization", ["acc", "g", "be", "mu", "var"], ["bn"], name="bn"),
             quant_node("bn", "y", 2**-5, 0, 8, signed=1, inits=inits, name="qout", rounding="FLOOR")]
    m = lower(make_model(nodes, inits, (1, 12), (1, 6)))
    d = tmp_path / mode
    generate(m, d, epilogue=mode)
    text = (d / "fc1.v").read_text()
    assert ("multiply-shift" in text) == (mode == "mulshift")
    x = np.vstack([np.full((1, 12), -128), np.full((1, 12), 127), rng.integers(-128, 128, (600, 12))])
    y, _ = run_codes(d, x)
    assert np.array_equal(y, m.run(x))


@pytest.mark.parametrize("layout,kernel,stride,pads,fmt", [
    ("NHWC", (3, 3), (1, 1), (1, 1, 1, 1), FixedFormat(4, True, -2)),
    ("NCHW", (3, 2), (2, 1), (0, 1, 2, 0), FixedFormat(3, False, 0)),
    ("NHWC", (3,), (2,), (1, 0), FixedFormat(2, True, 0, narrow=True)),
    ("NHWC", (3, 3), (1, 1), (), FixedFormat(1, False, 0, bipolar=True)),
])
def test_linear_acc_bounds_equal_the_term_walk(layout, kernel, stride, pads, fmt):
    """Dense/Conv accumulator bounds (two passes over constant inputs, split by weight sign) equal the generic
    walk over every term (``AccLayer.acc_bounds``), padding, strides, layouts and zero weights included."""
    rng = np.random.default_rng(len(kernel) * 10 + stride[0])
    nd, c, o = len(kernel), 3, 4
    sp = (7, 6)[:nd]
    osp = tuple((sp[d] + (pads[d] + pads[d + nd] if pads else 0) - kernel[d]) // stride[d] + 1 for d in range(nd))
    in_shape, out_shape = ((*sp, c), (*osp, o)) if layout == "NHWC" else ((c, *sp), (o, *osp))
    w = rng.integers(-5, 6, (o, *kernel, c) if layout == "NHWC" else (o, c, *kernel))
    w[rng.random(w.shape) < 0.3] = 0
    acc = FixedFormat(16, True, fmt.scale_exp)
    conv = ir.Conv(name="c", in_shape=in_shape, out_shape=out_shape, in_fmt=fmt, out_fmt=acc, onnx_output="y",
                   acc_fmt=acc, weights=w, bias=rng.integers(-9, 10, o), kernel=kernel, stride=stride, pads=pads,
                   layout=layout)
    assert conv.acc_bounds() == ir.AccLayer.acc_bounds(conv)
    dw = rng.integers(-7, 8, (10, 5))
    dense = ir.Dense(name="d", in_shape=(10,), out_shape=(5,), in_fmt=fmt, out_fmt=acc, onnx_output="y",
                     acc_fmt=acc, weights=dw, bias=None)
    assert dense.acc_bounds() == ir.AccLayer.acc_bounds(dense)
