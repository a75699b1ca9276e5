"""Export: PyTorch and the cleaned QONNX graph agree exactly (0 mismatches) for fixed, pot, conv1d and
conv2d; po2 layers are recorded in the ONNX metadata; stage artifacts follow docs/contracts.md."""

import json

import numpy as np
import onnx
import pytest
import torch

from codesign import config, data, export, quant, train
from codesign.run import RunDir

torch.set_num_threads(1)


def _quick_model(name, over=None, epochs=2):
    cfg = config.load(name, {"data.n_samples": 300, "train.epochs": epochs, "train.float_epochs": 0,
                             "train.patience": 0, **(over or {})})
    ds = data.load(cfg.data, cfg.seed)
    m, _ = train.train_model(cfg, ds, progress=False)
    return cfg, ds, m


@pytest.mark.parametrize("name,over", [
    ("digits_mlp", None),
    ("digits_mlp_pot", None),
    ("digits_mlp", {"quant.weight": {"scheme": "fixed", "bits": 4, "rounding": "FLOOR"},
                    "quant.act": {"bits": 4, "rounding": "FLOOR"},
                    "quant.input": {"bits": 6, "signed": True, "rounding": "ROUND_TO_ZERO"},
                    "quant.layers": {"fc2": {"weight": {"scheme": "pot", "bits": 3}}}}),
    ("digits_cnn", None),
    ("mnist1d_cnn", {"model.channels": [4, 4], "model.hidden": [8]}),
])
def test_torch_equals_qonnx(tmp_path, name, over):
    cfg, ds, m = _quick_model(name, over)
    info = export.export_qonnx_model(m, m.input_shape, tmp_path / "raw.onnx", tmp_path / "model.onnx")
    x = quant.input_grid(m, ds.x_test[:60]).double().numpy()
    v = export.validate(m, tmp_path / "model.onnx", x)
    assert v["mismatches"] == 0 and v["max_abs_diff"] == 0.0
    mo = onnx.load(tmp_path / "model.onnx")
    ops = [n.op_type for n in mo.graph.node]
    assert "Gemm" not in ops
    for n in mo.graph.node:
        for a in n.attribute:
            if a.name == "rounding_mode":
                assert a.s.decode() == a.s.decode().upper()
    meta = {p.key: json.loads(p.value) for p in mo.metadata_props}
    assert meta["codesign.pot_layers"] == m.pot_layers() == info["pot_layers"]
    assert len(meta["codesign.layers"]) == len(m.weight_layers())
    # po2 layers: the weight Quant node's output is exactly {0, +-2^e}
    from qonnx.core.modelwrapper import ModelWrapper

    mw = ModelWrapper(str(tmp_path / "model.onnx"))
    for node_name in meta["codesign.pot_weight_quant_nodes"]:
        node = mw.get_node_from_name(node_name)
        w = mw.get_initializer(node.input[0])
        scale = float(mw.get_initializer(node.input[1]))
        assert np.all(w / scale == np.round(w / scale))
        nz = np.abs(w[w != 0])
        assert np.all(np.log2(nz) == np.round(np.log2(nz)))
    if name.endswith("cnn"):
        assert info["channels_last"] and info["input_shape"][-1] == 1


def test_export_stage(tmp_path):
    cfg = config.load("digits_mlp_pot", {"data.n_samples": 300, "train.epochs": 2, "train.float_epochs": 1})
    rd = RunDir(tmp_path)
    train.run_stage(rd, cfg)
    fig = export.run_stage(rd, cfg)
    assert fig["torch_vs_qonnx_mismatches"] == 0
    assert fig["qonnx"] == "export/model.onnx"
    r = rd.report()["export"]
    assert r["torch_vs_qonnx_mismatches"] == 0
    x = np.load(tmp_path / "export" / "test_x.npy")
    y = np.load(tmp_path / "export" / "test_y.npy")
    assert x.dtype == np.float64 and len(x) == len(y) == 60
    assert np.all(x * 128 == np.round(x * 128))
    for f in ("model_raw.onnx", "model.onnx", "test_x.npy", "test_y.npy"):
        assert f"export/{f}" in rd.manifest()["files"]
