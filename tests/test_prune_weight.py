"""Fine-grained (weight) pruning and the energy-aware schedule: masks keep pruned weights at exactly zero
through QAT fine-tuning and the Brevitas -> QONNX export, the energy estimate drops, and a failed
energy-aware step is retried on the same layer with half the step before the layer is frozen."""

import copy

import numpy as np
import pytest
import torch

from codesign import config, data, energy, prune
from codesign.errors import CodesignError, UnsupportedError
from codesign.rtl.ir import Linear

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    from codesign.train import train_model

    cfg = config.load("digits_mlp", {"train.epochs": 4, "model.hidden": [16], "rtl.strategy": "latency",
                                     "rtl.reuse": 1})
    ds = data.load(cfg.data, 0)
    model, _ = train_model(cfg, ds, progress=False)
    return cfg, ds, model


def _pj(model, strategy="latency"):
    ops, io = energy.from_model(model)
    return energy.estimate(ops, strategy=strategy, io_bits=io)["pj_per_inference"]


def test_masks_survive_qat_finetuning(trained):
    cfg, ds, model = trained
    m = copy.deepcopy(model)
    w0 = m.fc1.weight.detach().clone()
    masks = prune.weight_masks(m)
    masks["fc1"] = torch.rand(masks["fc1"].shape, generator=torch.Generator().manual_seed(0)) > 0.6
    prune.finetune_masked(m, ds, 3, cfg.train.lr, cfg, 0, masks)
    w = m.fc1.weight.detach()
    assert torch.all(w[~masks["fc1"]] == 0)  # exactly 0 in float, after Adam steps
    assert not torch.equal(w[masks["fc1"]], w0[masks["fc1"]])  # the kept weights did train
    assert prune.masked_nonzero_codes(m, masks) == 0
    assert not m.fc1._forward_pre_hooks and not m.fc1.weight._backward_hooks  # hooks removed after training


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_weight_pruning_exports_exact_zero_codes(trained, tmp_path, scope):
    """prune_model(granularity='weight'): same shapes, masked weights are code 0 in the exported QONNX
    (the RTL IR the generator reads), golden == execute_onnx, and the parallel energy estimate drops."""
    from codesign.export import export_qonnx_model
    from codesign.golden import GoldenModel
    from codesign.golden.compare import count_mismatches, qonnx_reference
    from codesign.rtl import lower

    cfg, ds, model = trained
    small, scfg, rep = prune.prune_model(model, cfg, ds, criterion="l1", sparsity=0.7, schedule="agp", steps=2,
                                         finetune_epochs=2, scope=scope, granularity="weight")
    assert rep["granularity"] == "weight" and rep["masked_nonzero_codes"] == 0
    assert small.fc1.weight.shape == model.fc1.weight.shape and scfg.model.hidden == [16]
    assert rep["sparsity"] == pytest.approx(0.7, abs=0.01)
    if scope == "layer":
        assert [la["masked"] for la in rep["layers"]] == [round(0.7 * 1024), round(0.7 * 160)]
    assert _pj(small) < 0.6 * _pj(model)
    if scope == "global":
        return  # one export is enough
    export_qonnx_model(small, small.input_shape, tmp_path / "raw.onnx", tmp_path / "clean.onnx")
    ir = lower(tmp_path / "clean.onnx")
    dense = [ly for ly in ir.layers if isinstance(ly, Linear)]
    for ly, name in zip(dense, small.weight_layers(), strict=True):
        codes = prune.weight_codes(small, name).numpy()
        assert np.array_equal(ly.weights.T, codes)  # the exported codes are the Brevitas codes
        masked = (small.get_submodule(name).weight.detach() == 0).numpy()
        assert np.all(ly.weights.T[masked] == 0)
        assert np.count_nonzero(ly.weights) == rep["layers"][small.weight_layers().index(name)]["nonzero_after"]
    gm = GoldenModel(tmp_path / "clean.onnx")
    x = gm.quantize_input(ds.x_test[:32])
    assert count_mismatches(gm.run(x), qonnx_reference(tmp_path / "clean.onnx", x)) == 0


def test_weight_pruning_pot_codes_are_zero(tmp_path):
    from codesign.train import train_model

    cfg = config.load("digits_mlp_pot", {"train.epochs": 2, "model.hidden": [8], "data.n_samples": 400})
    ds = data.load(cfg.data, 0)
    model, _ = train_model(cfg, ds, progress=False)
    small, _, rep = prune.prune_model(model, cfg, ds, sparsity=0.5, finetune_epochs=1, granularity="weight")
    assert rep["masked_nonzero_codes"] == 0
    from codesign.export import export_qonnx_model
    from codesign.rtl import lower

    export_qonnx_model(small, small.input_shape, tmp_path / "raw.onnx", tmp_path / "clean.onnx")
    fc1 = next(ly for ly in lower(tmp_path / "clean.onnx").layers if isinstance(ly, Linear))
    assert np.all(fc1.weights.T[(small.fc1.weight.detach() == 0).numpy()] == 0)
    assert np.count_nonzero(fc1.weights) <= 0.5 * fc1.weights.size


def test_weight_criteria_and_refusals(trained):
    cfg, ds, model = trained
    for crit in ("l2", "random", "taylor", "energy"):
        _, _, rep = prune.prune_model(model, cfg, ds, criterion=crit, sparsity=0.5, finetune_epochs=0,
                                      granularity="weight")
        assert rep["masked_nonzero_codes"] == 0 and rep["sparsity"] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(UnsupportedError, match="granularity 'weight'"):
        prune.prune_model(model, cfg, ds, criterion="fpgm", sparsity=0.5, finetune_epochs=0, granularity="weight")


def test_weight_budget_mode(trained):
    cfg, ds, model = trained
    e0 = _pj(model)
    small, _, rep = prune.prune_model(model, cfg, ds, budget_pj=0.5 * e0, finetune_epochs=1, granularity="weight")
    assert rep["budget_after"] <= 0.5 * e0 + 1e-6 and rep["masked_nonzero_codes"] == 0
    folded = cfg.model_copy(update={"rtl": cfg.rtl.model_copy(update={"strategy": "resource", "reuse": 4})})
    with pytest.raises(CodesignError, match="folded"):
        prune.prune_model(model, folded, ds, budget_pj=0.9 * _pj(model, "resource"), finetune_epochs=0,
                          granularity="weight")


def test_energy_aware_weight_granularity(trained):
    cfg, ds, model = trained
    small, _, rep = prune.energy_aware_prune(model, cfg, ds, target_ratio=1.8, granularity="weight", local_epochs=1,
                                             finetune_epochs=1, guard="loss", local_loss=10.0, step_fraction=0.3)
    assert rep["reached"] and rep["energy_ratio"] >= 1.8 and rep["masked_nonzero_codes"] == 0
    assert small.fc1.weight.shape == model.fc1.weight.shape
    assert rep["history"][1]["layer"] == "fc1"  # the layer with the most energy goes first
    assert rep["energy_after_pj"] == pytest.approx(_pj(small))


def _fake_guard(monkeypatch, passes):
    """Validation metrics that pass the guard iff ``passes(model)``; the unpruned model passes."""
    monkeypatch.setattr(prune.energy_aware, "val_metrics", lambda m, ds: (1.0, 0.0) if passes(m) else (0.0, 9.0))


@pytest.mark.parametrize("guard", ["accuracy", "loss"])
def test_unit_step_retried_with_half_the_step(trained, monkeypatch, guard):
    """16 units, step 50%: 16->8 fails, 16->12 fails, 16->14 passes; then 14->12 fails, 14->13 passes;
    13->12 fails at the smallest step (1 unit): fc1 frozen at 13 units."""
    cfg, ds, model = trained
    _fake_guard(monkeypatch, lambda m: m.fc1.weight.shape[0] >= 13)
    msgs = []
    small, scfg, rep = prune.energy_aware_prune(model, cfg, ds, target_ratio=10, step_fraction=0.5, local_epochs=0,
                                                finetune_epochs=0, rounds=1, guard=guard, progress=msgs.append)
    assert scfg.model.hidden == [13] and rep["frozen"] == ["fc1"] and not rep["reached"]
    assert [h["kept"] for h in rep["history"][1:]] == [14, 13]
    assert [m.split(":")[1].split(" units")[0].strip() for m in msgs] == [
        "fc1 16->8", "fc1 16->12", "fc1 16->14", "fc1 14->12", "fc1 14->13", "fc1 13->12"]
    assert sum("retry" in m for m in msgs) == 3 and "frozen" in msgs[-1]
    assert rep["masked_vs_removed_mismatches"] == 0


def test_weight_step_retried_with_half_the_step(trained, monkeypatch):
    cfg, ds, model = trained
    limit = 300  # fc1 (1024 weights) may lose at most 300 of them
    _fake_guard(monkeypatch, lambda m: int((m.fc1.weight == 0).sum()) <= limit)
    msgs = []
    small, _, rep = prune.energy_aware_prune(model, cfg, ds, target_ratio=10, granularity="weight", step_fraction=0.5,
                                             local_epochs=0, finetune_epochs=0, rounds=1, progress=msgs.append)
    assert any("retry" in m for m in msgs) and "fc1" in rep["frozen"]
    masked = rep["layers"][0]["masked"]
    assert limit - 0.01 * 1024 <= masked <= limit  # halved down to ~1% of the layer
    assert rep["layers"][1]["masked"] > 0  # fc2 is pruned once fc1 is frozen


def test_flow_with_weight_energy_aware_prune(tmp_path):
    """codesign flow with the prune stage (energy-aware, weight granularity) -> export -> golden -> energy."""
    from codesign import flow
    from codesign.run import RunDir

    cfg = config.load("digits_mlp", {"train.epochs": 3, "data.n_samples": 400, "model.hidden": [8],
                                     "rtl.strategy": "latency", "rtl.reuse": 1, "prune.enabled": True,
                                     "prune.granularity": "weight", "prune.schedule": "energy_aware",
                                     "prune.energy_ratio": 1.5, "prune.local_epochs": 1, "prune.finetune_epochs": 1,
                                     "prune.guard": "loss", "prune.local_loss": 10.0})
    rd = flow.run_flow(cfg, tmp_path / "run", until="golden")
    rep = RunDir(tmp_path / "run").report()
    assert rep["prune"]["granularity"] == "weight" and rep["prune"]["masked_nonzero_codes"] == 0
    assert rep["prune"]["energy_ratio"] >= 1.5
    assert rep["export"]["torch_vs_qonnx_mismatches"] == 0 and rep["golden"]["qonnx_mismatches"] == 0
    figs = energy.run_stage(rd, cfg)  # from the exported QONNX (RTL IR): the same layers as the pruning loop saw
    from codesign.train import load_model

    ops, io = energy.from_model(load_model(rd.path("prune", "model.pt")))
    loop = energy.estimate(ops, strategy="latency", io_bits=io)
    # same terms; the IR knows the real output width of the last layer (the model estimate assumes 32 bits)
    assert figs["per_layer"]["fc1"] == pytest.approx(loop["per_layer"]["fc1"], rel=1e-6)
    assert figs["pj_per_inference"] == pytest.approx(loop["pj_per_inference"], rel=0.05)


def test_config_rejects_bad_prune_options():
    from codesign.errors import ConfigError

    with pytest.raises(ConfigError, match="prune.granularity"):
        config.load("digits_mlp", {"prune.granularity": "channel"})
    with pytest.raises(ConfigError, match="prune.energy_ratio"):
        config.load("digits_mlp", {"prune.energy_ratio": 0.5})
