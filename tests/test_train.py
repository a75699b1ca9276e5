"""Training: seed-deterministic, model.pt round-trips, stage artifacts and report keys, INQ and KD run."""

import json

import numpy as np
import pytest
import torch

from codesign import config, data, train
from codesign.errors import CodesignError
from codesign.run import RunDir

torch.set_num_threads(1)

FAST = {"data.n_samples": 400, "train.epochs": 4, "train.patience": 0}


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_deterministic_with_seed():
    cfg = config.load("digits_mlp_pot", {**FAST, "train.float_epochs": 2})
    ds = data.load(cfg.data, cfg.seed)
    m1, h1 = train.train_model(cfg, ds, progress=False)
    m2, h2 = train.train_model(cfg, ds, progress=False)
    p1, p2 = _params(m1), _params(m2)
    assert p1.keys() == p2.keys()
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert h1["accuracy_quantized"] == h2["accuracy_quantized"]
    assert h1["float_source"] == "pretrain"


def test_run_stage_and_load_model(tmp_path):
    cfg = config.load("digits_mlp", FAST)
    rd = RunDir(tmp_path)
    fig = train.run_stage(rd, cfg)
    for k in ("accuracy_float", "accuracy_quantized", "seconds"):
        assert k in fig and k in rd.report()["train"]
    assert rd.report()["model"] == "digits_mlp"
    assert fig["float_source"] == "twin"
    for f in ("model.pt", "model_float.pt", "history.json", "history.png"):
        assert (tmp_path / "train" / f).exists()
        assert f"train/{f}" in rd.manifest()["files"]
    blob = torch.load(tmp_path / "train" / "model.pt", weights_only=False)
    assert set(blob) >= {"config", "state_dict", "input_shape", "n_classes"}
    m = train.load_model(tmp_path / "train" / "model.pt")
    ds = data.load(cfg.data, cfg.seed)
    assert train.accuracy(m, ds.x_test, ds.y_test) == pytest.approx(fig["accuracy_quantized"], abs=1e-4)
    hist = json.loads((tmp_path / "train" / "history.json").read_text())
    assert len(hist["qat"]) == 4


def test_digits_mlp_reaches_accuracy():
    cfg = config.load("digits_mlp", {"train.epochs": 30})
    ds = data.load(cfg.data, cfg.seed)
    _, h = train.train_model(cfg, ds, progress=False)
    assert h["accuracy_quantized"] > 0.93


def test_inq_schedule_gives_pot_weights():
    cfg = config.load("digits_mlp_pot", {**FAST, "train.epochs": 4, "train.inq": [0.5, 1.0]})
    ds = data.load(cfg.data, cfg.seed)
    m, h = train.train_model(cfg, ds, progress=False)
    assert {e["inq"] for e in h["qat"]} == {0.5, 1.0}
    v = m.fc1.quant_weight().value.detach()
    nz = v[v != 0].abs()
    assert torch.all(torch.log2(nz) == torch.round(torch.log2(nz)))


def test_inq_bad_schedule():
    cfg = config.load("digits_mlp_pot", {**FAST, "train.inq": [0.5, 0.9]})
    ds = data.load(cfg.data, cfg.seed)
    with pytest.raises(CodesignError, match="inq"):
        train.train_model(cfg, ds, progress=False)
    cfg = config.load("digits_mlp", {**FAST, "train.inq": [1.0]})
    with pytest.raises(CodesignError, match="inq"):
        train.train_model(cfg, ds, progress=False)


@pytest.mark.parametrize("feature,hidden", [(None, [48]), ("hint", [48]), ("pkt", [48]), ("cc", [48]),
                                            ("pkt", [[48], [24]])])
def test_kd_runs(feature, hidden):
    kd = {"enabled": True, "feature": feature is not None, "feature_loss": feature or "hint", "teacher_hidden": hidden}
    cfg = config.load("digits_mlp_pot", {**FAST, "train.kd": kd})
    ds = data.load(cfg.data, cfg.seed)
    m, h = train.train_model(cfg, ds, progress=False)
    assert np.isfinite(h["qat"][-1]["loss"]) and h["accuracy_quantized"] > 0.3


def test_feature_losses_vanish_on_equal_geometry_and_train():
    """PKT and CC are 0 when the student's features equal the teacher's (or are a positive multiple of them:
    both compare directions only), positive otherwise, with gradients to the student; widths may differ."""
    from codesign import distill

    torch.manual_seed(0)
    t = torch.randn(16, 12)
    for loss in (distill.pkt, distill.cc):
        assert float(loss(t, t)) == pytest.approx(0.0, abs=1e-6)
        assert float(loss(3.0 * t, t)) == pytest.approx(0.0, abs=1e-6)
        s = torch.randn(16, 5, requires_grad=True)
        v = loss(s, t)
        assert float(v) > 0
        v.backward()
        assert s.grad is not None and float(s.grad.abs().sum()) > 0
    out, labels = torch.randn(16, 10), torch.randint(0, 10, (16,))
    one = distill.hinton(out, t[:, :10], labels, 4.0, 0.7)
    assert float(distill.hinton(out, [t[:, :10], t[:, :10]], labels, 4.0, 0.7)) == pytest.approx(float(one))
    assert float(distill.hinton(out, [t[:, :10], t[:, 2:]], labels, 4.0, 0.7)) != pytest.approx(float(one))
    with pytest.raises(ValueError, match="regressor"):
        distill.feature_loss("hint", t, t)
    with pytest.raises(ValueError, match="unknown feature loss"):
        distill.feature_loss("crd", t, t)


def test_load_model_errors(tmp_path):
    with pytest.raises(CodesignError):
        train.load_model(tmp_path / "missing.pt")
    p = tmp_path / "bad.pt"
    torch.save({"foo": 1}, p)
    with pytest.raises(CodesignError, match="not a codesign model"):
        train.load_model(p)


def test_sensitivity_table_and_suggestion():
    from codesign import sensitivity

    cfg = config.load("digits_mlp", {**FAST, "train.float_epochs": 0})
    r = sensitivity.analyze(cfg, finetune_epochs=1, min_bits={"fixed": 6, "act": 7}, budget_bits=2368 * 7)
    layers = {(x["layer"], x["what"]) for x in r["rows"]}
    assert layers == {("fc1", "weight"), ("fc2", "weight"), ("fc1", "act")}
    assert {x["bits"] for x in r["rows"] if x["what"] == "weight"} == {6, 7}
    s = r["suggestion"]
    assert s["met"] and s["weight_bits"] <= 2368 * 7
    assert "fc1" in sensitivity.format_table(r)


def test_float_model_as_kd_teacher(tmp_path):
    cfg = config.load("digits_mlp", FAST)
    rd = RunDir(tmp_path)
    train.run_stage(rd, cfg)
    t = train.load_model(tmp_path / "train" / "model_float.pt", float_ok=True)
    assert not t.pot_layers() and t.fc1.weight.shape == (32, 64)
    with pytest.raises(CodesignError, match="float"):
        train.load_model(tmp_path / "train" / "model_float.pt")
    cfg2 = config.load("digits_mlp_pot", {**FAST, "train.kd": {"enabled": True,
                                                               "teacher": str(tmp_path / "train" / "model_float.pt")}})
    ds = data.load(cfg2.data, cfg2.seed)
    _, h = train.train_model(cfg2, ds, progress=False)
    assert h["accuracy_quantized"] > 0.3


def test_sgd_constant_schedule():
    cfg = config.load("digits_mlp", {**FAST, "train.optimizer": "sgd", "train.schedule": "constant", "train.lr": 0.05})
    ds = data.load(cfg.data, cfg.seed)
    m, h = train.train_model(cfg, ds, progress=False)
    assert all(e["lr"] == 0.05 for e in h["qat"]) and h["accuracy_quantized"] > 0.3


def test_fine_tune_public_api():
    """fine_tune: the training loop on an existing model, seeded, lr override, no epochs = no change."""
    from codesign.quant import build_model

    cfg = config.load("digits_mlp", {**FAST, "train.float_epochs": 0})
    ds = data.load(cfg.data, cfg.seed)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build_model(cfg, ds.input_shape, ds.n_classes)
        p0 = _params(m)
        assert train.fine_tune(m, ds, cfg, epochs=0) == [] and not m.training
        assert all(torch.equal(p0[k], v) for k, v in _params(m).items())
        h = train.fine_tune(m, ds, cfg, epochs=2, lr=0.5 * cfg.train.lr, seed=3)
        runs.append((_params(m), h))
    assert not m.training and len(runs[0][1]) == 2
    assert cfg.train.schedule == "cosine"  # half-way through 2 epochs: half the (overridden) lr
    assert runs[0][1][0]["lr"] == pytest.approx(0.25 * cfg.train.lr)
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])
