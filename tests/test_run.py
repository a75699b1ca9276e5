"""Run directory: atomic writes (a failed write leaves nothing that looks complete), manifest, report."""

import json

import pytest

from codesign.run import RunDir, atomic_path, atomic_write_json, sha256_file


def test_atomic_write_failure_leaves_no_file(tmp_path):
    target = tmp_path / "out" / "model.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a model")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{broken")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}


def test_manifest_and_report(tmp_path):
    rd = RunDir(tmp_path / "run")
    p = rd.stage_dir("export") / "model.onnx"
    with atomic_path(p) as tmp:
        tmp.write_bytes(b"onnx")
    rd.add(p, "export")
    rd.add_tree(rd.stage_dir("export"), "export")
    m = json.loads((rd.root / "manifest.json").read_text())
    assert m["files"]["export/model.onnx"] == {"sha256": sha256_file(p), "bytes": 4, "stage": "export"}
    rd.record("verify", {"mismatches": 0})
    rd.record("verify", {"vectors": 10})
    rd.record("model", "digits_mlp")
    assert rd.report() == {"verify": {"mismatches": 0, "vectors": 10}, "model": "digits_mlp"}


def test_require_names_the_missing_stage(tmp_path):
    from codesign.errors import StageInputError

    rd = RunDir(tmp_path)
    with pytest.raises(StageInputError, match="codesign export"):
        rd.require("export/model.onnx", "export")


def test_relative_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rd = RunDir("runs/x")
    p = rd.stage_dir("train") / "model.pt"
    p.write_bytes(b"m")
    rd.add(p, "train")
    assert "train/model.pt" in rd.manifest()["files"]


def test_a_rerun_stage_leaves_no_stale_figures(tmp_path):
    """report.json sections are merged, so starting a stage again must drop its old figures: an fpga run
    without a board must not keep the last run's board figures. Later stages keep theirs (the last measured)."""
    rd = RunDir(tmp_path / "run")
    rd.record("rtl", {"latency": 4})
    rd.record("fpga", {"fmax_mhz": 74.5, "board_fmax_mhz": 57.5, "reseeded": ["seed 1: stalled"]})
    rd.record("energy", {"pj": 3673})
    rd.record("flow", {"seconds": {"rtl": 0.1, "fpga": 170.0, "energy": 0.1}})
    rd.record("model", "digits_mlp")
    rd.start_stage("fpga", ["energy"])
    assert rd.report() == {"rtl": {"latency": 4}, "energy": {"pj": 3673},
                           "flow": {"seconds": {"rtl": 0.1, "fpga": 170.0, "energy": 0.1}}, "model": "digits_mlp"}
    rd.record("fpga", {"fmax_mhz": 79.1})
    assert rd.report()["fpga"] == {"fmax_mhz": 79.1}
