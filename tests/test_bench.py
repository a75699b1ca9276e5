"""Smoke tests of the benchmark suite (fast: no training, no synthesis)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import table, write_section


def test_write_section_replaces_only_its_block(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\n\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\n")
    write_section("a", "new a", doc)
    write_section("c", "new c", doc)
    text = doc.read_text()
    assert "new a" in text and "old a" not in text and "old b" in text and "new c" in text
    assert text.count("<!-- bench:a -->") == 1


def test_table():
    t = table(["x", "y"], [[1, 2.5], [None, 12345]])
    assert t.splitlines()[2] == "| 1 | 2.50 |" and "12,345" in t


@pytest.mark.parametrize("rounding", ["ROUND", "FLOOR"])
def test_da4ml_equivalent_is_bit_exact(rounding):
    from bench.da4ml_model import comb_logic
    from codesign.rtl.ir import Dense, FixedFormat, Model, Requant

    rng = np.random.default_rng(0)
    fin = FixedFormat(8, True, -7)
    w1, b1 = rng.integers(-127, 128, (6, 5)), rng.integers(-300, 300, 5)
    w2, b2 = rng.integers(-8, 9, (5, 3)), rng.integers(-50, 50, 3)
    acc1 = FixedFormat(20, True, -14)
    out1 = FixedFormat(6, False, -5)
    l1 = Dense(name="fc1", in_shape=(6,), out_shape=(5,), in_fmt=fin, out_fmt=out1, onnx_output="a", acc_fmt=acc1,
               weights=w1, bias=b1, w_scale_exp=-7, requant=Requant(9, rounding, True, out1))
    acc2 = FixedFormat(20, True, -12)
    l2 = Dense(name="fc2", in_shape=(5,), out_shape=(3,), in_fmt=out1, out_fmt=acc2, onnx_output="b", acc_fmt=acc2,
               weights=w2, bias=b2, w_scale_exp=-7)
    ir = Model("t", "x", (6,), fin, (l1, l2))
    x = rng.integers(-128, 128, (3000, 6))
    got = comb_logic(ir).predict(x.astype(np.float64))
    assert np.array_equal(got, ir.run(x))


def _two_layer_net(shift: int, seed: int = 1):
    """Two wide-shift layers whose outputs saturate often: with da4ml 0.6.0, the round-half-even
    construction used to shift da4ml's internal scale factor by 2**-shift twice per layer, down to
    2**-48 here, below 2**-31, where da4ml mis-encodes the saturation constant (jet_mlp: 138/5000
    vectors wrong)."""
    from codesign.rtl.ir import Dense, FixedFormat, Model, Requant

    rng = np.random.default_rng(seed)
    fin, out, acc = FixedFormat(8, True, -7), FixedFormat(6, False, -2), FixedFormat(32, True, -14)
    w1, w2 = rng.integers(-600, 1000, (16, 12)), rng.integers(-1500, 1000, (12, 6))
    l1 = Dense(name="fc1", in_shape=(16,), out_shape=(12,), in_fmt=fin, out_fmt=out, onnx_output="a", acc_fmt=acc,
               weights=w1, bias=None, w_scale_exp=-7, requant=Requant(shift, "ROUND", True, out))
    l2 = Dense(name="fc2", in_shape=(12,), out_shape=(6,), in_fmt=out, out_fmt=out, onnx_output="b", acc_fmt=acc,
               weights=w2, bias=rng.integers(150000, 250000, 6), w_scale_exp=-7,
               requant=Requant(shift, "ROUND", True, out))
    return Model("t", "x", (16,), fin, (l1, l2))


def test_da4ml_equivalent_saturates_after_wide_shifts():
    from bench.da4ml_model import MIN_FACTOR_EXP, comb_logic, min_factor_exp, trace_ir

    ir = _two_layer_net(12)
    x = np.random.default_rng(1).integers(-128, 128, (3000, 6 + 10))
    ref = ir.run(x, trace=True)
    assert (ref["fc2"] == 63).mean() > 0.01  # the saturation path is exercised
    _, out = trace_ir(ir)
    assert min_factor_exp(out) >= MIN_FACTOR_EXP
    got = comb_logic(ir).predict(x.astype(np.float64))
    assert np.array_equal(got, ref["fc2"])


def test_da4ml_equivalent_refuses_beyond_da4ml_factor_range():
    from bench.da4ml_model import trace_ir

    with pytest.raises(NotImplementedError, match="scale factor"):
        trace_ir(_two_layer_net(20))


def _tie_net(rounding: str, shift: int):
    from codesign.rtl.ir import Dense, FixedFormat, Model, Requant

    rng = np.random.default_rng(0)
    fin = FixedFormat(8, True, -7)
    w1, b1 = rng.integers(-127, 128, (6, 5)), rng.integers(-300, 300, 5)
    w2, b2 = rng.integers(-8, 9, (5, 3)), rng.integers(-50, 50, 3)
    acc1, out1 = FixedFormat(20, True, -14), FixedFormat(6, False, -5)
    l1 = Dense(name="fc1", in_shape=(6,), out_shape=(5,), in_fmt=fin, out_fmt=out1, onnx_output="a", acc_fmt=acc1,
               weights=w1, bias=b1, w_scale_exp=-7, requant=Requant(shift, rounding, True, out1))
    acc2 = FixedFormat(20, True, -12)
    l2 = Dense(name="fc2", in_shape=(5,), out_shape=(3,), in_fmt=out1, out_fmt=acc2, onnx_output="b", acc_fmt=acc2,
               weights=w2, bias=b2, w_scale_exp=-7)
    return Model("t", "x", (6,), fin, (l1, l2))


@pytest.mark.parametrize("construction", ["construct", "native"])
@pytest.mark.parametrize(("rounding", "shift"), [("ROUND", 2), ("ROUND", 9), ("FLOOR", 9)])
def test_alkaid_equivalent_is_bit_exact(rounding, shift, construction):
    """alkaid 0.8.2 traced from a tiny IR equals the golden IR interpreter bit for bit, round half to even
    included (shift 2: a quarter of the accumulators are exact ties), with our construction and with
    alkaid's own RND_CONV quantizer."""
    pytest.importorskip("alkaid")
    from bench.alkaid_model import comb_logic

    ir = _tie_net(rounding, shift)
    x = np.random.default_rng(1).integers(-128, 128, (3000, 6))
    ref = ir.run(x, trace=True)
    acc = x @ ir.layers[0].weights + ir.layers[0].bias
    if shift == 2:
        assert ((acc % 4) == 2).mean() > 0.2  # exact ties, both parities of the quotient
    got = comb_logic(ir, rounding=construction).predict(x.astype(np.float64))
    assert np.array_equal(got, ref["fc2"])


def test_alkaid_saturates_after_wide_shifts_and_small_factors():
    """da4ml 0.6.0 mis-encoded a saturation constant once its scale factor fell below 2**-32 (and the bench
    refuses _two_layer_net(20) for it); alkaid 0.8.2 gets both right, so its bench keeps no guard."""
    pytest.importorskip("alkaid")
    from bench.alkaid_model import comb_logic, factor_bug_check

    for exp in (-31, -33, -48):
        assert factor_bug_check(exp)["mismatches"] == 0
    for shift in (12, 20):
        ir = _two_layer_net(shift)
        x = np.random.default_rng(1).integers(-128, 128, (3000, 16))
        ref = ir.run(x, trace=True)
        assert (ref["fc2"] == 63).mean() > 0.01 or shift == 20
        assert np.array_equal(comb_logic(ir).predict(x.astype(np.float64)), ref["fc2"])


def test_peers_setting_choice_and_ratios(tmp_path):
    """bench peers picks alkaid's setting by Xilinx LUTs (a 1 % tie broken by FFs) and renders the ratios
    and where alkaid wins from the stored numbers."""
    from bench.peers import best_setting, render

    def pt(who, lut, ff, fm):
        return {"who": who, "latency": 4, "xilinx": {"LUT": lut, "FF": ff}, "ecp5": {"LUT4eq": lut},
                "pack": {"TRELLIS_COMB": lut // 2}, "place": {"median_mhz": fm, "seeds": 3}}

    sw = {"ours": {"latency": 4, "xilinx": {"LUT": 80, "FF": 30}},
          "settings": {"a": {"latency": 4, "mismatches_interp": 0, "vectors": 10, "xilinx": {"LUT": 1000, "FF": 500}},
                       "b": {"latency": 4, "mismatches_interp": 0, "vectors": 10, "xilinx": {"LUT": 1005, "FF": 300}},
                       "c": {"latency": 4, "mismatches_interp": 2, "vectors": 10, "xilinx": {"LUT": 10, "FF": 1}},
                       "d": {"latency": 6, "mismatches_interp": 0, "vectors": 10, "xilinx": {"LUT": 10, "FF": 1}}}}
    assert best_setting(sw) == "b"
    res = {"m": {"setting": "b", "mismatches_interp": 0, "vectors": 10,
                 "points": {"ours@4": pt("ours", 900, 200, 150.0), "alkaid@4": pt("alkaid", 1000, 300, 100.0)}}}
    text = render(sw, res, tmp_path)
    line = next(ln for ln in text.splitlines() if ln.startswith("- m, latency 4"))
    assert "Xilinx LUT 0.90" in line and "fmax (placement estimate) 1.50" in line and "alkaid wins" not in line
    res["m"]["points"]["ours@4"] = pt("ours", 1100, 200, 90.0)
    line = next(ln for ln in render(sw, res, tmp_path).splitlines() if ln.startswith("- m, latency 4"))
    assert "behind alkaid on Xilinx LUTs" in line and "alkaid wins on Xilinx LUT" in line and "fmax" in line


def test_peers_render_names_failures_and_uses_each_models_latency(tmp_path):
    """A tool run that did not finish reads "not finished" in the table (not "-") and is listed under Not
    measured; the why / no-keep paragraphs use each model's own default latency (8 for a 4-layer net)."""
    from bench.peers import render

    def pt(who, lut, ff, **kw):
        return {"who": who, "latency": 8, "pipeline": 1, "xilinx": {"LUT": lut, "FF": ff},
                "ecp5": {"LUT4": lut // 10, "CCU2": lut // 3, "LUT4eq": lut, "FF": ff}, **kw}

    res = {"jet": {"setting": "b", "mismatches_interp": 0, "vectors": 10, "points": {
        "ours@8": pt("ours", 900, 200, place={"per_seed": {"1": None}, "median_mhz": None, "seeds": 0,
                                             "not_finished": [1]}),
        "alkaid@8": pt("alkaid", 1000, 300),
        "ours-nokeep@8": pt("ours-nokeep", 950, 210),
        "ours@2": {"who": "ours", "latency": 2, "pipeline": 0, "xilinx": {"error": "yosys not finished after 900 s"},
                   "ecp5": {"LUT4": 1, "CCU2": 1, "LUT4eq": 3}}}}}
    text = render(None, res, tmp_path)
    row = next(ln for ln in text.splitlines() if ln.startswith("| jet | ours | 2 |"))
    assert row.count("not finished") == 4 and "ours@2 xilinx: yosys not finished" in text
    assert "| jet | ours | 8 |" in text and "| not finished | - |" in text
    assert "ours@8 placement: nextpnr not finished within its limit, seed 1" in text
    assert "jet, latency 8, the same Verilog" in text and "ours has fewer FFs on jet" in text
    assert "This is where alkaid wins" not in text


def test_peers_tool_runs_stop_at_the_deadline(monkeypatch, tmp_path):
    """BENCH_PEERS_DEADLINE cuts a tool run's time limit; a synthesis stopped there is recorded as not finished
    at the deadline (which a later run retries), not as a failure."""
    import subprocess
    import time

    from bench import peers

    monkeypatch.setattr(peers, "_DEADLINE", [time.time() + 5])
    assert peers._limit(900) <= 5 and peers._limit(1) == 1

    def slow(folder, files, top):
        raise subprocess.TimeoutExpired("yosys", peers._limit(peers.SYNTH_TIMEOUT))

    monkeypatch.setattr(peers, "xilinx", slow)
    err = peers.synth_one("xilinx", tmp_path, [], "top")["error"]
    assert "not finished" in err and "deadline" in err


def test_quick_mode_prints_only_unless_doc(monkeypatch, tmp_path):
    import importlib
    import types

    import bench.__main__ as bm

    seen = []
    fake = types.SimpleNamespace(run=lambda ctx: seen.append((ctx.quick, ctx.write_doc, ctx.models)))
    monkeypatch.setattr(importlib, "import_module", lambda name: fake)
    assert bm.main(["flow", "--quick", "--runs", str(tmp_path)]) == 0
    assert bm.main(["flow", "--quick", "--doc", "--runs", str(tmp_path), "--models", "digits_mlp,jet_mlp"]) == 0
    assert bm.main(["all", "--runs", str(tmp_path), "--no-doc"]) == 0
    assert seen[0] == (True, False, ()) and seen[1] == (True, True, ("digits_mlp", "jet_mlp"))
    assert len(seen) == 2 + len(bm.ALL) and not any(w for _, w, _ in seen[2:])


def test_a_mismatch_found_by_a_bench_is_exit_status_1(monkeypatch, tmp_path, capsys):
    """A bench that finds a mismatch (or could not check) prints its tables, then says so and exits 1."""
    import importlib
    import types

    import bench.__main__ as bm

    def measure(ctx):
        ctx.expect_zero("fake: design A", 0)
        ctx.expect_zero("fake: design B", 3)
        ctx.expect_zero("fake: design C", None)

    monkeypatch.setattr(importlib, "import_module", lambda name: types.SimpleNamespace(run=measure))
    assert bm.main(["flow", "--quick", "--runs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH: fake: design B: 3 mismatches" in err and "design C: not checked" in err
    assert "design A" not in err and "2 bit-exactness check(s) failed" in err


def test_da4ml_render_reports_every_ratio_and_what_is_missing():
    from bench.da4ml import render

    ecp5 = {"LUT4": 100, "CCU2": 50, "LUT4eq": 200, "FF": 30}
    full = {"ours": {"ecp5": ecp5, "xilinx": {"LUT": 90, "FF": 30, "CARRY4": 20, "DSP": 0}, "latency": 4,
                     "build_s": 20.0, "mismatches": 0, "pnr": {"fmax_mhz": 150.0}},
            "da4ml": {"ecp5": {**ecp5, "LUT4": 200}, "xilinx": {"LUT": 100, "FF": 20, "CARRY4": 10, "DSP": 0},
                      "latency": 5, "verilator_build_s": 40.0, "mismatches_interp": 0, "mismatches_rtl": 0,
                      "vectors": 5000, "pnr": {"fmax_mhz": 120.0}}, "measured": "2026-01-01 00:00 UTC"}
    quick = {"ours": {"ecp5": ecp5, "latency": 4}, "da4ml": {"ecp5": ecp5, "latency": 4, "mismatches_interp": 0,
                                                            "vectors": 2000}}
    text = render({"a": full, "b": quick}, ("ecp5",), False)
    ratio_a = next(ln for ln in text.splitlines() if ln.startswith("| a | **ours/da4ml**"))
    cells = [c.strip() for c in ratio_a.strip("| ").split("|")][2:]
    assert cells == ["0.50", "1.00", "1.00", "1.00", "0.90", "1.50", "2.00", "0/0", "1.25", "0.80", "0.50"]
    assert "not measured yet for: b" in text and "not run yet for: b" in text
    assert "Verilator RTL model not built" in text


@pytest.mark.slow
def test_bench_all_quick(tmp_path):
    """The benches' smoke run end to end: every section printed, nothing failed, the doc left alone
    (cold: fresh run, Verilator and ccache folders; 350 s of one worker in the 2026-12-03 `make test`, the
    longest test by far, so it runs with the slow tests: `make test-slow`)."""
    import os
    import subprocess
    import sys

    from bench.common import DOC, ROOT

    before = DOC.read_text() if DOC.exists() else None
    env = {**os.environ, "CODESIGN_SIM_CACHE": str(tmp_path / "sim"), "CCACHE_DIR": str(tmp_path / "ccache")}
    p = subprocess.run([sys.executable, "-m", "bench", "all", "--quick", "--runs", str(tmp_path / "runs")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    print("\n".join(ln for ln in p.stderr.splitlines() if ln.startswith("[bench")))  # per-bench wall / CPU s
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for title in ("Accuracy of the model zoo", "Golden model throughput", "RTL resources and latency",
                  "Verification speed", "Comparison with da4ml", "Flow wall time per stage"):
        assert f"### {title}" in p.stdout, title
    assert "0 / 2000 mismatches (da4ml interpreter)" in p.stdout
    if before is not None:  # quick results are printed, not written (another process may edit the doc: compare
        assert "(quick mode)" not in DOC.read_text().replace(before, "")  # only what changed)


def test_da4ml_netlist_kept_when_unchanged(tmp_path):
    """An identical netlist is not rewritten (its cached synthesis results stay valid); a different one is."""
    from bench.da4ml import write_netlist
    from bench.da4ml_model import comb_logic

    folder = tmp_path / "d"
    _, new = write_netlist(comb_logic(_two_layer_net(12)), "t", folder)
    top = folder / "src" / "da4ml_t.v"
    (folder / "src" / "stat_ecp5.txt").write_text("cached")
    mtime = top.stat().st_mtime_ns
    _, again = write_netlist(comb_logic(_two_layer_net(12)), "t", folder)
    assert new and not again and top.stat().st_mtime_ns == mtime and (folder / "src" / "stat_ecp5.txt").exists()
    _, changed = write_netlist(comb_logic(_two_layer_net(12, seed=2)), "t", folder)
    assert changed and not (folder / "src" / "stat_ecp5.txt").exists()


def test_real_is_not_part_of_all_and_its_vectors_hold_the_corners():
    from bench.__main__ import ALL, BENCHES
    from bench.real import rtl_vectors
    from codesign.rtl.ir import FixedFormat

    assert "real" in BENCHES and "real" not in ALL
    f = FixedFormat(bits=2, signed=True, scale_exp=0, narrow=True)
    x = rtl_vectors(f, 5, 20)
    assert x.shape == (24, 5) and x.min() == -1 and x.max() == 1
    assert x[20].tolist() == [-1] * 5 and x[21].tolist() == [1] * 5 and x[22].tolist() == [-1, 1, -1, 1, -1]


def test_real_child_process_is_stopped_at_its_limit():
    import time

    from bench.real import in_child

    assert in_child(lambda: 6 * 7, 30)[:2] == ("ok", 42)
    status, val, wall = in_child(lambda: time.sleep(30), 0.5)
    assert status == "timeout" and val is None and wall < 10
    status, val, _ = in_child(lambda: 1 / 0, 30)
    assert status == "error" and "ZeroDivisionError" in val


def test_real_layer_fmax_places_one_layer_between_registers(tmp_path):
    """bench real's per-layer fmax: the layer module alone inside the out-of-context wrapper, through real yosys
    and nextpnr-ecp5 (placement)."""
    from bench.real import _layer_fmax
    from codesign.rtl import generate
    from codesign.rtl.fixtures import mlp_qonnx

    rtl = tmp_path / "rtl"
    generate(mlp_qonnx(tmp_path / "m.onnx", sizes=(8, 4, 3)), rtl, strategy="latency")
    r = _layer_fmax(rtl, "fc2", 300)
    assert r.get("fmax_mhz", 0) > 20, r
    top = (rtl / "fmax_fc2" / "codesign_ooc_top.v").read_text()
    assert "fc2 u_acc" in top and ".in_data(sr)" in top


def test_pnr_seeds_conclusions_come_from_the_rows():
    """The pnr_seeds bench's summary lines are computed from its measured rows (not fixed strings), and the
    bench stays out of ``all`` (routed builds, minutes per seed)."""
    from bench.__main__ import ALL, BENCHES
    from bench.pnr_seeds import _render

    assert "pnr_seeds" in BENCHES and "pnr_seeds" not in ALL
    row = dict(arcs=1000, pnr_s=10.0)
    rows = [{**row, "seed": 1, "headway": 0.02, "flagged": True, "router1_s": 90.0, "fmax_mhz": 70.0},
            {**row, "seed": 2, "headway": 0.5, "flagged": False, "router1_s": 30.0, "fmax_mhz": 75.5},
            {**row, "seed": 3, "headway": 0.4, "flagged": False, "router1_s": 50.0, "fmax_mhz": 72.25}]
    text = _render("m", 50.0, rows)
    assert "seeds not flagged (2): router1 30.0-50.0 s (median 40.0 s), fmax 72.25-75.50 MHz" in text
    assert "seed 1 flagged: headway 2.0% at 10,000 iterations, router1 90.0 s, fmax 70.00 MHz" in text
    assert "no seed flagged" in _render("m", 50.0, rows[1:])
