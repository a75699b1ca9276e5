"""The default model, run twice with the same config and seed, gives byte-identical artifacts up to RTL: the
QONNX model and the whole RTL folder (Verilog, interface.json, ir.json). The bitstream's reproducibility is
checked in the slow run (tests/test_flow.py, the kill test with the fpga stage compares it byte for byte)."""

import subprocess
import sys
from pathlib import Path

DEFAULT = [sys.executable, "-m", "codesign", "flow", "digits_mlp", "--until", "rtl"]


def _artifacts(run: Path) -> dict[str, bytes]:
    files = [run / "export" / "model.onnx"]
    files += sorted(p for p in (run / "rtl").rglob("*") if p.is_file() and not p.name.startswith("."))
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def test_default_model_twice_gives_identical_qonnx_and_rtl(tmp_path):
    runs = []
    for name in ("a", "b"):
        r = subprocess.run([*DEFAULT, "--out", str(tmp_path / name)], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        runs.append(_artifacts(tmp_path / name))
    a, b = runs
    assert "rtl/interface.json" in a and any(k.endswith(".v") for k in a)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
