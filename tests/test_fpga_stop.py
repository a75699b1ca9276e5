"""Stopping codesign stops its tools: SIGTERM to ``codesign fpga`` kills the yosys/nextpnr it started (before,
a killed ``codesign fpga`` left nextpnr running on, writing into the build folder)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DUT = Path(__file__).parent / "data" / "fpga_dut"


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.needs("yosys")
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc")
def test_sigterm_stops_the_tool_processes(tmp_path):
    dut = tmp_path / "dut"
    shutil.copytree(DUT, dut)
    cli = [sys.executable, "-c", "from codesign.cli import main; main()", "fpga", str(dut)]
    proc = subprocess.Popen(cli, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tools: list[int] = []
    try:
        t0 = time.monotonic()
        while not tools and proc.poll() is None and time.monotonic() - t0 < 120:
            tools = _children(proc.pid)
            time.sleep(0.05)
        assert tools, f"no tool started: {proc.poll()} {proc.stdout.read() if proc.poll() is not None else ''}"
        time.sleep(1.0)  # the tool is running (yosys synthesis of the wrapper takes longer than this)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 143 and "terminated" in out and "Traceback" not in out, out
        deadline = time.monotonic() + 10
        while any(_alive(t) for t in tools) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(t) for t in tools)
    finally:
        for t in [*tools, proc.pid]:
            if _alive(t):
                os.kill(t, signal.SIGKILL)


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for c in _children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc")
def test_sigterm_stops_verify_simulator_processes(tmp_path):
    """``codesign verify`` runs Verilator, make and the compilers through cocotb's runner (not the FPGA tool
    registry): SIGTERM during the build leaves none of them running."""
    import torch

    torch.set_num_threads(1)
    from codesign.rtl import generate
    from codesign.rtl.fixtures import mlp_qonnx

    p = mlp_qonnx(tmp_path / "m.onnx", sizes=(16, 8, 4))
    generate(p, tmp_path / "rtl")
    env = {**os.environ, "CODESIGN_SIM_CACHE": str(tmp_path / "simcache"), "CCACHE_DISABLE": "1"}
    cli = [sys.executable, "-c", "from codesign.cli import main; main()", "verify", str(tmp_path / "rtl"),
           "--vectors", "200000"]
    proc = subprocess.Popen(cli, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen: set[int] = set()
    try:
        t0 = time.monotonic()
        while len(seen) < 2 and proc.poll() is None and time.monotonic() - t0 < 120:
            seen |= set(_tree(proc.pid))
            time.sleep(0.05)
        assert seen, f"no simulator process started: {proc.poll()}"
        time.sleep(1.0)  # make has started the compilers
        seen |= set(_tree(proc.pid))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 143 and "terminated" in out and "Traceback" not in out, out
        deadline = time.monotonic() + 1  # killed, not left to finish their compile
        while any(_alive(t) for t in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(t) for t in seen), [t for t in seen if _alive(t)]
    finally:
        for t in [*seen, proc.pid]:
            if _alive(t):
                os.kill(t, signal.SIGKILL)
