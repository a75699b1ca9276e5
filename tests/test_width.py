"""Width search (codesign.width): width keys in configs and study spaces, slicing the supernet, and a
budgeted search on a tiny model (seconds)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

from codesign import config, study, width
from codesign.errors import ConfigError

TINY = {"data.n_samples": 300, "train.epochs": 1, "train.float_epochs": 0, "train.patience": 0,
        "rtl.strategy": "latency", "rtl.reuse": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_width_key_validates_and_applies(tmp_path):
    cfg = config.load("digits_mlp", {"model.hidden": [16, 8], "model.hidden.1": 4})
    assert cfg.model.hidden == [16, 4]
    assert width.width_keys(cfg) == {"model.hidden.0": "fc1", "model.hidden.1": "fc2"}
    assert width.full_widths(cfg) == {"fc1": 16, "fc2": 4}
    cnn = config.load("digits_cnn", {"model.channels.1": 6})
    assert cnn.model.channels == [8, 6]
    assert width.width_keys(cnn) == {"model.channels.0": "conv1", "model.channels.1": "conv2"}
    with pytest.raises(ConfigError, match=r"model\.hidden\.3.*out of range"):
        config.load("digits_mlp", {"model.hidden.3": 4})
    with pytest.raises(ConfigError, match=r"model\.hidden\.x"):
        config.load("digits_mlp", {"model.hidden.x": 4})
    with pytest.raises(ConfigError, match=r"model\.channels\.0"):
        width.layer_of(cfg, "model.channels.0")  # an MLP has no conv widths
    # in a study space: applied to the trial config, a bad index names the key
    good = {"name": "w", "base": "digits_mlp", "set": {"model.hidden": [16, 8]},
            "space": {"model.hidden.1": {"low": 2, "high": 8, "step": 2}}}
    sc = study.load_study_config(_yaml(tmp_path / "good.yaml", good))
    assert study.trial_config(sc, {"model.hidden.1": 6}, 0).model.hidden == [16, 6]
    with pytest.raises(ConfigError, match=r"model\.hidden\.2"):
        study.load_study_config(_yaml(tmp_path / "bad.yaml", {**good, "space": {"model.hidden.2": [4, 8]}}))
    ws = {**good, "width_search": {"finetune_epochs": 1}}
    with pytest.raises(ConfigError, match=r"space\.model\.hidden\.1.*<= 8"):  # wider than the supernet
        study.load_study_config(_yaml(tmp_path / "wide.yaml", {**ws, "space": {"model.hidden.1": [4, 12]}}))
    with pytest.raises(ConfigError, match=r"space\.train\.lr"):  # width_search: only width keys
        study.load_study_config(_yaml(tmp_path / "lr.yaml", {**ws, "space": {"train.lr": [0.1, 0.01]}}))
    with pytest.raises(ConfigError, match=r"budget"):
        study.load_study_config(_yaml(tmp_path / "b.yaml", {**good, "budget": {"watts": 1}}))


def _yaml(path, d):
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("name,over,widths", [
    ("digits_mlp", {"model.hidden": [16, 8]}, {"fc1": 5, "fc2": 3}),
    ("digits_cnn", {"model.channels": [6, 8]}, {"conv1": 2, "conv2": 5}),
])
def test_slice_equals_masked_supernet(name, over, widths):
    """A slice has exactly the requested widths, keeps the top-L1 units, and computes what the full model
    computes with the other units (and the columns reading them) zeroed: bit for bit."""
    from codesign import data, quant
    from codesign.prune import apply_mask, outputs

    cfg = config.load(name, {**TINY, **over})
    ds = data.load(cfg.data, 0)
    torch.manual_seed(0)
    net = quant.build_model(cfg, ds.input_shape, ds.n_classes)
    net.train()
    with torch.no_grad():  # initialise the activation scales from data, as training does
        net(torch.as_tensor(ds.x_train[:64]))
    net.eval()
    small, small_cfg = width.slice_model(net, cfg, widths)
    assert width.full_widths(small_cfg) == widths
    for layer, k in widths.items():
        assert getattr(small, layer).weight.shape[0] == k
    keep = width.l1_keep(net, widths)
    for layer, idx in keep.items():
        l1 = getattr(net, layer).weight.detach().reshape(len(getattr(net, layer).weight), -1).abs().sum(1).numpy()
        assert l1[idx].min() >= np.delete(l1, idx).max()  # the kept units are the top-L1 ones
    masked = copy.deepcopy(net)
    apply_mask(masked, keep)
    x = ds.x_test[:100]
    assert np.array_equal(outputs(small, x), outputs(masked, x))
    bad = {"fc1": 17} if name == "digits_mlp" else {"conv1": 0}
    with pytest.raises(ConfigError, match=f"{next(iter(bad))} width {next(iter(bad.values()))} outside"):
        width.l1_keep(net, bad)
    c_full, c_small = width.cost(net), width.cost(small)
    for k in ("energy_pj", "params", "adder_bits"):
        assert 0 < c_small[k] < c_full[k]


def test_search_respects_budget():
    """A 3-trial search on a tiny supernet: every trial is costed, the best is the most accurate feasible
    one, and every point reported feasible is within the budget."""
    from codesign import data
    from codesign.train import train_model

    cfg = config.load("digits_mlp", {**TINY, "model.hidden": [16, 8]})
    ds = data.load(cfg.data, 0)
    net, _ = train_model(cfg, ds, progress=False)
    full = width.cost(net)["energy_pj"]
    budget = {"energy_pj": 0.5 * full}
    u = width.uniform_under_budget(net, cfg, budget)
    assert u is not None and u[0] < 1
    r = width.search(net, cfg, ds, budget=budget, trials=3, epochs=1, seed=0, start=[u[1]])
    assert len(r["trials"]) == 3 and r["trials"][0]["widths"] == u[1]  # the enqueued start point
    for t in r["trials"]:
        assert t["feasible"] == (t["energy_pj"] <= budget["energy_pj"])
    assert r["best"] is not None and r["best"]["energy_pj"] <= budget["energy_pj"]
    assert r["best"]["val_acc"] == max(t["val_acc"] for t in r["trials"] if t["feasible"])
    g = width.global_l1_under_budget(net, cfg, budget)
    assert g is not None
    small, _ = width.slice_model(net, cfg, g[1])
    assert width.cost(small)["energy_pj"] <= budget["energy_pj"]


def test_width_study_weight_sharing(tmp_path):
    """``width_search`` in a study: one supernet, trials slice it; the budget is an Optuna constraint and
    the Pareto front keeps only trials within it."""
    d = {"name": "ws", "base": "digits_mlp", "trials": 3, "sampler": "tpe", "seed": 0,
         "objectives": ["accuracy", "energy_pj"],
         "set": {**TINY, "model.hidden": [16, 8]}, "width_search": {"finetune_epochs": 1},
         "space": {"model.hidden.0": {"low": 4, "high": 16, "step": 4}, "model.hidden.1": {"low": 2, "high": 8,
                                                                                           "step": 2}}}
    sc0 = study.load_study_config(_yaml(tmp_path / "probe.yaml", d))
    net, cfg, _ = study.supernet(sc0, tmp_path / "probe")
    budget = 0.5 * width.cost(net)["energy_pj"]
    d["objectives"] = ["accuracy", "energy_pj", "adder_bits"]
    out = study.run_study(_yaml(tmp_path / "ws.yaml", {**d, "budget": {"energy_pj": budget}}), tmp_path / "ws")
    rows = [r for r in study.trials_table(out) if r["state"] == "COMPLETE"]
    assert len(rows) == 3 and (out / "supernet" / "model.pt").exists()
    for r in rows:
        assert r["feasible"] == (r["energy_pj"] <= budget)
        assert "test_accuracy" in r and "widths" in r and r["adder_bits"] > 0
        if r["pareto"]:
            assert r["energy_pj"] <= budget
    assert "within the budget" in (out / "report.html").read_text()


def test_bench_verdict_from_numbers():
    from bench.width_search import verdict

    v = verdict([0.95, 0.96, 0.94], [0.90, 0.91, 0.92])
    assert v.startswith("search higher on 3/3 seeds") and "beyond spread" in v and "+4.0 pts" in v
    v = verdict([0.95, 0.90, 0.94], [0.94, 0.93, 0.94])
    assert "1/3 seeds (1 tied)" in v and "within spread" in v
