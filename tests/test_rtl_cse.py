"""Common-subexpression sharing in fully parallel adder trees (codesign.rtl.cse): exact sums, bounded
depth, fewer adders in yosys, and bit-exact simulation with every pipelining depth."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from codesign.rtl import generate
from codesign.rtl.cse import share
from codesign.rtl.emit.netlist import csd
from codesign.rtl.ir import FixedFormat, Requant
from codesign.verify import run_codes

sys.path.insert(0, str(Path(__file__).parent))
from rtl_helpers import needs_iverilog, needs_verilator  # noqa: E402
from test_rtl import _lint, needs_yosys  # noqa: E402


def _columns(w: np.ndarray) -> list[list[tuple[int, int, int]]]:
    return [[(i, k, s) for i in range(w.shape[0]) for s, k in csd(int(w[i, j]))] for j in range(w.shape[1])]


def _evaluate(cols, shared, x) -> list[int]:
    v = {i: int(xi) for i, xi in enumerate(x)}
    for t in shared:
        assert t.a in v and t.b in v, "a shared term uses a term defined after it"
        v[t.id] = (v[t.a] << t.ka) + t.sign_b * (v[t.b] << t.kb)
    return [sum(s * (v[src] << k) for src, k, s in c) for c in cols]


@pytest.mark.parametrize("kind,seed", [("pot", 0), ("pot", 1), ("fixed", 2), ("sparse", 3)])
def test_share_keeps_every_sum_and_saves_adders(kind, seed):
    rng = np.random.default_rng(seed)
    n_in, n_out = 24, 16
    if kind == "fixed":
        w = rng.integers(-127, 128, size=(n_in, n_out))
    else:
        w = rng.choice([-1, 1], size=(n_in, n_out)) * (1 << rng.integers(0, 5, size=(n_in, n_out)))
        if kind == "sparse":
            w[rng.random(w.shape) < 0.5] = 0
    cols = _columns(w)
    shared, new = share(cols, first_id=n_in, max_level=3)
    assert shared and all(1 <= t.level <= 3 and min(t.ka, t.kb) == 0 for t in shared)
    adders_before = sum(max(len(c) - 1, 0) for c in cols)
    adders_after = sum(max(len(c) - 1, 0) for c in new) + len(shared)
    assert adders_after < 0.85 * adders_before, (adders_before, adders_after)
    for _ in range(50):
        x = rng.integers(-200, 200, size=n_in)
        assert _evaluate(new, shared, x) == (x @ w).tolist()


@pytest.mark.parametrize("copies", [1, 3, 4])
def test_share_in_register_groups_stays_in_its_group(copies):
    """rtl.copies: terms are shared within a register group only (each group an island for the placer),
    every sum unchanged; one group is the plain layer-wide sharing."""
    from codesign.config import RTLConfig
    from codesign.rtl.emit.parallel import _share_in_groups

    rng = np.random.default_rng(7)
    w = (2 ** rng.integers(0, 4, size=(20, 10))) * rng.choice([-1, 1], size=(20, 10))
    cols = _columns(w)
    shared, out = _share_in_groups(cols, 20, RTLConfig(copies=copies, pipeline=4))
    if copies == 1:
        assert (shared, out) == share(cols, first_id=20)
    x = rng.integers(-128, 128, size=20)
    assert _evaluate(out, shared, x) == [int(v) for v in x @ w]
    by_id = {t.id: t for t in shared}
    group_of: dict[int, int] = {}
    for j, c in enumerate(out):
        g = j * copies // len(out)
        todo = [src for src, _, _ in c if src >= 20]
        while todo:  # every shared term an output reads, directly or through another shared term
            t = by_id[todo.pop()]
            assert group_of.setdefault(t.id, g) == g, f"shared term s{t.id} read by groups {group_of[t.id]}, {g}"
            todo += [src for src in (t.a, t.b) if src >= 20]
    assert len(set(group_of.values())) == copies


def test_share_leaves_huge_layers_alone():
    w = np.ones((40, 40), dtype=np.int64)
    cols = _columns(w)
    shared, new = share(cols, first_id=40, max_pairs=100)
    assert shared == [] and new == cols


def _shared_model(seed: int = 0, pot: bool = True):
    """Two dense layers whose weight columns repeat patterns (much sharing), with a bias, a requant
    with saturation, and signed/unsigned formats."""
    from codesign.rtl.frontend.lower import sized
    from codesign.rtl.ir import Dense, Model

    rng = np.random.default_rng(seed)
    n_in, n_hid = 20, 14
    fin = FixedFormat(6, True, -5)
    if pot:
        base = rng.choice([-1, 1], size=(n_in, 4)) * (1 << rng.integers(0, 6, size=(n_in, 4)))
    else:
        base = rng.integers(-60, 61, size=(n_in, 4))
    w = base[:, rng.integers(0, 4, size=n_hid)] * rng.choice([1, 2], size=n_hid)
    w[rng.random(w.shape) < 0.2] = 0
    b = rng.integers(-300, 300, size=n_hid)
    hid = FixedFormat(5, False, -3)
    l1 = sized(Dense(name="fc1", in_shape=(n_in,), out_shape=(n_hid,), in_fmt=fin, out_fmt=fin, onnx_output="t1",
                     weights=w, bias=b, w_scale_exp=-6, acc_fmt=FixedFormat(1, True, -11)))
    l1 = l1.replace(requant=Requant(hid.scale_exp - l1.acc_fmt.scale_exp, "ROUND", True, hid), out_fmt=hid)
    w2 = rng.choice([-2, -1, 1, 4], size=(n_hid, 5))
    l2 = sized(Dense(name="fc2", in_shape=(n_hid,), out_shape=(5,), in_fmt=hid, out_fmt=hid, onnx_output="t2",
                     weights=w2, bias=None, w_scale_exp=0, acc_fmt=FixedFormat(1, True, -3)))
    return Model("shared", "x", (n_in,), fin, (l1, l2.replace(out_fmt=l2.acc_fmt)), "t2")


@needs_iverilog
@needs_verilator
@pytest.mark.parametrize("pot,pipeline", [(True, 0), (True, 1), (True, 2), (True, 5), (False, 3)])
def test_shared_design_is_bit_exact(tmp_path, pot, pipeline):
    m = _shared_model(seed=pipeline, pot=pot)
    d = tmp_path / "rtl"
    iface = generate(m, d, pipeline=pipeline)
    text = (d / "fc1.v").read_text()
    assert "shared term s" in text  # the design really shares terms
    _lint(d, iface)
    rng = np.random.default_rng(pipeline)
    x = rng.integers(m.input_fmt.lo, m.input_fmt.hi + 1, size=(400, 20))
    x[0], x[1] = m.input_fmt.lo, m.input_fmt.hi
    out, st = run_codes(d, x, backpressure=True)
    assert np.array_equal(out, m.run(x))
    assert st["latency"] == iface["latency_cycles"]


@needs_yosys
def test_share_cuts_adders_in_yosys(tmp_path):
    from codesign.rtl.fixtures import mlp_qonnx
    from codesign.rtl.synth import cell_counts

    onnx_path = tmp_path / "mlp_pot.onnx"
    mlp_qonnx(onnx_path, (64, 32, 10), "pot")
    counts = {}
    for flag in (False, True):
        d = tmp_path / f"share_{flag}"
        generate(onnx_path, d, share=flag)
        c = cell_counts(d, "coarse")
        assert c.get("$mul", 0) == 0
        counts[flag] = c.get("$add", 0) + c.get("$sub", 0)
    assert counts[True] < 0.8 * counts[False], counts


def test_share_switch_cli_and_config(tmp_path):
    """`codesign rtl --no-share` and config rtl.share: false give one tree per output; the default shares."""
    import subprocess

    from codesign import config
    from codesign.rtl.fixtures import mlp_qonnx

    assert config.load("digits_mlp").rtl.share is True
    assert config.load("digits_mlp", {"rtl.share": False}).rtl.share is False
    onnx_path = tmp_path / "mlp_pot.onnx"
    mlp_qonnx(onnx_path, (64, 32, 10), "pot")
    texts = {}
    for flag in ("--share", "--no-share"):
        out = tmp_path / flag.strip("-")
        p = subprocess.run([sys.executable, "-m", "codesign", "rtl", str(onnx_path), "--out", str(out), flag],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        texts[flag] = (out / "fc1.v").read_text()
    assert "shared term s" in texts["--share"] and "shared term" not in texts["--no-share"]
