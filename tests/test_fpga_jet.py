"""The hls4ml QKeras jet tagger's fully parallel design to an ECP5-85F bitstream with timing met (slow: about
12 minutes on one core; ``pytest -m slow tests/test_fpga_jet.py``). The README's figures for it come from the
same commands (docs/results/qkeras_jettagging_fpga.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codesign.fpga import build
from codesign.real_models import JET_PRECISION, QONNX
from codesign.rtl import generate
from codesign.verify import verify

pytestmark = pytest.mark.slow


@pytest.mark.needs("yosys")
@pytest.mark.needs("verilator")
def test_jet_tagger_bitstream_timing_met(tmp_path):
    onnx = QONNX / "qkeras_jettagging.onnx"
    rtl = tmp_path / "jet"
    iface = generate(onnx, rtl, input_precision=JET_PRECISION, flow_control="credit")
    assert iface["latency_cycles"] == 9 and iface["ii"] == 1
    v = verify(rtl, onnx, vectors=2000, simulator="verilator")
    assert v["ok"] and v["mismatches"] == 0 and v["vectors"] >= 2000
    r = build(rtl, tmp_path / "fpga", target="ecp5-85f", clock_mhz=45, seed=1, progress=False,
              placer="static", router="router2")
    assert r["timing_met"] is True and r["fmax_mhz"] >= 45
    bit = Path(r["bitstream"]).read_bytes()
    assert bit.startswith(b"\xff\x00Part: LFE5U-85F") and b"\xbd\xb3" in bit[:4096]
    saved = json.loads((tmp_path / "fpga" / "fpga.json").read_text())
    assert saved["placer"] == "static" and saved["router"] == "router2"
