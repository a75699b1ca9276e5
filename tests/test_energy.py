"""Analytic energy model: shifts instead of multiplies for power-of-two weights, nothing for zeros."""

import numpy as np
import pytest

from codesign import energy
from codesign.errors import ConfigError


def ops(w, in_bits=8):
    return energy.LayerOps("fc1", "dense", 1, np.asarray(w), in_bits, True, 8, units=len(w))


def test_table_interpolation():
    t = energy.EnergyTable.load()
    assert t.add(8) == pytest.approx(0.03) and t.add(32) == pytest.approx(0.1)
    assert t.mult(8, 8) == pytest.approx(0.2) and t.mult(32, 32) == pytest.approx(3.1)
    assert t.mult(4, 4) < t.mult(8, 8) < t.mult(8, 16)


def test_pot_weights_are_shifts_zero_weights_free():
    t = energy.EnergyTable.load()
    fixed = energy.layer_energy(ops([[3, 5, -7, 9]]), t)
    pot = energy.layer_energy(ops([[2, 4, -8, 1]]), t)
    sparse = energy.layer_energy(ops([[2, 0, 0, 1]]), t)
    assert fixed.mults == 4 and fixed.shifts == 0
    assert pot.mults == 0 and pot.shifts == 4
    assert sparse.shifts == 2 and sparse.adds < pot.adds
    assert sparse.pj < pot.pj < fixed.pj


def test_folded_reads_rom():
    t = energy.EnergyTable.load()
    par = energy.layer_energy(ops([[3, 5]]), t, "latency")
    fold = energy.layer_energy(ops([[3, 5]]), t, "resource")
    assert par.rom_bits == 0 and fold.rom_bits > 0 and fold.pj > par.pj


def test_bad_table(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\nadd_pj: {8: 0.03}\n")
    with pytest.raises(ConfigError, match="energy table"):
        energy.EnergyTable.load(p)


def test_from_model_and_chart(tmp_path):
    from codesign import config
    from codesign.quant import build_model

    for name, shape in (("digits_mlp_pot", (64,)), ("digits_cnn", (1, 8, 8))):
        m = build_model(config.load(name), shape, 10)
        o, io = energy.from_model(m)
        r = energy.estimate(o, io_bits=io)
        assert r["pj_per_inference"] > 0 and set(r["per_layer"]) >= {"fc1"}
        if name == "digits_mlp_pot":
            assert all(le["mults"] == 0 for le in r["layers"][:-1])
        energy.bar_chart(r, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- activity-based estimate ---------------------------------------------------------------------
def test_cell_table_and_expand():
    ct = energy.load_cell_table()
    assert ct["pj_per_toggle"]["LUT4"] > 0 and ct["pj_per_toggle"]["CCU2C"] >= ct["pj_per_toggle"]["LUT4"]
    mods = {"fc1": {"LUT4": 10, "rq": 2}, "rq": {"LUT4": 3, "TRELLIS_FF": 1}}
    assert energy._expand("fc1", mods, {}) == {"LUT4": 16, "TRELLIS_FF": 2}


def test_bad_cell_table(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\n")
    with pytest.raises(ConfigError, match="cell energy table"):
        energy.load_cell_table(p)


def test_activity_estimate_cells_and_fallback():
    tg = {"groups": {"u_fc1": {"toggles": 4000, "bits": 100}, "u_fc1.n0_rq": {"toggles": 1000, "bits": 100},
                     "u_fc2": {"toggles": 500, "bits": 50}, "(top)": {"toggles": 100, "bits": 10}}}
    ct = energy.load_cell_table()
    r = energy.activity_estimate(tg, ["fc1", "fc2"], 100, {"fc1": {"LUT4": 200}, "fc2": {"LUT4": 50}}, ct)
    fc1 = r["layers"][0]
    assert fc1["toggles"] == 5000 and fc1["bits"] == 200 and fc1["alpha"] == pytest.approx(0.25)
    assert r["per_layer"]["fc1"] == pytest.approx(0.25 * 200 * ct["pj_per_toggle"]["LUT4"], rel=1e-3)
    assert r["io_pj"] == pytest.approx(1 * ct["io_bit_pj"])
    nets = energy.activity_estimate(tg, ["fc1", "fc2"], 100, None, ct)
    assert nets["layers"][1]["method"] == "nets"
    assert nets["per_layer"]["fc2"] == pytest.approx(5 * ct["net_bit_pj"])


def test_compare_chart(tmp_path):
    from codesign import config
    from codesign.quant import build_model

    m = build_model(config.load("digits_mlp"), (64,), 10)
    o, io = energy.from_model(m)
    a = energy.estimate(o, io_bits=io)
    act = {"pj_per_inference": 10.0, "per_layer": {"fc1": 8.0, "fc2": 2.0}}
    energy.compare_chart(a, act, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_activity_from_rtl_small_mlp(tmp_path):
    """Simulate a tiny generated MLP with waveforms and weigh its toggles with yosys cells (minutes)."""
    from codesign.rtl import generate
    from codesign.rtl.fixtures import mlp_qonnx
    from codesign.verify import sim

    if not sim.available("verilator"):
        pytest.skip("verilator not available")
    onnx = mlp_qonnx(tmp_path / "m.onnx", sizes=(8, 4, 3), weights="pot")
    generate(onnx, tmp_path / "rtl")
    x = np.random.default_rng(0).integers(-128, 128, (50, 8))  # integer codes are taken as they are
    r = energy.activity_from_rtl(tmp_path / "rtl", x, vectors=100, work=tmp_path / "work")
    assert r["mismatches"] == 0 and r["vectors"] == 100
    assert set(r["per_layer"]) == {"fc1", "fc2"} and all(v > 0 for v in r["per_layer"].values())
    assert r["layers"][0]["method"] == "cells", r["note"]
