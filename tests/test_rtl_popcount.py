"""The popcount form of fully parallel bipolar layers (``rtl.popcount``): a layer of 1-bit inputs and +-c weights
emits ``c * (popcount(x & P) - popcount(x & N)) + bias`` per output instead of an adder tree of single bits. Same
arithmetic, a fraction of the Verilog; bit-exact with the IR in simulation."""

from __future__ import annotations

import numpy as np
import pytest

from codesign.rtl import generate, lower
from codesign.rtl.emit.parallel import POPCOUNT_AUTO_FAN_IN


def _tfc(name: str, folder):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from codesign.real_models import bnn_pynq

    return lower(cleanup_model(ModelWrapper(str(bnn_pynq(name, folder)))).model, name)


@pytest.fixture(scope="module")
def tfc_1w1a(tmp_path_factory):
    """Brevitas bnn_pynq TFC_1W1A (random weights, randomized BatchNorm), lowered: bipolar layers of fan-in 64
    after a first layer of 784 one-bit inputs."""
    return _tfc("TFC_1W1A", tmp_path_factory.mktemp("tfc"))


def _sources(d) -> str:
    return "".join(p.read_text() for p in sorted(d.glob("*.v")))


@pytest.mark.needs("verilator")
@pytest.mark.parametrize("name", ["TFC_1W1A", "TFC_1W2A"])
def test_popcount_form_equals_the_ir(tfc_1w1a, tmp_path, name):
    """One bit plane (bipolar inputs as bits) and two (signed 2-bit activations: the sign plane subtracts)."""
    from codesign.verify import run_codes

    model = tfc_1w1a if name == "TFC_1W1A" else _tfc(name, tmp_path)
    iface = generate(model, tmp_path / "on", popcount="on")
    text = _sources(tmp_path / "on")
    assert text.count("cs_popcount #") >= 64 and "popcount form" in text
    assert ("2 bit plane(s)" in text) == (name == "TFC_1W2A")
    f = model.input_fmt
    x = np.random.default_rng(0).integers(f.lo, f.hi + 1, (300, int(np.prod(model.input_shape))))
    x[0], x[1] = f.lo, f.hi
    y, st = run_codes(tmp_path / "on", x, simulator="verilator")
    assert np.array_equal(y, model.run(x))
    assert st["latency"] == iface["latency_cycles"] and st["ii"] == 1


def test_popcount_auto_only_for_wide_layers(tfc_1w1a, tmp_path):
    """'auto' takes the form from a fan-in of POPCOUNT_AUTO_FAN_IN up (here the 784-input first layer), 'off'
    nowhere: narrower layers keep their adder trees, so existing designs do not change."""
    from codesign.rtl.api import rtl_config
    from codesign.rtl.emit.parallel import _terms, popcount_weight

    generate(tfc_1w1a, tmp_path / "auto")
    fan_in = {p.stem: p.read_text().count("cs_popcount #") for p in (tmp_path / "auto").glob("fc*.v")}
    assert POPCOUNT_AUTO_FAN_IN > 64 and fan_in["fc1"] > 0 and all(v == 0 for k, v in fan_in.items() if k != "fc1")
    fc1 = next(ly for ly in tfc_1w1a.layers if ly.name == "fc1")
    conns, _, fs = _terms(fc1)
    xs = {i: None for i in range(fc1.n_in)}
    assert popcount_weight(fc1, xs, conns, fs, rtl_config(None, popcount="auto")) == 2  # bipolar: 2 * bits
    assert popcount_weight(fc1, xs, conns, fs, rtl_config(None, popcount="off")) is None


@pytest.mark.needs("yosys")
@pytest.mark.needs("verilator")
def test_popcount_of_784_inputs_synthesizes_and_equals_the_ir(tfc_1w1a, tmp_path):
    """The first layer of TFC_1W1A cut to 3 outputs (accumulator out): each output counts ones over 784 bits.
    Written as ``$countones(x & mask)`` the YoWASP yosys front end exhausted its stack on it (the fully
    parallel SFC/TFC designs could be simulated but not synthesized); ``hw/cs_popcount.v`` (a tree of 32-bit
    ``$countones``) goes through ``synth_ecp5``, and the same source equals the IR in Verilator."""
    import dataclasses
    import subprocess

    from codesign.rtl.formats import FixedFormat
    from codesign.rtl.synth import parse_stat, yosys_cmd
    from codesign.verify import run_codes

    fc1 = tfc_1w1a.layers[0]
    acc = FixedFormat(11, True, 0)
    cut = dataclasses.replace(fc1, weights=fc1.weights[:, :3], out_shape=(3,), requant=None, out_fmt=acc,
                              acc_fmt=acc, bias=None)
    model = tfc_1w1a.replace(layers=(cut,))
    iface = generate(model, tmp_path, popcount="on")
    text = (tmp_path / "fc1.v").read_text()
    assert "$countones" not in text and text.count("cs_popcount #(.N(784)") == 6  # 3 outputs x (+, -)
    p = subprocess.run([yosys_cmd(), "-q", "-p", f"read_verilog -sv {' '.join(iface['files'])}; "
                        f"synth_ecp5 -top fc1; tee -q -o stat.txt stat"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-2000:]
    cells = parse_stat((tmp_path / "stat.txt").read_text())
    assert cells.get("LUT4", 0) > 1000  # 3 x 784 bits counted: not optimized away
    x = np.random.default_rng(1).integers(0, 2, (200, 784))
    x[0], x[1] = 0, 1
    y, _ = run_codes(tmp_path, x, simulator="verilator")
    assert np.array_equal(y, model.run(x))
