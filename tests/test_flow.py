"""The whole flow on a small model: train -> export -> golden -> rtl -> verify -> fpga -> energy,
through the CLI, ending in a bitstream, with every hard check at 0 mismatches."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

FLOW = [sys.executable, "-m", "codesign", "flow", "digits_mlp_pot", "--out", "run",  # relative, as users type it
        "--set", "model.hidden=[8]", "--set", "train.epochs=3", "--set", "train.float_epochs=2",
        "--set", "verify.random_vectors=3000", "--set", "fpga.clock_mhz=25"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("flow")
    out = work / "run"
    r = subprocess.run(FLOW, capture_output=True, text=True, timeout=1500, cwd=work)
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


def _artifacts(run: "os.PathLike", bitstream: bool) -> dict[str, bytes]:
    """What a second run with the same config and seed must reproduce byte for byte: the QONNX model, the RTL
    folder (Verilog, interface.json, ir.json) and the bitstream."""
    from pathlib import Path

    run = Path(run)
    rep = json.loads((run / "report.json").read_text())
    files = [run / "export" / "model.onnx"] + ([run / rep["fpga"]["bitstream"]] if bitstream else [])
    files += sorted(p for p in (run / "rtl").rglob("*") if p.is_file() and not p.name.startswith("."))
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def _flow_killed_in(work, stage: str, delay: float, cmd: list[str]) -> tuple[set[str], str]:
    """Start the flow ``cmd`` in ``work``, SIGKILL its whole process group ``delay`` s after stage ``stage``
    starts; (the stages recorded complete at the kill, the output so far)."""
    p = subprocess.Popen(cmd, cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    seen = []
    for line in p.stderr:
        seen.append(line)
        if f" {stage}: " in line and line.startswith("─"):
            time.sleep(delay)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:  # the flow's last stage finished within the delay
                pass
            break
    p.wait(timeout=60)
    p.stderr.close()
    # killed, or (a fast last stage, e.g. a cached simulator build) finished just before the kill
    assert p.returncode in (-signal.SIGKILL, 0), f"the flow ended before {stage} started: " + "".join(seen)[-2000:]
    assert any(f" {stage}: " in line for line in seen), "".join(seen)[-2000:]
    man = json.loads((work / "run" / "manifest.json").read_text())
    return set(man.get("stages", {})), "".join(seen)


@pytest.mark.parametrize("last", ["verify", pytest.param("fpga", marks=pytest.mark.slow)])
def test_killed_in_every_stage_resumes_and_reproduces(run_dir, tmp_path, last):
    """SIGKILL inside train, export, golden, rtl, verify (and fpga, in the slow run), re-running the same command
    each time: every re-run reuses exactly the stages that had finished, and the final run's QONNX, RTL (and
    bitstream) are byte-identical to those of the uninterrupted run (same config, same seed)."""
    order = ["train", "export", "golden", "rtl", "verify", "fpga", "energy"]
    kills = [("train", 2.0), ("export", 0.5), ("golden", 0.0), ("rtl", 0.0), ("verify", 0.3), ("fpga", 2.0)]
    cmd = FLOW if last == "fpga" else [*FLOW, "--until", last]
    order = order if last == "fpga" else order[:order.index(last) + 1]
    before: set[str] = set()
    for stage, delay in kills[:order.index(last) + 1]:
        done, log = _flow_killed_in(tmp_path, stage, delay, cmd)
        i = order.index(stage)
        # complete: the stages before the one killed in, and any fast ones that finished before the kill landed
        assert done == set(order[:len(done)]) and len(done) >= i, (stage, done)
        assert all(f"✓ {s} (reused" in log for s in before), (stage, before, log[-2000:])
        assert all(f"✓ {s} (reused" not in log for s in set(order) - before)
        before = done
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(f"✓ {s} (reused" in r.stderr for s in before), r.stderr[-3000:]
    assert all(f"✓ {s} (reused" not in r.stderr for s in set(order) - before) and len(before) >= len(order) - 2
    mine, ref = _artifacts(tmp_path / "run", last == "fpga"), _artifacts(run_dir, last == "fpga")
    assert sorted(mine) == sorted(ref)
    assert [k for k in ref if mine[k] != ref[k]] == []
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(man["stages"]) == set(order)


def test_resume_reruns_a_stage_whose_file_changed(run_dir, tmp_path):
    """A file that differs from its manifest hash is never reused: its stage and every later one run again."""
    shutil.copytree(run_dir, tmp_path / "run")
    until = [*FLOW, "--until", "rtl"]
    r = subprocess.run(until, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    v = next((tmp_path / "run" / "rtl").glob("*.v"))
    good = v.read_bytes()
    v.write_bytes(good.replace(b"module", b"module  ", 1))
    r = subprocess.run(until, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(f"✓ {s} (reused" in r.stderr for s in ("train", "export", "golden"))
    assert "✓ rtl (reused" not in r.stderr and v.read_bytes() == good
    r = subprocess.run([*FLOW, "--until", "export", "--fresh"], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert r.returncode == 0 and "(reused" not in r.stderr, r.stderr[-2000:]
