"""The whole flow on a small model: train -> export -> golden -> rtl -> verify -> fpga -> energy,
through the CLI, ending in a bitstream, with every hard check at 0 mismatches."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("flow")
    out = work / "run"
    cmd = [sys.executable, "-m", "codesign", "flow", "digits_mlp_pot", "--out", "run",  # relative, as users type it
           "--set", "model.hidden=[8]", "--set", "train.epochs=3", "--set", "train.float_epochs=2",
           "--set", "verify.random_vectors=3000", "--set", "fpga.clock_mhz=25"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_flow_report_and_manifest(run_dir):
    rep = json.loads((run_dir / "report.json").read_text())
    assert rep["model"] == "digits_mlp_pot"
    assert rep["export"]["torch_vs_qonnx_mismatches"] == 0
    assert rep["golden"]["qonnx_mismatches"] == 0
    assert rep["verify"]["mismatches"] == 0 and rep["verify"]["vectors"] >= 3000
    assert rep["golden"]["accuracy"] == pytest.approx(rep["train"]["accuracy_quantized"], abs=1e-4)
    assert rep["fpga"]["timing_met"] is True
    assert rep["energy"]["pj_per_inference"] > 0
    man = json.loads((run_dir / "manifest.json").read_text())["files"]
    for f in ("config.yaml", "train/model.pt", "export/model.onnx", "rtl/interface.json", "verify/verify.json",
              rep["fpga"]["bitstream"], "energy/energy.json"):
        assert f in man, f
        assert (run_dir / f).exists()


def test_bitstream_header(run_dir):
    rep = json.loads((run_dir / "report.json").read_text())
    bit = (run_dir / rep["fpga"]["bitstream"]).read_bytes()
    # ECP5 bitstreams from ecppack start with a comment block (0xFF 0x00 ... ) then the preamble 0xBD 0xB3
    assert len(bit) > 100_000
    assert bit.startswith(b"\xff\x00Part: LFE5U-85F") and b"\xbd\xb3" in bit[:4096]


def test_stage_rerun_alone(run_dir):
    r = subprocess.run([sys.executable, "-m", "codesign", "golden", str(run_dir)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "codesign", "report", str(run_dir)], capture_output=True, text=True)
    assert r.returncode == 0 and "RTL vs golden mismatches" in r.stdout
