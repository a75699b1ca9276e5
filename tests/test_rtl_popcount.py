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
    assert text.count("$countones") >= 64 and "popcount form" in text
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
    fan_in = {p.stem: p.read_text().count("$countones") for p in (tmp_path / "auto").glob("fc*.v")}
    assert POPCOUNT_AUTO_FAN_IN > 64 and fan_in["fc1"] > 0 and all(v == 0 for k, v in fan_in.items() if k != "fc1")
    fc1 = next(ly for ly in tfc_1w1a.layers if ly.name == "fc1")
    conns, _, fs = _terms(fc1)
    xs = {i: None for i in range(fc1.n_in)}
    assert popcount_weight(fc1, xs, conns, fs, rtl_config(None, popcount="auto")) == 2  # bipolar: 2 * bits
    assert popcount_weight(fc1, xs, conns, fs, rtl_config(None, popcount="off")) is None
