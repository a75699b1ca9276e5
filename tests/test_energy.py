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
