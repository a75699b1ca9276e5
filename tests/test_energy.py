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


def test_zeroed_weights_save_energy_in_parallel_layers_only():
    """A zero weight generates no logic in a parallel layer; in a folded layer it still costs a ROM read
    and a MAC slot (the weight ROM keeps the 0 and the slot fires every step)."""
    t = energy.EnergyTable.load()
    dense, sparse = ops([[3, 5, -7, 9], [6, -2, 11, 1]]), ops([[3, 0, 0, 9], [6, 0, 11, 0]])
    par_d, par_s = energy.layer_energy(dense, t, "latency"), energy.layer_energy(sparse, t, "latency")
    assert par_s.pj < par_d.pj and par_s.mults < par_d.mults and par_s.adds < par_d.adds
    fold_d, fold_s = energy.layer_energy(dense, t, "resource"), energy.layer_energy(sparse, t, "resource")
    assert fold_s.pj == pytest.approx(fold_d.pj) and fold_s.mults == fold_d.mults == 8
    assert fold_s.rom_bits == fold_d.rom_bits == 8 * 5  # 8 stored weights of 5 bits (-7..11)
    # all-power-of-two folded layer: barrel shifts, still one slot per stored weight, zero or not
    pot = energy.layer_energy(ops([[2, 0, -4, 1]]), t, "resource")
    assert pot.shifts == 4 and pot.mults == 0


def test_weight_costs_parallel_vs_folded():
    import torch

    from codesign import config
    from codesign.quant import build_model

    torch.manual_seed(0)
    m = build_model(config.load("digits_mlp", {"model.hidden": [8]}), (64,), 10).eval()
    with torch.no_grad():
        m.fc1.weight[:, :32] = 0
    par = energy.weight_costs(m, strategy="latency")
    fold = energy.weight_costs(m, strategy="resource")
    assert par["fc1"].shape == tuple(m.fc1.weight.shape) and set(par) == {"fc1", "fc2"}
    with torch.no_grad():
        qw = m.fc1.quant_weight()
        codes = torch.round(qw.value / qw.scale).numpy()
    assert np.all(par["fc1"][:, :32] == 0) and np.all((par["fc1"] > 0) == (codes != 0))
    assert all(np.all(c == 0) for c in fold.values())
    # the per-weight costs account for the layer's terms: zeroing every weight of fc1 saves about their sum
    o, io = energy.from_model(m)
    e0 = energy.estimate(o, strategy="latency", io_bits=io)["per_layer"]["fc1"]
    with torch.no_grad():
        m.fc1.weight.zero_()
    o, io = energy.from_model(m)
    e1 = energy.estimate(o, strategy="latency", io_bits=io)["per_layer"]["fc1"]
    assert e0 - e1 == pytest.approx(par["fc1"].sum(), rel=0.25)  # linear estimate (the accumulator narrows too)


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
@pytest.mark.needs("verilator", "yosys")
def test_activity_from_rtl_small_mlp(tmp_path):
    """Simulate a tiny generated MLP with waveforms and weigh its toggles with yosys cells (minutes)."""
    from codesign.rtl import generate
    from codesign.rtl.fixtures import mlp_qonnx
    onnx = mlp_qonnx(tmp_path / "m.onnx", sizes=(8, 4, 3), weights="pot")
    generate(onnx, tmp_path / "rtl")
    x = np.random.default_rng(0).integers(-128, 128, (50, 8))  # integer codes are taken as they are
    r = energy.activity_from_rtl(tmp_path / "rtl", x, vectors=100, work=tmp_path / "work")
    assert r["mismatches"] == 0 and r["vectors"] == 100
    assert set(r["per_layer"]) == {"fc1", "fc2"} and all(v > 0 for v in r["per_layer"].values())
    assert r["layers"][0]["method"] == "cells", r["note"]
