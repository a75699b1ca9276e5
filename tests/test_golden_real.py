"""The golden model on real QONNX models made elsewhere, against the reference (qonnx ``execute_onnx``
on the cleaned model, one vector at a time), compared exactly.

Float-scale models: the reference accumulates MatMul in float32, the golden model exactly; every
mismatching vector must be explained by :func:`codesign.golden.explain.explain` (the reference's
accumulator differs from the exact sum times the scale, and that moved a value across a quantizer's
rounding boundary, or reached the output through float ops only). The counts are printed (``-s``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from golden_models import const, make_model, quant_node
from onnx import helper
from real_models import (
    JET_FILE,
    TFC_FILE,
    annotated,
    bnn_pynq,
    float_cnn,
    float_mlp,
    mnist_like,
    on_grid,
    reference_contexts,
    threshold_graph,
)

from codesign.errors import UnsupportedError
from codesign.golden import GoldenModel
from codesign.golden.explain import explain
from codesign.graph.clean import clean_qonnx

N = 1000


def compare(gm: GoldenModel, x: np.ndarray, label: str) -> dict:
    """Golden model vs the reference on ``x``, compared exactly (the golden model's float32 outputs, or
    its exact float64 reals where there is no host post-processing): every mismatching vector must be
    explained by :func:`explain` (counts printed)."""
    y = np.asarray(gm.run(x)).reshape(len(x), -1)
    ref_model = gm.model if gm.mixed else clean_qonnx(gm.model)  # exact mode keeps the graph as given
    oname = ref_model.graph.output[0].name
    counts = {"vectors": len(x), "mismatches": 0, "crossed-quantizer": 0, "float-tail": 0}
    for i, ctx in enumerate(reference_contexts(ref_model, x)):
        r = np.asarray(ctx[oname], dtype=np.float32).reshape(-1)
        assert r.shape == y[i].shape
        if np.array_equal(r.astype(y.dtype), y[i]):
            continue
        counts["mismatches"] += 1
        e = explain(gm, x[i:i + 1], ctx)
        assert e.explained, f"{label}: vector {i} mismatch not explained: {e}"
        counts["crossed-quantizer" if "crossed" in e.kind else "float-tail"] += 1
    print(f"\n{label}: {json.dumps(counts)}")
    return counts


# ------------------------------------------------------------------------------------ real files
def test_tfc_2w2a_file():
    gm = GoldenModel(TFC_FILE)
    p = gm.partition
    assert gm.mixed and [n.op_type for n in p.pre] == ["Reshape", "Mul", "Sub", "Quant"]
    assert [n.op_type for n in p.post] == ["Sub", "Div", "Mul", "Add"]
    sp = gm.input_spec
    assert (sp.name, sp.shape, sp.bits, sp.narrow, sp.scale_exp, sp.host_pre) == ("Quant_4_out0", (784,), 2, True,
                                                                                  0, True)
    x = mnist_like(N, 0)
    assert compare(gm, x, "TFC_2W2A.onnx")["mismatches"] == 0
    # the host halves compose to run(): pre -> run_codes -> post
    codes = gm.preprocess(x[:50])
    yc, e = gm.run_codes(codes)
    assert e == 0 and np.array_equal(gm.postprocess(yc), gm.run(x[:50]))
    rg = gm.ranges()  # integer bounds of the core hold every traced code
    for name, (c, _scale) in gm.trace(x[:50]).items():
        assert rg[name][0] <= int(c.min()) and int(c.max()) <= rg[name][1], name


def test_jet_tagger_file():
    with pytest.raises(UnsupportedError, match="--input-precision"):
        GoldenModel(JET_FILE)
    gm = GoldenModel(JET_FILE, input_precision="ap_fixed<16,6>")
    sp = gm.input_spec
    assert (sp.name, sp.bits, sp.signed, sp.scale_exp, sp.host_pre) == ("global_in", 16, True, -10, False)
    assert [n.op_type for n in gm.partition.post] == ["Softmax"] and gm.core_output == "Add_3_out0"
    rng = np.random.default_rng(1)
    x = np.concatenate([gm.quantize_input(rng.normal(size=(N // 2, 16))), on_grid(gm, N - N // 2, 2)])
    assert compare(gm, x, "qkeras_jettagging.onnx ap_fixed<16,6>")["mismatches"] == 0
    # floor + saturation onto the grid
    q = gm.quantize_input(np.array([[0.00099, -0.00001, 40.0, -40.0] + [0.0] * 12]))
    assert q[0, :4].tolist() == [2.0**-10, -(2.0**-10), 32 - 2.0**-10, -32.0]


# ------------------------------------------------------------------------------------ brevitas bnn_pynq
@pytest.fixture(scope="module")
def bnn_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bnn")


# TFC_1W2A and SFC_1W1A (same layer kinds as the others, 47 s and 72 s) run with make test-slow
@pytest.mark.parametrize("name", ["TFC_1W1A", pytest.param("TFC_1W2A", marks=pytest.mark.slow), "TFC_2W2A",
                                  pytest.param("SFC_1W1A", marks=pytest.mark.slow)])
def test_bnn_pynq_fc(bnn_dir, name):
    gm = GoldenModel(bnn_pynq(name, bnn_dir, seed=3))
    assert gm.mixed and gm.input_spec.host_pre
    assert gm.input_spec.bipolar == (name.endswith("1A") and name[-2] == "1")
    bip = [n for n, i in gm.tensor_info().items() if i and i["bipolar"]]
    assert bool(bip) == name.endswith("W1A")
    assert compare(gm, mnist_like(N, 4), name)["mismatches"] == 0


@pytest.mark.slow
def test_bnn_pynq_cnv(bnn_dir):
    gm = GoldenModel(bnn_pynq("CNV_1W1A", bnn_dir, seed=5))
    x = mnist_like(N, 6, shape=(3, 32, 32))
    assert compare(gm, x, "CNV_1W1A")["mismatches"] == 0


# ------------------------------------------------------------------------------------ float scales
@pytest.mark.parametrize("variant", ["tensor", "channel", "input"])
def test_brevitas_float_scales(tmp_path, variant):
    gm = GoldenModel(float_mlp(variant, tmp_path, seed=7))
    kinds = {i["kind"] for i in gm.tensor_info().values() if i}
    assert "fscale" in kinds
    assert gm.input_spec.host_pre == (variant == "input")
    rng = np.random.default_rng(8)
    x = rng.normal(scale=2.0, size=(N, 16))
    x[:20] = rng.normal(scale=50.0, size=(20, 16))  # saturating inputs
    x = gm.quantize_input(x)
    c = compare(gm, x, f"float-scale MLP ({variant})")
    assert c["mismatches"] == c["crossed-quantizer"] + c["float-tail"]


def test_reduction_axis_scale_refused(tmp_path):
    """A weight scale that varies along the reduction axis cannot give one accumulator scale."""
    from golden_models import const, make_model, quant_node

    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 0.3, 0, 8, 1, 0, "ROUND", inits))
    inits.append(const("W", np.ones((4, 3))))
    nodes.append(quant_node("W", "Wq", np.array([[0.1], [0.2], [0.3], [0.4]]), 0, 8, 1, 0, "ROUND", inits))
    from onnx import helper

    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["y"], name="mm"))
    with pytest.raises(UnsupportedError, match="MatMul.*weight scale varies along the reduction axis"):
        GoldenModel(make_model(nodes, inits, (1, 4), (1, 3)))


# ------------------------------------------------------------------------------------ annotated inputs
def test_annotated_int8_input():
    gm = GoldenModel(annotated("INT8", seed=9))
    sp = gm.input_spec
    assert (sp.bits, sp.signed, sp.scale_exp, sp.bipolar, sp.source) == (8, True, 0, False, "finn_datatype INT8")
    assert not gm.mixed  # every node exact: the exact mode
    assert compare(gm, on_grid(gm, N, 10), "annotated INT8")["mismatches"] == 0


def test_annotated_bipolar_input():
    gm = GoldenModel(annotated("BIPOLAR", seed=11))
    sp = gm.input_spec
    assert (sp.bits, sp.bipolar, sp.code_min, sp.code_max) == (1, True, -1, 1)
    bq = next(t for t, (_node, op) in gm.producer.items() if op == "BipolarQuant")  # names of gm.model (cleaned)
    assert gm.input_spec.as_dict()["bipolar"] and gm.tensor_info()[bq]["bipolar"]
    x = on_grid(gm, N, 12)
    assert set(np.unique(x)) == {-1.0, 1.0}
    assert compare(gm, x, "annotated BIPOLAR")["mismatches"] == 0
    assert set(np.unique(gm.trace(x)[bq][0])) <= {-1, 1}


# ------------------------------------------------------------------------------------ CLI
def test_cli_input_precision(tmp_path):
    gm = GoldenModel(JET_FILE, input_precision="ap_fixed<16,6>")
    x = gm.quantize_input(np.random.default_rng(13).normal(size=(20, 16)))
    np.save(tmp_path / "x.npy", x)
    cmd = [sys.executable, "-m", "codesign", "golden", str(JET_FILE), "--inputs", str(tmp_path / "x.npy")]
    r = subprocess.run([*cmd, "--out", str(tmp_path / "y.npy"), "--input-precision", "ap_fixed<16,6>"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), gm.run(x))
    r = subprocess.run([*cmd, "--out", str(tmp_path / "y2.npy")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--input-precision" in lines[0] and "ap_fixed<16,6>" in lines[0]


def test_explain_finds_quantizer_crossings():
    """A quantizer as fine as float32's ulp after a float-scale MatMul: the reference's float32
    accumulation moves values across its rounding boundaries; every such mismatch is explained."""
    from golden_models import const, make_model, quant_node
    from onnx import helper

    rng = np.random.default_rng(14)
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 0.1, 0, 8, 1, 0, "ROUND", inits))
    inits.append(const("W", rng.normal(scale=4.0, size=(32, 6))))
    nodes.append(quant_node("W", "Wq", 0.07, 0, 8, 1, 1, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["acc"], name="mm"))
    nodes.append(quant_node("acc", "y", 3e-7, 0, 26, 1, 0, "ROUND", inits))
    gm = GoldenModel(make_model(nodes, inits, (1, 32), (1, 6)))
    x = rng.normal(scale=6.0, size=(300, 32)).astype(np.float32)
    c = compare(gm, x, "ulp-fine quantizer after a float-scale MatMul")
    assert c["crossed-quantizer"] > 0 and c["mismatches"] == c["crossed-quantizer"]


# ------------------------------------------------------------------------------------ reference helpers
def test_to_f32_rounds_the_exact_product_once():
    from fractions import Fraction

    from codesign.graph.reference import to_f32

    rng = np.random.default_rng(15)
    s32 = rng.random(64).astype(np.float32)
    c = rng.integers(-(2**23), 2**23, size=(50, 64))
    # one float32 scale: exactly a float32 multiply (what qonnx's Quant output is)
    assert np.array_equal(to_f32(c, s32), c.astype(np.float32) * s32)
    # a product of two float32 scales (an accumulator): the exact value's nearest float32
    s = s32.astype(np.float64) * rng.random(64).astype(np.float32)
    y = to_f32(c, s)
    for i, j in zip(rng.integers(0, 50, 300), rng.integers(0, 64, 300), strict=True):
        exact = Fraction(int(c[i, j])) * Fraction(float(s[j]))
        lo, hi = np.nextafter(y[i, j], np.float32(-np.inf)), np.nextafter(y[i, j], np.float32(np.inf))
        err = abs(Fraction(float(y[i, j])) - exact)
        assert err <= abs(Fraction(float(lo)) - exact) and err <= abs(Fraction(float(hi)) - exact)
    # an exact float32 midpoint is resolved by the part the float64 product lost
    assert to_f32(np.array([2**24 + 1]), 1.0)[0] == 2**24 and to_f32(np.array([2**24 + 1]), 1 + 2**-52)[0] == 2**24 + 2


@pytest.mark.parametrize("mode", ["ROUND", "FLOOR", "CEIL", "UP", "DOWN", "HALF_UP", "HALF_DOWN"])
def test_quant_codes_match_qonnx(mode):
    from qonnx.custom_op.general.intquant import int_quant

    from codesign.graph.reference import quant_codes

    rng = np.random.default_rng(16)
    x = np.concatenate([rng.normal(scale=3, size=400), (rng.integers(-20, 20, 200) + 0.5) * 0.37]).astype(np.float32)
    for scale, zp, bits, signed, narrow in [(np.float32(0.37), np.float32(0), 4, 1, 0),
                                            (np.float32(0.37), np.float32(3), 5, 0, 1),
                                            (np.float32(2.0**-3), np.float32(-2), 8, 1, 1),
                                            (np.float32(0.1), np.float32(0), 1, 1, 0)]:
        codes = quant_codes(x, scale, zp, bits, signed, narrow, mode)
        ref = int_quant(x, scale, zp, np.float32(bits), signed, narrow, mode).astype(np.float32)
        assert np.array_equal((codes * scale).astype(np.float32), ref)


def test_brevitas_float_cnn(tmp_path):
    gm = GoldenModel(float_cnn(tmp_path, seed=17))
    ops = {i["op"] for i in gm.tensor_info().values() if i and i["kind"] == "fscale"}
    assert {"Conv", "MaxPool"} <= ops  # the accumulator and the pool keep integer codes at float scales
    x = np.random.default_rng(18).normal(scale=2.0, size=(300, 1, 8, 8)).astype(np.float32)
    c = compare(gm, x, "float-scale CNN")
    assert c["mismatches"] == c["crossed-quantizer"] + c["float-tail"]
    rg, tr = gm.ranges(), gm.trace(x[:100])
    for name, (codes, _scale) in tr.items():
        assert rg[name][0] <= int(codes.min()) and int(codes.max()) <= rg[name][1], name


def test_multithreshold_and_float_average():
    gm = GoldenModel(threshold_graph(seed=19))
    assert [n.op_type for n in gm.partition.post] == ["AveragePool"]
    mt = next(t for t, (_node, op) in gm.producer.items() if op == "MultiThreshold")
    assert gm.tensor_info()[mt]["min"] == -3 and gm.tensor_info()[mt]["max"] == 3
    x = on_grid(gm, 300, 20)
    assert compare(gm, x, "MultiThreshold + AveragePool/3")["mismatches"] == 0


def test_golden_cli_host_halves(tmp_path):
    """``golden_cli`` on a model with host pre-/post-processing: --codes writes the core output codes of
    the preprocessed input, --trace the integer tensors with their scales."""
    from codesign.golden import golden_cli

    gm = GoldenModel(TFC_FILE)
    x = mnist_like(20, 21)
    np.save(tmp_path / "x.npy", x)
    s = golden_cli(TFC_FILE, tmp_path / "x.npy", tmp_path / "y.npy", False, tmp_path / "tr")
    assert np.array_equal(np.load(tmp_path / "y.npy"), gm.run(x))
    idx = json.loads((tmp_path / "tr" / "index.json").read_text())
    assert s["core_output"] == gm.core_output and idx[gm.core_output]["scale_exp"] == 0
    s = golden_cli(TFC_FILE, tmp_path / "x.npy", tmp_path / "yc.npy", True)
    assert np.array_equal(np.load(tmp_path / "yc.npy"), gm.run_codes(gm.preprocess(x))[0])
    assert s["output_scale_exp"] == 0


# ------------------------------------------------------------------------------------ golden stage, float tail
def _float_tail_model(seed: int = 0) -> onnx.ModelProto:
    """Quantized input -> MatMul with float-scale 4-bit weights (no output quantizer) -> float bias: the
    graph output is the float32 accumulator plus bias, as in a Brevitas net without an output quantizer."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes = [quant_node("x", "xq", 0.0371, 0, 8, 1, 0, "ROUND", inits),
             quant_node("w", "wq", 0.1173, 0, 4, 1, 1, "ROUND", inits),
             helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"),
             helper.make_node("Add", ["acc", "b"], ["y"], name="bias")]
    inits += [const("w", rng.normal(size=(64, 10))), const("b", rng.normal(size=(10,)))]
    return make_model(nodes, inits, (1, 64), (1, 10))


def test_golden_stage_float_tail_within_the_stated_bound(tmp_path):
    """A float tail after the last quantizer: the quantizer grids are compared exactly, the output within
    2^-14 of its magnitude; a golden output off by more than that counts as a mismatch."""
    from codesign.golden.compare import TAIL_RTOL, compare, qonnx_reference

    m = _float_tail_model()
    onnx.save(m, tmp_path / "m.onnx")
    gm = GoldenModel(tmp_path / "m.onnx")
    assert gm.mixed and [n.op_type for n in gm.partition.post] == ["Add"]
    x = gm.quantize_input(np.random.default_rng(1).normal(scale=3, size=(1000, 64)))
    out, ref = gm.run(x), qonnx_reference(tmp_path / "m.onnx", x)
    f = compare(gm, x, out, ref)
    assert f["qonnx_mismatches"] == 0 and f["qonnx_grid_mismatches"] == 0
    assert "float tail" in f["qonnx_compare"] and 0 < f["qonnx_tail_max_abs_diff"] <= TAIL_RTOL
    bad = out.copy()
    bad[7, 3] += 0.01
    assert compare(gm, x, bad, ref)["qonnx_mismatches"] == 1
