"""QAT for the layers of real QONNX models: binary (+-1) weights and activations exported as ``BipolarQuant``,
float (non-power-of-two) weight and activation scales, BatchNorm kept as ``BatchNormalization``, float
pre-processing before the input quantizer. Each trains a tiny model for a few epochs and exports it; PyTorch
and qonnx ``execute_onnx`` agree (bit for bit with power-of-two scales, within the float32 rounding bound of
the output layer with float scales); the tfc_w2a2-style model lowers to the RTL IR, whose integer run equals
``execute_onnx`` at the integer core's output."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from codesign import config, data, export, quant, train
from codesign.graph.analysis import is_po2
from codesign.run import RunDir

torch.set_num_threads(1)

TFC_W2A2 = {"data.resize": 28, "data.scale": "unit", "model.hidden": [16, 16], "model.batchnorm": True,
            "model.input_affine": [2.0, -1.0], "quant.weight": {"scheme": "ternary"},
            "quant.act": {"bits": 2, "signed": True, "narrow": True}, "train.lr": 0.01}


def _trained(name: str, over: dict, epochs: int = 3):
    cfg = config.load(name, {"data.n_samples": 400, "train.epochs": epochs, "train.float_epochs": 0,
                             "train.patience": 0, **over})
    ds = data.load(cfg.data, cfg.seed)
    model, hist = train.train_model(cfg, ds, progress=False)
    return cfg, ds, model, hist


def _export(model, ds, tmp_path, n: int = 80):
    clean = tmp_path / "model.onnx"
    export.export_qonnx_model(model, model.input_shape, tmp_path / "raw.onnx", clean)
    x = quant.graph_input(model, ds.x_test[:n]).double().numpy()
    return onnx.load(clean), export.validate(model, clean, x), x


def _scales(mp: onnx.ModelProto, op: str, weights: bool) -> list[np.ndarray]:
    """Scales of the ``op`` quantizers on initializers (weights) or on activations."""
    inits = {i.name: numpy_helper.to_array(i) for i in mp.graph.initializer}
    return [inits[n.input[1]] for n in mp.graph.node if n.op_type == op and (n.input[0] in inits) == weights]


@pytest.mark.parametrize("bipolar_input", [False, True])
def test_binary_weights_and_activations_export_as_bipolar_quant(tmp_path, bipolar_input):
    """BNN (Courbariaux 2016): +-1 weights and sign activations after BatchNorm (without it the clipped
    straight-through estimator passes no gradient through the wide +-1 sums)."""
    over = {"quant.weight": {"scheme": "binary"}, "quant.act": {"bits": 1, "signed": True},
            "model.hidden": [16, 16], "model.batchnorm": True, "train.lr": 0.02}
    if bipolar_input:
        over["quant.input"] = {"bits": 1, "signed": True}
    _, ds, m, hist = _trained("digits_mlp", over, epochs=6)
    assert hist["accuracy_quantized"] > 0.3
    for n in m.weight_layers():
        layer = getattr(m, n)
        qw = layer.quant_weight()
        assert set(torch.unique(qw.value).tolist()) == {-1.0, 1.0} and float(qw.scale) == 1.0
        assert float(layer.weight.abs().max()) <= 1.0  # BNN: latent weights clipped to the scale
    mp, v, x = _export(m, ds, tmp_path)
    ops = [n.op_type for n in mp.graph.node]
    assert len(_scales(mp, "BipolarQuant", weights=True)) == 3
    assert len(_scales(mp, "BipolarQuant", weights=False)) == 2 + bipolar_input
    assert "Relu" not in ops and ops.count("BatchNormalization") == 2
    assert v["tolerance"] == "exact" and v["mismatches"] == 0 and v["max_abs_diff"] == 0.0
    if bipolar_input:
        assert set(np.unique(x).tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("per_channel", [False, True])
def test_float_scales_export_as_non_po2_quant(tmp_path, per_channel):
    over = {"quant.weight": {"scheme": "float", "bits": 4, "per_channel": per_channel},
            "quant.act": {"bits": 4, "scale": "float"}, "model.hidden": [16]}
    _, ds, m, _ = _trained("digits_mlp", over)
    mp, v, _ = _export(m, ds, tmp_path)
    w_scales, a_scales = _scales(mp, "Quant", weights=True), _scales(mp, "Quant", weights=False)
    # weight and activation scales are floats, not powers of two; the input keeps its constant 2^-7
    assert any(s.size == 16 for s in w_scales) == per_channel
    assert sum(not is_po2(s) for s in a_scales) == 1 and any(np.all(s == 2.0**-7) for s in a_scales)
    assert sum(not is_po2(s) for s in w_scales) >= 2
    assert export.float_scaled(mp)
    assert v["tolerance"] == "float32 rounding bound" and v["mismatches"] == 0
    assert v["max_abs_diff"] < 1e-4
    bound = export.output_rounding_bound(m, quant.graph_input(m, ds.x_test[:80]).numpy())
    assert np.all(bound > 0) and np.all(np.abs(v["torch_out"] - v["qonnx_out"]) <= bound)
    # the tolerance is not vacuous: the output layer's weights one code off (where not clamped) are a mismatch
    inits = {i.name: i for i in mp.graph.initializer}
    mm = [n for n in mp.graph.node if n.op_type == "MatMul"][-1]
    wq = next(n for n in mp.graph.node if n.output[0] == mm.input[1])
    w, sc = numpy_helper.to_array(inits[wq.input[0]]).copy(), numpy_helper.to_array(inits[wq.input[1]])
    w += np.ravel(sc)[0] if sc.size == 1 else np.ravel(sc)
    inits[wq.input[0]].CopyFrom(numpy_helper.from_array(w, wq.input[0]))
    onnx.save(mp, tmp_path / "tampered.onnx")
    x = quant.graph_input(m, ds.x_test[:80]).double().numpy()
    assert export.validate(m, tmp_path / "tampered.onnx", x)["mismatches"] > 0


def test_batchnorm_is_kept_with_trained_parameters(tmp_path):
    _, ds, m, _ = _trained("digits_mlp", TFC_W2A2)
    assert m.order[:3] == ["pre", "inp", "fc1"] and m.order[3:5] == ["bn_fc1", "relu_fc1"]
    assert m.fc1.bias is None and m.fc2.bias is None and m.fc3.bias is not None
    mp, v, x = _export(m, ds, tmp_path)
    assert v["tolerance"] == "exact" and v["mismatches"] == 0 and v["max_abs_diff"] == 0.0
    nodes = list(mp.graph.node)
    chain, t = [], mp.graph.input[0].name
    for _ in range(3):  # the input's consumers: x * 2 - 1 before the input quantizer
        n = next(n for n in nodes if t in n.input)
        chain.append(n.op_type)
        t = n.output[0]
    assert chain == ["Mul", "Add", "Quant"]
    assert x.min() >= 0.0 and x.max() <= 1.0  # the graph input is the raw [0, 1] data
    inits = {i.name: numpy_helper.to_array(i) for i in mp.graph.initializer}
    bns = [n for n in nodes if n.op_type == "BatchNormalization"]
    assert len(bns) == 2
    for bn in bns:
        gamma, beta, mean, var = (inits[i] for i in bn.input[1:5])
        assert not np.allclose(gamma, 1) and not np.allclose(beta, 0)
        assert not np.allclose(mean, 0) and not np.allclose(var, 1)
        prod = next(n for n in nodes if bn.input[0] in n.output)
        assert prod.op_type == "MatMul"  # bias-less: beta is the bias
        cons = next(n for n in nodes if bn.output[0] in n.input)
        assert cons.op_type == "Quant" and not is_po2(gamma)
    # hidden activations: signed 2-bit narrow, {-1, 0, 1} x 2^k
    acts = [n for n in nodes if n.op_type == "Quant" and n.input[0] not in inits][1:]
    assert len(acts) == 2 and all(float(inits[n.input[3]]) == 2 for n in acts)


def test_conv_batchnorm_bipolar_stays_channels_last(tmp_path):
    over = {"model.channels": [4, 4], "model.batchnorm": True, "quant.act": {"bits": 1, "signed": True},
            "quant.weight": {"scheme": "fixed", "bits": 4}}
    _, ds, m, _ = _trained("digits_cnn", over, epochs=2)
    mp, v, _ = _export(m, ds, tmp_path, n=30)
    ops = [(n.op_type, n.domain) for n in mp.graph.node if n.op_type != "Quant"]
    assert "Transpose" not in [o for o, _ in ops]  # no transposes left around the BipolarQuant nodes
    assert [d for o, d in ops if o == "BatchNormalization"] == ["qonnx.custom_op.channels_last"] * 2
    assert [o for o, _ in ops].count("BipolarQuant") == 2
    assert v["tolerance"] == "exact" and v["mismatches"] == 0


def _core_io(onnx_path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, object]:
    """execute_onnx's values at the integer core's input (the first quantizer's output) and output."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    from codesign.graph.analysis import partition

    mw = ModelWrapper(str(onnx_path))
    part = partition(mw.model)
    mb = mw.transform(ChangeBatchSize(len(x))).transform(InferShapes())
    ctx = execute_onnx(mb, {part.graph_input: x.astype(np.float32)}, return_full_exec_context=True)
    return ctx[part.core_input], ctx[part.core_output], part


def _ir_vs_execute_onnx(onnx_path, x: np.ndarray):
    """Lower ``onnx_path``; run the IR on execute_onnx's core input codes; return (IR output codes, execute_onnx's
    core output codes, IR, partition). Host pre-processing, a dyadic core output (no host post-processing)."""
    from codesign.rtl import lower

    ir = lower(onnx_path)
    core_in, core_out, part = _core_io(onnx_path, x)
    assert ir.host_pre and not ir.host_post and ir.output_scales is None
    fin, fout = ir.input_fmt, ir.output_fmt
    codes = core_in.astype(np.float64).reshape(len(x), -1) * 2.0**-fin.scale_exp
    assert np.array_equal(codes, np.round(codes))
    ref = core_out.astype(np.float64).reshape(len(x), -1) * 2.0**-fout.scale_exp
    assert np.array_equal(ref, np.round(ref))
    return ir.run(codes.astype(np.int64)), ref.astype(np.int64), ir, part


def test_tfc_w2a2_style_lowers_and_rtl_ir_equals_execute_onnx(tmp_path):
    _, ds, m, _ = _trained("digits_mlp", {**TFC_W2A2, "model.hidden": [24, 24, 24]}, epochs=4)
    mp, v, x = _export(m, ds, tmp_path, n=200)
    assert v["mismatches"] == 0
    y, ref, ir, part = _ir_vs_execute_onnx(tmp_path / "model.onnx", x)
    assert [ly.kind for ly in ir.layers] == ["dense"] * 4
    assert [n.op_type for n in part.pre] == ["Mul", "Add", "Quant"] and not part.post
    assert np.array_equal(y, ref)
    # the core output is the graph output here: the IR's codes give the exported model's scores
    assert np.array_equal(y * 2.0**ir.output_fmt.scale_exp, v["qonnx_out"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tfc_w2a2", "tfc_w1a1"])
def test_zoo_tfc_trains_exports_and_lowers(tmp_path, name):
    """The zoo model as configured (seed 0): QAT accuracy, 0 export mismatches, and the RTL IR equal to
    execute_onnx at the core on the test set + 2,000 random raw inputs in [0, 1] (README figures)."""
    cfg = config.load(name)
    ds = data.load(cfg.data, cfg.seed)
    m, hist = train.train_model(cfg, ds, progress=False)
    assert hist["accuracy_quantized"] > 0.9
    x = np.concatenate([ds.x_test, np.random.default_rng(0).uniform(0, 1, (2000, 784)).astype(np.float32)])
    mp, v, x = _export(m, dataclasses.replace(ds, x_test=x), tmp_path, n=len(x))
    assert v["mismatches"] == 0 and v["tolerance"] == "exact"
    y, ref, ir, _ = _ir_vs_execute_onnx(tmp_path / "model.onnx", x)
    assert len(y) == len(ds.x_test) + 2000 and np.array_equal(y, ref)
    thresholds = [ly for ly in ir.layers if type(ly.requant).__name__ == "Thresholds"]
    assert len(thresholds) == 3 and (name != "tfc_w1a1" or ir.layers[1].in_fmt.bipolar)


def test_export_stage_takes_raw_inputs_with_preprocessing(tmp_path):
    cfg = config.load("digits_mlp", {"data.n_samples": 300, "train.epochs": 2, "train.patience": 0, **TFC_W2A2})
    rd = RunDir(tmp_path)
    train.run_stage(rd, cfg)
    fig = export.run_stage(rd, cfg)
    assert fig["torch_vs_qonnx_mismatches"] == 0 and fig["torch_vs_qonnx_tolerance"] == "exact"
    x = np.load(tmp_path / "export" / "test_x.npy")
    ds = data.load(cfg.data, cfg.seed)
    assert np.array_equal(x, ds.x_test.astype(np.float64))  # the graph computes x * 2 - 1 itself
    m = train.load_model(tmp_path / "train" / "model.pt")
    assert "pre" in m.order and isinstance(m.bn_fc1, torch.nn.BatchNorm1d)
