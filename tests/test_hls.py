"""Vendor hand-off: the hls4ml Vitis project's C simulation equals the golden model (0 mismatches)."""

import pytest

from codesign import config, flow, hls


@pytest.mark.parametrize("model, overrides", [
    ("digits_mlp", {"train.epochs": 2}),
    ("digits_cnn", {"train.epochs": 1, "data.n_samples": 300}),
])
def test_hls_csim_matches_golden(tmp_path, model, overrides):
    cfg = config.load(model, overrides)
    rd = flow.run_flow(cfg, tmp_path / "run", until="golden")
    fig = hls.run_stage(rd, cfg, random_vectors=2000)
    assert fig["mismatches"] == 0
    assert fig["vectors"] >= 2000
    assert (rd.root / "hls" / "build_prj.tcl").exists()
    assert rd.report()["hls"]["mismatches"] == 0
