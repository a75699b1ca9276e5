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
    pytest.importorskip("da4ml")
    from bench.da4ml_model import comb_logic
    from codesign.rtl.ir import FixedFormat, Layer, Model, Requant

    rng = np.random.default_rng(0)
    fin = FixedFormat(8, True, -7)
    w1, b1 = rng.integers(-127, 128, (6, 5)), rng.integers(-300, 300, 5)
    w2, b2 = rng.integers(-8, 9, (5, 3)), rng.integers(-50, 50, 3)
    acc1 = FixedFormat(20, True, -14)
    out1 = FixedFormat(6, False, -5)
    l1 = Layer("fc1", "dense", (6,), (5,), fin, out1, "a", acc_fmt=acc1, weights=w1, bias=b1, w_scale_exp=-7,
               requant=Requant(9, rounding, True, out1))
    acc2 = FixedFormat(20, True, -12)
    l2 = Layer("fc2", "dense", (5,), (3,), out1, acc2, "b", acc_fmt=acc2, weights=w2, bias=b2, w_scale_exp=-7)
    ir = Model("t", "x", (6,), fin, [l1, l2])
    x = rng.integers(-128, 128, (3000, 6))
    got = comb_logic(ir).predict(x.astype(np.float64))
    assert np.array_equal(got, ir.run(x))
