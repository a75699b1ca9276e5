"""Config validation: every zoo file loads; bad keys, types and values name the key path."""

import subprocess
import sys

import pytest

from codesign import config
from codesign.errors import ConfigError


@pytest.mark.parametrize("name", config.zoo_names())
def test_zoo_configs_load(name):
    cfg = config.load(name)
    assert cfg.name == name
    assert cfg.description


def test_zoo_has_required_models():
    required = {"digits_mlp", "digits_mlp_pot", "digits_mlp_pot_pruned", "digits_cnn", "mnist1d_cnn", "jet_mlp", "tfc"}
    assert required <= set(config.zoo_names())


def test_default_is_digits_mlp():
    assert config.load(None).name == "digits_mlp"


@pytest.mark.parametrize(
    "override, key, reason",
    [
        ({"quant.weight.bits": -3}, "quant.weight.bits", "greater than or equal to 1"),
        ({"prune.sparsity": 1.5}, "prune.sparsity", "less than 1"),
        ({"quant.wieght": {"bits": 3}}, "quant.wieght", "unknown key"),
        ({"train.epochs": "many"}, "train.epochs", "integer"),
        ({"fpga.target": "virtex2"}, "fpga.target", "ecp5-85f"),
        ({"model.hidden": [32, 0]}, "model", "hidden[1] must be >= 1"),
        ({"rtl.strategy": "latency", "rtl.reuse": 4}, "rtl", "needs strategy 'resource'"),
        ({"quant.weight": {"scheme": "pot", "bits": 1}}, "quant.weight", "bits >= 2"),
        ({"quant.weight": {"scheme": "float", "bits": 1}}, "quant.weight", "bits >= 2"),
        ({"quant.weight": {"scheme": "binary", "per_channel": True}}, "quant.weight", "per_channel"),
        ({"quant.act": {"scale": "pot"}}, "quant.act.scale", "po2"),
        ({"model.batchnorm": True, "prune.enabled": True, "prune.criterion": "bn_gamma"}, "prune.criterion",
         "model.batchnorm"),
        ({"model.units": {"fc1": 3}}, "model", "only for an imported model"),
        ({"data.resize": 1}, "data.resize", "greater than or equal to 2"),
    ],
)
def test_bad_values_name_the_key(override, key, reason):
    with pytest.raises(ConfigError) as e:
        config.load("digits_mlp", override)
    msg = str(e.value)
    assert key in msg and reason in msg, msg


def test_layer_overrides():
    cfg = config.load("digits_mlp", {"quant.layers": {"fc1": {"weight": {"scheme": "pot", "bits": 4}}}})
    assert cfg.layer_weight("fc1").scheme == "pot"
    assert cfg.layer_weight("fc2").scheme == "fixed"


def test_yaml_roundtrip(tmp_path):
    cfg = config.load("digits_cnn")
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert config.load(p) == cfg.model_copy(update={"name": cfg.name})


def test_cli_bad_config_one_line_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: {builder: mlp, hidden: [32]}\nquant: {weight: {bitz: 4}}\n")
    r = subprocess.run([sys.executable, "-m", "codesign", "config", "show", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "quant.weight.bitz: unknown key" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
