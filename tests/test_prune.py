"""Structured pruning: physical removal is exact (0 mismatches vs the masked model), layers shrink,
bad input names the layer."""

import numpy as np
import pytest
import torch

from codesign import config, data, prune
from codesign.errors import CodesignError, UnsupportedError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    from codesign.train import train_model

    cfg = config.load("digits_mlp", {"train.epochs": 8, "train.float_epochs": 0})
    ds = data.load(cfg.data, 0)
    model, _ = train_model(cfg, ds, progress=False)
    return cfg, ds, model


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "taylor", "random"])
def test_prune_half_exact_removal(trained, criterion):
    cfg, ds, model = trained
    small, scfg, rep = prune.prune_model(model, cfg, ds, criterion=criterion, sparsity=0.5, finetune_epochs=2)
    assert scfg.model.hidden == [16]
    assert small.fc1.weight.shape == (16, 64) and small.fc2.weight.shape == (10, 16)
    assert rep["masked_vs_removed_mismatches"] == 0
    assert rep["params_after"] < rep["params_before"]
    assert rep["accuracy_after"] > 0.8


def test_masked_equals_removed_on_conv():
    cfg = config.load("digits_cnn", {"train.epochs": 1})
    from codesign.quant import build_model

    model = build_model(cfg, (1, 8, 8), 10)
    model.eval()
    keep = prune.select_units(model, "l1", 0.5)
    x = np.random.default_rng(0).uniform(-1, 1, (64, 1, 8, 8)).astype(np.float32)
    small, scfg, mism = prune.prune_once(model, cfg, keep, x)
    assert mism == 0
    assert scfg.model.channels == [4, 8]
    assert small.fc1.weight.shape[1] == 8 * 2 * 2  # flatten columns follow the kept channels


def test_schedules():
    assert prune.schedule_targets("oneshot", 0.5, 4) == [0.5]
    assert prune.schedule_targets("iterative", 0.4, 4) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    agp = prune.schedule_targets("agp", 0.5, 4)
    assert agp[-1] == pytest.approx(0.5) and all(b > a for a, b in zip(agp, agp[1:], strict=False))
    assert agp[0] > 0.5 / 4  # cubic ramp prunes fastest early


def test_removing_every_unit_is_an_error(trained):
    cfg, ds, model = trained
    with pytest.raises(CodesignError, match="fc1"):
        prune.select_units(model, "l1", 0.0, per_layer={"fc1": 1.0})


def test_criteria_that_cannot_run(trained):
    cfg, ds, model = trained
    with pytest.raises(CodesignError, match="gradients"):
        prune.importance(model, "fc1", "taylor")
    with pytest.raises(UnsupportedError, match="BatchNorm"):
        prune.importance(model, "fc1", "bn_gamma")
    with pytest.raises(CodesignError, match="cost model"):
        prune.importance(model, "fc1", "energy")


def test_energy_aware_pruning_lowers_energy(trained):
    cfg, ds, model = trained
    small, scfg, rep = prune.energy_aware_prune(model, cfg, ds, target_ratio=1.5, local_epochs=2, finetune_epochs=2,
                                                local_drop=0.5)
    assert rep["energy_ratio"] >= 1.5 and rep["reached"]
    assert rep["masked_vs_removed_mismatches"] == 0
    assert scfg.model.hidden[0] < 32
