"""codesign.verify on a hand-written AXI-Stream DUT (tests/data/verify_dut): bit-exact comparison,
backpressure, broken variants caught and localized, both simulators, both testbench styles."""

from __future__ import annotations

import importlib.util
import json
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from codesign.errors import StageInputError, VerificationError
from codesign.verify import Reference, load_interface, verify
from codesign.verify.iface import codes_to_ints, hex_to_codes, int_to_codes, pack_hex_lines
from codesign.verify.stimulus import corner_vectors, make_stimulus

# the codesign_verify fixture; skip when the package already registers it as a pytest11 entry point
# (pluggy refuses to register one module under two names)
if not any(ep.value.startswith("codesign.verify.pytest_plugin") for ep in entry_points(group="pytest11")):
    pytest_plugins = ["codesign.verify.pytest_plugin"]

DUT = Path(__file__).parent / "data" / "verify_dut"
needs_verilator = pytest.mark.needs("verilator")
needs_icarus = pytest.mark.needs("iverilog")


def _load_ref():
    spec = importlib.util.spec_from_file_location("verify_dut_reference", DUT / "reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


R = _load_ref()
REF = Reference(run_codes=lambda x: (R.run_codes(x), R.OUT_SCALE_EXP), trace_codes=R.trace_codes, name="tiny")


def _variant(tmp_path: Path, old: str, new: str, iface_patch: dict | None = None) -> Path:
    d = tmp_path / "dut"
    shutil.copytree(DUT, d)
    v = d / "tiny_dense.v"
    text = v.read_text()
    assert old in text
    v.write_text(text.replace(old, new))
    if iface_patch:
        j = json.loads((d / "interface.json").read_text())
        j.update(iface_patch)
        (d / "interface.json").write_text(json.dumps(j))
    return d


# ---- pure-Python parts ---------------------------------------------------------------------

def test_packing_roundtrip():
    iface = load_interface(DUT)
    rng = np.random.default_rng(1)
    for s in (iface.input, iface.output, iface.layers[0].tap):
        c = rng.integers(s.code_min, s.code_max + 1, (50, s.fields))
        assert np.array_equal(int_to_codes(codes_to_ints(c, s), s), c)
        lines = np.frombuffer(pack_hex_lines(c, s), np.uint8).reshape(50, -1)[:, :-1]
        got, unknown = hex_to_codes(lines, s)
        assert np.array_equal(got, c) and not unknown.any()
    # field 0 in the LSBs
    assert codes_to_ints(np.array([[1, 0, 0, -1]]), iface.input) == [0xFF000001]
    x = np.frombuffer(b"0x0000ff", np.uint8).reshape(1, 8)
    assert hex_to_codes(x, iface.input)[1][0]  # x/z digits are flagged


def test_stimulus_kinds_and_corners():
    s = load_interface(DUT).input
    c = corner_vectors(s, -128, 127)
    rows = {tuple(r) for r in c.tolist()}
    assert (0, 0, 0, 0) in rows and (-128,) * 4 in rows and (127,) * 4 in rows
    assert (-128, 127, -128, 127) in rows and (127, 0, 0, 0) in rows
    test_x = np.array([[0.5, -1.0, 7.9375, -8.0]])  # real values on the 2^-4 grid
    x, kinds, info = make_stimulus(s, 1000, test_x, seed=3, spec={"code_min": -127, "code_max": 127})
    assert (kinds == 1).sum() == 1 and (kinds == 2).sum() == 1000
    assert x[kinds == 1].tolist() == [[8, -16, 127, -128]]
    assert x[kinds == 2].min() == -127 and x[kinds == 2].max() == 127  # narrow grid from input_spec
    with pytest.raises(StageInputError, match="not on the input grid"):
        make_stimulus(s, 0, np.array([[0.01, 0, 0, 0]]), seed=0)


# ---- simulation ----------------------------------------------------------------------------

@needs_verilator
def test_tiny_dut_verilator_stream(tmp_path):
    test_x = np.random.default_rng(7).integers(-128, 128, (300, 4)) * 2.0**-4
    res = verify(DUT, REF, vectors=20_000, test_x=test_x, out_dir=tmp_path)
    assert res["mismatches"] == 0, res["first_mismatches"]
    assert res["vectors_by_kind"]["random"] == 20_000 and res["vectors_by_kind"]["test"] == 300
    assert res["vectors_by_kind"]["corner"] > 5
    assert res["ok"] and res["checks_failed"] == []
    assert res["latency_cycles"]["measured_min"] == res["latency_cycles"]["measured_max"] == 2
    assert res["ii"]["measured_max"] == 1
    assert res["scale_exp"]["ok"] and res["protocol_errors"] == 0
    # the second half ran with input gaps and output backpressure: more cycles than vectors
    assert res["backpressure"]["enabled"] and res["backpressure"]["cycles"] > res["vectors"] * 1.2
    saved = json.loads((tmp_path / "verify.json").read_text())
    assert saved["mismatches"] == 0 and saved["simulator"] == "verilator"


@needs_icarus
def test_tiny_dut_icarus_stream(tmp_path):
    res = verify(DUT, REF, vectors=4000, simulator="icarus", out_dir=tmp_path)
    assert res["mismatches"] == 0 and res["ok"], res
    assert res["unknown_outputs"] == 0


@needs_verilator
def test_loop_style_verilator():
    res = verify(DUT, REF, vectors=3000, style="loop")
    assert res["mismatches"] == 0 and res["ok"], res
    assert res["latency_cycles"]["measured_max"] == 2 and res["ii"]["measured_max"] == 1


@needs_icarus
def test_loop_style_icarus():
    res = verify(DUT, REF, vectors=800, style="loop", simulator="icarus")
    assert res["mismatches"] == 0 and res["ok"], res


BROKEN_ROUNDING = ("(rem == 5'd16 && q[0]); // ROUNDING", "(rem == 5'd16); // ROUNDING")  # half-up, off by one


@needs_verilator
def test_broken_rounding_is_caught_and_localized(tmp_path):
    d = _variant(tmp_path, *BROKEN_ROUNDING)
    res = verify(d, REF, vectors=5000)
    assert res["mismatches"] > 100 and not res["ok"]
    m = res["first_mismatches"][0]
    assert m["expected"] != m["got"] and len(m["input"]) == 4
    loc = res["localization"]
    assert loc["method"] == "taps" and loc["first_bad_layer"] == "fc1"


@needs_icarus
def test_broken_rounding_is_caught_icarus(tmp_path):
    d = _variant(tmp_path, *BROKEN_ROUNDING)
    res = verify(d, REF, vectors=1000, simulator="icarus", localize=False)
    assert res["mismatches"] > 20


@needs_verilator
def test_broken_output_stage_localized_after_last_tap(tmp_path):
    d = _variant(tmp_path, "+ h3  + 10'sd5;", "+ h3  + 10'sd6;")
    res = verify(d, REF, vectors=500, backpressure=False)
    assert res["mismatches"] == res["vectors"]
    loc = res["localization"]
    assert loc["first_bad_layer"] is None and "after the last tap" in loc["note"]
    assert res["first_mismatches"][0]["fields"] == [1]


@needs_verilator
def test_ignoring_backpressure_is_caught(tmp_path):
    # a DUT that never stalls: drops and overwrites beats when tready is low
    d = _variant(tmp_path, "wire en = !v2 || m_axis_tready;", "wire en = 1'b1;")
    res = verify(d, REF, vectors=4000)
    assert res["protocol_errors"] > 0 and res["mismatches"] > 0 and not res["ok"]
    assert "handshake" in res["localization"]["note"]  # the failing vectors pass when re-run alone
    clean = verify(d, REF, vectors=4000, backpressure=False, localize=False)
    assert clean["mismatches"] == 0  # only backpressure exposes it


@needs_verilator
def test_wrong_declared_latency_and_scale(tmp_path):
    d = _variant(tmp_path, "// ROUNDING", "// ROUNDING ", iface_patch={"latency_cycles": 3})
    ref = Reference(run_codes=lambda x: (R.run_codes(x), -3), trace_codes=R.trace_codes)
    res = verify(d, ref, vectors=1000)
    assert res["mismatches"] == 0 and not res["ok"]
    failed = " ".join(res["checks_failed"])
    assert "latency" in failed and "scale_exp" in failed


@needs_verilator
def test_waves_and_toggle_counts(tmp_path):
    test_x = np.random.default_rng(5).integers(-128, 128, (400, 4)) * 2.0**-4
    res = verify(DUT, REF, vectors=3000, test_x=test_x, waves=True, out_dir=tmp_path)
    assert res["mismatches"] == 0
    assert res["waves"] and Path(res["waves"]).exists()
    t = res["toggles"]
    assert t["stimulus"] == "test set" and t["vectors"] == 400
    assert t["toggles"] > 0 and 400 < t["cycles"] < 500
    assert "fc1" in t["groups"] and t["by_layer"]["fc1"] > 0


@needs_verilator
def test_pytest_fixture(codesign_verify):
    res = codesign_verify(DUT, REF, vectors=2000)
    assert res["mismatches"] == 0


class _PytestConfig:
    def __init__(self, options: dict, ini: dict):
        self.options, self.ini = options, ini

    def getoption(self, name):
        return self.options.get(name)

    def getini(self, name):
        return self.ini.get(name, False if name == "codesign_waves" else "")


def test_pytest_fixture_defaults_are_verify_config_keys():
    from codesign.errors import ConfigError
    from codesign.verify.pytest_plugin import verify_defaults

    vc = verify_defaults(_PytestConfig({}, {}))
    assert (vc.simulator, vc.random_vectors, vc.waves) == ("verilator", 100_000, False)
    vc = verify_defaults(_PytestConfig({"--codesign-vectors": 50}, {"codesign_sim": "icarus", "codesign_vectors": "7",
                                                                    "codesign_waves": True}))
    assert (vc.simulator, vc.random_vectors, vc.waves) == ("icarus", 50, True)  # the command line wins
    with pytest.raises(ConfigError, match="verify.simulator"):
        verify_defaults(_PytestConfig({}, {"codesign_sim": "modelsim"}))


@needs_verilator
def test_run_stage(tmp_path, monkeypatch):
    from codesign import config as config_mod
    from codesign.run import RunDir
    from codesign.verify import core

    rd = RunDir(tmp_path / "run")
    shutil.copytree(DUT, rd.path("rtl"))
    rd.stage_dir("export")
    rd.path("export", "model.onnx").write_bytes(b"stand-in")
    np.save(rd.path("export", "test_x.npy"), np.random.default_rng(0).integers(-128, 128, (50, 4)) * 2.0**-4)
    monkeypatch.setattr(core, "make_reference", lambda src, iface: REF)
    cfg = config_mod.from_dict({"verify": {"random_vectors": 2000}})
    fig = core.run_stage(rd, cfg)
    assert fig["mismatches"] == 0 and fig["vectors"] > 2050
    rep = rd.report()["verify"]
    assert rep["mismatches"] == 0 and rep["simulator"] == "verilator" and rep["vectors_per_s"] > 0
    assert "verify/verify.json" in rd.manifest()["files"]
    # a broken design raises VerificationError naming the count
    shutil.rmtree(rd.path("rtl"))
    shutil.copytree(_variant(tmp_path, *BROKEN_ROUNDING), rd.path("rtl"))
    with pytest.raises(VerificationError, match=r"vectors mismatch; first layer that differs: fc1"):
        core.run_stage(rd, cfg)


@needs_verilator
def test_deadlock_is_reported(tmp_path):
    d = _variant(tmp_path, "assign m_axis_tvalid  = v2;", "assign m_axis_tvalid  = 1'b0;")
    res = verify(d, REF, vectors=200, localize=False)
    assert res["missing_outputs"] == res["vectors"] == res["mismatches"]
    assert any("deadlock" in c for c in res["checks_failed"])
    assert res["first_mismatches"][0]["note"] == "no output beat (missing)"


needs_yosys = pytest.mark.needs("yosys")
GATE_SIM = "icarus"  # Icarus compiles a netlist in 0.3 s


@needs_yosys
@needs_icarus
def test_gate_level_netlist(tmp_path):
    res = verify(DUT, REF, vectors=2000, gate_level=True, out_dir=tmp_path, simulator=GATE_SIM)
    assert res["level"] == "gate" and res["mismatches"] == 0 and res["ok"], res["checks_failed"]
    assert (tmp_path / "gate" / "netlist.v").exists()
    g = res["gate"]
    assert g["target"] == "generic" and g["models"] == ["simcells.v"]
    # gates stay cell instances (write_verilog -noexpr), so simcells.v is what is simulated
    assert g["cells"].get("$_XOR_", 0) > 10 and any("DFF" in c for c in g["cells"])
    broken = verify(_variant(tmp_path, *BROKEN_ROUNDING), REF, vectors=1500, gate_level=True, simulator=GATE_SIM)
    assert broken["mismatches"] > 0 and broken["localization"]["first_bad_layer"] == "fc1"


VENDOR_CELLS = {"ecp5": {"LUT4", "CCU2C", "TRELLIS_FF", "MULT18X18D"}, "ice40": {"SB_LUT4", "SB_CARRY", "SB_MAC16"}}


@needs_yosys
@needs_icarus
@pytest.mark.parametrize("target", ["ecp5", "ice40"])
def test_gate_level_vendor_cells(tmp_path, target):
    """synth_ecp5 / synth_ice40 -dsp netlists with the vendor cell models yosys ships (the tiny DUT's
    three multipliers become MULT18X18D / SB_MAC16 DSPs); the broken rounding is caught at gate level."""
    res = verify(DUT, REF, vectors=1200, gate_level=target, out_dir=tmp_path, simulator=GATE_SIM)
    assert res["level"] == "gate" and res["mismatches"] == 0 and res["ok"], res["checks_failed"]
    assert res["unknown_outputs"] == 0 and res["latency_cycles"]["ok"]
    g = res["gate"]
    assert g["target"] == target and VENDOR_CELLS[target] <= set(g["cells"]), g["cells"]
    assert all((tmp_path / "gate" / m).exists() for m in g["models"])
    broken = verify(_variant(tmp_path, *BROKEN_ROUNDING), REF, vectors=800, gate_level=target, simulator=GATE_SIM)
    assert broken["mismatches"] > 5 and broken["localization"]["first_bad_layer"] == "fc1"


@needs_yosys
@needs_verilator
def test_gate_level_ecp5_verilator(tmp_path):
    res = verify(DUT, REF, vectors=20_000, gate_level="ecp5", out_dir=tmp_path)
    assert res["simulator"] == "verilator" and res["mismatches"] == 0 and res["ok"], res["checks_failed"]
    assert res["backpressure"]["cycles"] > res["vectors"] * 1.2 and res["protocol_errors"] == 0


@needs_icarus
def test_mult18x18d_model_signed_modes(tmp_path):
    """The MULT18X18D behavioural model against Python integers, all four signedness modes."""
    from codesign.verify.gate import MULT18X18D_MODEL

    rng = np.random.default_rng(3)
    cases = [(int(a), int(b), sa, sb) for sa in (0, 1) for sb in (0, 1)
             for a, b in [*rng.integers(0, 1 << 18, (40, 2)).tolist(), (0x3FFFF, 0x3FFFF), (0x20000, 0x20000),
                          (0x20000, 0x1FFFF), (0, 0x3FFFF)]]
    pins = lambda name, n, sig: ", ".join(f".{name}{i}({sig}[{i}])" for i in range(n))  # noqa: E731
    lines = "\n".join(f"        a = 18'h{a:x}; b = 18'h{b:x}; sa = {sa}; sb = {sb}; #1 $display(\"%h\", p);"
                       for a, b, sa, sb in cases)
    (tmp_path / "tb.v").write_text(f"""module tb;
    reg [17:0] a, b; reg sa, sb; wire [35:0] p;
    MULT18X18D m ({pins("A", 18, "a")}, {pins("B", 18, "b")}, {pins("P", 36, "p")}, .SIGNEDA(sa), .SIGNEDB(sb));
    initial begin
{lines}
    end
endmodule
""")
    (tmp_path / "m.v").write_text(MULT18X18D_MODEL)
    import subprocess

    subprocess.run(["iverilog", "-o", str(tmp_path / "a.vvp"), str(tmp_path / "m.v"), str(tmp_path / "tb.v")],
                   check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "a.vvp")], capture_output=True, text=True, check=True)
    got = [int(v, 16) for v in out.stdout.split()]
    sx = lambda v, s: v - (1 << 18) if s and v >> 17 else v  # noqa: E731
    assert got == [(sx(a, sa) * sx(b, sb)) & ((1 << 36) - 1) for a, b, sa, sb in cases]


def test_gate_helpers():
    from codesign.errors import CodesignError
    from codesign.verify.gate import _keep_modules, cell_types, normalize_target

    assert [normalize_target(v) for v in (False, None, "none", True, "generic", "ECP5", "ice40")] == \
        [None, None, None, "generic", "generic", "ecp5", "ice40"]
    with pytest.raises(CodesignError, match="unknown gate-level target"):
        normalize_target("xilinx")
    net = ("module t(a, y);\n  wire x;\n  LUT4 #(\n    .INIT(16'h1)\n  ) u_1 (\n    .A(a)\n  );\n"
           "  \\$_DFF_P_  \\q_reg[0]  /* _12_ */ (\n    .C(c)\n  );\n  CCU2C \\c.d  (\n  );\n"
           "  assign y = x;\nendmodule\n")
    assert cell_types(net) == {"$_DFF_P_": 1, "CCU2C": 1, "LUT4": 1}
    lib = ("`define X 1\nmodule A(input i); B b(.i(i)); endmodule\nmodule B(input i); endmodule\n"
           "(* blackbox *)\nmodule C(input i);\nendmodule\n")
    kept = _keep_modules(lib, {"A"})
    assert "module A" in kept and "module B" in kept and "module C" not in kept and "`define X" in kept


@needs_yosys
@needs_icarus
def test_cli_gate_level_option(tmp_path, monkeypatch):
    """``codesign verify RUN --gate-level ecp5`` reaches verify(); the config accepts the targets."""
    from typer.testing import CliRunner

    from codesign import cli
    from codesign import config as config_mod
    from codesign import flow as flow_mod
    from codesign.run import RunDir
    from codesign.verify import core

    rd = RunDir(tmp_path / "run")
    flow_mod.save_config(rd, config_mod.from_dict({"verify": {"simulator": GATE_SIM}}))
    shutil.copytree(DUT, rd.path("rtl"))
    rd.stage_dir("export")
    rd.path("export", "model.onnx").write_bytes(b"stand-in")
    monkeypatch.setattr(core, "make_reference", lambda src, iface: REF)
    r = CliRunner().invoke(cli.app, ["verify", str(rd.root), "--gate-level", "ecp5", "--vectors", "500"])
    assert r.exit_code == 0, r.output
    res = json.loads(rd.path("verify", "verify.json").read_text())
    assert res["level"] == "gate" and res["gate"]["target"] == "ecp5" and res["mismatches"] == 0
    assert config_mod.from_dict({"verify": {"gate_level": True}}).verify.gate_level is True  # backwards compatible


@pytest.mark.slow
@needs_yosys
@needs_verilator
def test_digits_mlp_ecp5_gate_level_10k(tmp_path):
    """The gate-level verification target: the ECP5 netlist (synth_ecp5, DSPs kept) of a digits-sized MLP
    (64-32-10, 8-bit), folded like the default digits_mlp config (reuse 32, pipeline 4), simulated
    with the vendor cell models on 10,000 random + corner vectors with backpressure (~2-4 min)."""
    from codesign import rtl
    from codesign.rtl.fixtures import mlp_qonnx

    onnx = mlp_qonnx(tmp_path / "model.onnx", sizes=(64, 32, 10), seed=0)
    rtl.generate(onnx, tmp_path / "rtl", strategy="resource", reuse=32, pipeline=4)
    res = verify(tmp_path / "rtl", onnx, vectors=10_000, gate_level="ecp5", out_dir=tmp_path / "verify")
    assert res["vectors"] >= 10_000 and res["mismatches"] == 0 and res["ok"], res["checks_failed"]
    assert res["gate"]["cells"].get("MULT18X18D", 0) > 0 and res["ii"]["measured_max"] == 32


@needs_verilator
def test_output_beats_after_the_last_vector_fail(tmp_path):
    """A design that keeps emitting after the expected vectors: every vector compares equal, yet it fails."""
    d = _variant(tmp_path, "assign m_axis_tvalid  = v2;",
                 "reg [15:0] nout = 16'd0;\n"
                 "    always @(posedge clk) if (m_axis_tvalid && m_axis_tready) nout <= nout + 16'd1;\n"
                 "    assign m_axis_tvalid  = v2 || (nout >= 16'd200 && !rst);")
    res = verify(d, REF, vectors=200, corners=False, localize=False)
    assert res["mismatches"] == 0 and not res["ok"]
    assert any("after the last expected vector" in c for c in res["checks_failed"]), res["checks_failed"]


@needs_verilator
def test_simulator_that_stops_early_fails(tmp_path):
    """A run that ends before the testbench finished (here the DUT calls $finish) is an error naming the log;
    a finished run without a complete status file is a failed check."""
    from codesign.errors import CodesignError
    from codesign.verify.core import SimResult, _status_checks

    d = _variant(tmp_path, "    reg        v1, v2;", "    reg        v1, v2;\n    reg [15:0] cyc = 16'd0;\n"
                 "    always @(posedge clk) begin cyc <= cyc + 16'd1; if (cyc == 16'd300) $finish; end")
    with pytest.raises(CodesignError, match="did not complete.*log"):
        verify(d, REF, vectors=2000, corners=False, localize=False)
    r = SimResult(np.zeros((3, 3), np.int64), np.zeros(3, bool), np.zeros(3), np.zeros(3), {}, [], 0.0, 0.0, None,
                  tmp_path)
    assert any("did not finish" in c for c in _status_checks(r, 3))
    r.status = {"finished": 1, "out": 2, "timeout": 0, "extra": 0}
    assert any("counted 2 output beats" in c for c in _status_checks(r, 3))


def test_golden_reference_runs_in_chunks(monkeypatch):
    """The golden model is called on bounded chunks (a conv net's intermediates are hundreds of times its
    input: CNV on 10,000 vectors at once ran out of memory); the result is the same as one call."""
    from types import SimpleNamespace

    from codesign.verify import reference as R

    calls = []

    class G:
        input_spec = None

        def run_codes(self, x):
            calls.append(len(x))
            return x.reshape(len(x), -1).sum(axis=1, keepdims=True) * 3, -2

    same = SimpleNamespace(scale_exp=0, from_bits_codes=lambda x: x, to_bits_codes=lambda x: x)
    ref = R._from_golden(G(), "stub", SimpleNamespace(input=same, output=same))
    x = np.random.default_rng(0).integers(-9, 9, (1000, 4, 4))
    monkeypatch.setattr(R, "REF_CHUNK_FIELDS", 16 * 64)
    codes, se = ref.run(x)
    assert calls == [64] * 15 + [40] and se == -2
    assert np.array_equal(codes, x.reshape(1000, -1).sum(axis=1, keepdims=True) * 3)
