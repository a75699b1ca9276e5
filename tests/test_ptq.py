"""Post-training quantization options (``quant.ptq``, codesign.ptq) on the imported examples/byom nets: each option
runs, keeps the weights on codesign's grid (integers times a power-of-two scale), and has the property its paper
claims where that property is deterministic (GPTQ / GPFQ: a smaller layer-output error than nearest rounding;
bias correction: a zero mean output error on the calibration data; equalization: the float function unchanged;
ZeroQ: the BatchNorm statistics matched without training data); a typo is an error naming the key; the GPTQ
model goes through export and the golden model (golden == execute_onnx)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import codesign
from codesign import config as config_mod
from codesign import importer, ptq, train
from codesign.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "byom"
LOW = {"quant.weight": {"scheme": "fixed", "bits": 4}, "quant.act.bits": 4}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """examples/byom: net.py, digits .npz files and the MLP trained for 10 epochs."""
    d = tmp_path_factory.mktemp("ptq")
    (d / "net.py").write_text((EXAMPLE / "net.py").read_text())
    spec = importlib.util.spec_from_file_location("byom_prepare_ptq", EXAMPLE / "prepare.py")
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the MLP's initialization (prepare seeds only the training loop)
    prep.prepare(d, models=("mlp",), epochs=10)
    return d


def _cfg(d: Path, ptq_opts: dict | None = None, cnn: bool = False, **over) -> config_mod.Config:
    base = {"data": {"dataset": "npz", "path": str(d / ("digits_img.npz" if cnn else "digits.npz"))},
            "model": {"module": f"{d / 'net.py'}:{'CNN' if cnn else 'MLP'}",
                      "weights": None if cnn else str(d / "mlp.pt")},
            "quant.method": "ptq", "quant.calibration_batches": 4, **LOW, **over}
    if ptq_opts:
        base["quant.ptq"] = ptq_opts
    return config_mod.load(None, base)


def _ptq(cfg: config_mod.Config, ds=None):
    from codesign import data

    torch.set_num_threads(1)
    ds = ds if ds is not None else data.load(cfg.data, cfg.seed)
    model = importer.build(cfg, ds.input_shape, ds.n_classes)
    _, twin = importer.float_twin(cfg, ds.input_shape, ds.n_classes)
    info = ptq.run(cfg, model, twin, ds, cfg.seed)
    return model, twin, info, ds


def test_nearest_is_plain_calibration_on_grid(user_dir):
    model, _, info, ds = _ptq(_cfg(user_dir))
    assert info["rounding"] == "nearest" and info["calibration_samples"] == 4 * 64
    assert set(info["weight_grid"]) == {"fc1", "fc2"}
    assert all(g["max_abs_code"] <= 7 for g in info["weight_grid"].values())  # 4-bit narrow: -7..7


@pytest.mark.parametrize("rounding", ["gptq", "gpfq"])
def test_optimized_rounding_beats_nearest_on_layer_output(user_dir, rounding):
    """GPTQ / GPFQ minimize the layer's output error on the calibration data: on the first layer (same input for
    both: the constant input quantizer) it is below nearest rounding's; the weights stay on the po2 grid (grid_check
    inside ptq.run) and differ from nearest's; the accuracy stays within 2 points of nearest's (360 test samples;
    bench.ptq measures the difference over seeds)."""
    near, twin, _, ds = _ptq(_cfg(user_dir))
    opt, _, info, _ = _ptq(_cfg(user_dir, {"rounding": rounding}))
    assert info["rounded_layers"] == 2
    assert not hasattr(opt.fc1, "weight_orig")  # Brevitas' copy of the float weights is dropped
    x = ds.x_train[:256]
    e_near = ptq.layer_output_error(near, twin, "fc1", x)
    e_opt = ptq.layer_output_error(opt, twin, "fc1", x)
    assert e_opt < e_near, (e_opt, e_near)
    assert not torch.equal(opt.fc1.quant_weight().value, near.fc1.quant_weight().value)
    # the po2 scale is Brevitas' max-|w| statistic of the updated float weights: it may differ from nearest's
    assert np.log2(float(opt.fc1.quant_weight().scale)).is_integer()
    a_near, a_opt = train.accuracy(near, ds.x_test, ds.y_test), train.accuracy(opt, ds.x_test, ds.y_test)
    assert a_opt >= a_near - 0.02, (a_opt, a_near)


def test_gptq_pot_weights_stay_powers_of_two(user_dir):
    model, _, info, _ = _ptq(_cfg(user_dir, {"rounding": "gptq"}, **{"quant.weight": {"scheme": "pot", "bits": 4}}))
    assert model.pot_layers() == ["fc1", "fc2"]
    v = model.fc1.quant_weight().value
    nz = v[v != 0].abs()
    assert torch.equal(torch.log2(nz), torch.round(torch.log2(nz)))


def test_bias_correction_zeroes_mean_output_error(user_dir):
    """After correction the first layer's mean output error (float weights minus quantized, same input) on the
    calibration data is zero per channel; without it, it is not."""
    cfg0, cfg1 = _cfg(user_dir), _cfg(user_dir, {"bias_correction": True})

    m0, t0, _, ds = _ptq(cfg0)
    m1, t1, info, _ = _ptq(cfg1)
    with torch.no_grad():
        xi = m0.inp(torch.as_tensor(ds.x_train[:4 * 64])).value  # the input grid: the same for both
        w_err = (xi @ t0.fc1.weight.T - xi @ m0.fc1.quant_weight().value.T).mean(0)
        assert float(w_err.abs().max()) > 1e-2
        assert torch.allclose(m1.fc1.bias - m0.fc1.bias, w_err, atol=1e-5)
        # the quantized layer's mean output error (its 16-bit bias quantized at the accumulator scale included)
        out0 = (m0.fc1(m0.inp(torch.as_tensor(ds.x_train[:4 * 64]))).value - xi @ t0.fc1.weight.T - t0.fc1.bias)
        out1 = (m1.fc1(m1.inp(torch.as_tensor(ds.x_train[:4 * 64]))).value - xi @ t1.fc1.weight.T - t1.fc1.bias)
        assert float(out1.mean(0).abs().max()) < 0.05 * float(out0.mean(0).abs().max())
    assert set(info["bias_corrections"]) == {"fc1", "fc2"}


def test_bias_correction_folds_into_batchnorm_mean(user_dir):
    """A bias-less conv before a BatchNorm: the correction goes into the BatchNorm's running mean."""
    m0, _, _, _ = _ptq(_cfg(user_dir, cnn=True))
    m1, _, info, _ = _ptq(_cfg(user_dir, {"bias_correction": True}, cnn=True))
    assert m1.conv1.bias is None and "conv1" in info["bias_corrections"]
    assert not torch.equal(m0.bn1.running_mean, m1.bn1.running_mean)


def test_equalization_keeps_the_float_function(user_dir):
    from codesign import data

    cfg = _cfg(user_dir, {"equalize": True})
    ds = data.load(cfg.data, cfg.seed)
    _, twin = importer.float_twin(cfg, ds.input_shape, ds.n_classes)
    before = train.predict(twin, ds.x_test)
    r0 = twin.fc1.weight.abs().amax(1) / twin.fc2.weight.abs().amax(0)
    assert ptq.equalize(twin) == 1
    r1 = twin.fc1.weight.abs().amax(1) / twin.fc2.weight.abs().amax(0)
    assert np.max(np.abs(train.predict(twin, ds.x_test) - before)) < 1e-4
    assert float(r1.std() / r1.mean()) < float(r0.std() / r0.mean())  # ranges balanced between the two layers
    _, _, info, _ = _ptq(cfg)
    assert info["equalized_regions"] == 1


def test_data_free_uses_no_training_data(user_dir):
    """ZeroQ: calibration on inputs synthesized from the BatchNorm statistics; the training inputs are NaN here, so
    any use of them would show. The synthetic inputs match the first BatchNorm's statistics better than noise."""
    from codesign import data

    cfg = _cfg(user_dir, {"data_free": True, "data_free_steps": 60}, cnn=True)
    ds = data.load(cfg.data, cfg.seed)
    blind = dataclasses.replace(ds, x_train=np.full_like(ds.x_train, np.nan))
    model, twin, info, _ = _ptq(cfg, blind)
    assert info["calibration_data"].startswith("synthetic")
    for n in ("relu1", "relu2"):
        s = float(getattr(model, n).act_quant.scale())
        assert np.isfinite(s) and s > 0 and np.log2(s) == np.round(np.log2(s))
    assert np.all(np.isfinite(train.predict(model, ds.x_test)))

    def bn1_gap(x):
        with torch.no_grad():
            a = twin.conv1(torch.as_tensor(x))
        return float(((a.mean((0, 2, 3)) - twin.bn1.running_mean) ** 2).sum()
                     + ((a.std((0, 2, 3), unbiased=False) - twin.bn1.running_var.sqrt()) ** 2).sum())

    noise = np.random.default_rng(0).uniform(-1, 1, (128, 1, 8, 8)).astype(np.float32)
    synth = ptq.synthesize(twin, (1, 8, 8), 128, steps=60)
    assert np.abs(synth).max() <= 1.0
    assert bn1_gap(synth) < bn1_gap(noise)


def test_data_free_needs_batchnorm(user_dir):
    with pytest.raises(ConfigError, match="quant.ptq.data_free: the model has no BatchNorm"):
        _ptq(_cfg(user_dir, {"data_free": True}))


def test_config_typo_and_method(user_dir):
    with pytest.raises(ConfigError, match=r"quant\.ptq\.roundng"):
        _cfg(user_dir, {"roundng": "gptq"})
    with pytest.raises(ConfigError, match="gptq"):
        _cfg(user_dir, {"rounding": "adaround2"})
    with pytest.raises(ConfigError, match="quant.ptq: post-training options need quant.method: ptq"):
        _cfg(user_dir, {"rounding": "gptq"}, **{"quant.method": "qat"})


def test_gptq_flow_until_golden(user_dir):
    """``codesign flow --until golden`` with GPTQ + bias correction + equalization at 4 bits: export matches
    PyTorch, the golden model matches execute_onnx exactly and gives the train stage's accuracy."""
    cfg = {"data": {"dataset": "npz", "path": "digits.npz"},
           "model": {"module": "net.py:MLP", "weights": "mlp.pt", "input_shape": [64]},
           "quant": {"method": "ptq", "weight": {"bits": 4}, "act": {"bits": 4},
                     "ptq": {"rounding": "gptq", "bias_correction": True, "equalize": True}}}
    (user_dir / "gptq.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(Path(codesign.__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "codesign", "flow", "gptq.yaml", "--out", "run_gptq", "--until",
                        "golden"], cwd=user_dir, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads((user_dir / "run_gptq" / "report.json").read_text())
    assert rep["train"]["ptq"]["rounding"] == "gptq" and rep["train"]["ptq"]["rounded_layers"] == 2
    assert rep["export"]["torch_vs_qonnx_mismatches"] == 0
    assert rep["golden"]["qonnx_mismatches"] == 0
    assert rep["golden"]["accuracy"] == pytest.approx(rep["train"]["accuracy_quantized"], abs=1e-4)
