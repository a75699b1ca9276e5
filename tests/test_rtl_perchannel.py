"""RTL backend: per-output-channel power-of-two weight scales (Brevitas ``scaling_per_output_channel``).

The IR stores the weights aligned to the finest channel scale; the fully parallel emitter divides each
field's power-of-two factor back out (per-field requantization shift), the folded one keeps the
aligned weights. A network whose last linear layer has per-channel scales and no output quantizer
emits every output field at its own scale (``interface.json`` ``output.scale_exps``), exactly the
golden model's codes.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from rtl_helpers import assert_ir_matches_golden, lint, make_model, needs_verilator, quant_node, verify_ok

from codesign import golden
from codesign.rtl import generate, lower
from codesign.rtl.ir import AccLayer, Linear


@pytest.fixture(scope="module")
def pc_models(tmp_path_factory):
    from codesign.rtl.fixtures import cnn_qonnx, mlp_qonnx

    d = tmp_path_factory.mktemp("pc")
    cache = {}

    def get(name: str):
        if name not in cache:
            p = d / f"{name}.onnx"
            if name == "mlp_pc":
                cache[name] = mlp_qonnx(p, (16, 8, 4), per_channel=True, seed=2)
            elif name == "mlp_pc_relu":  # hidden layer with requant, per-channel everywhere, 3 layers
                cache[name] = mlp_qonnx(p, (12, 8, 8, 6), per_channel=True, seed=4)
            elif name == "cnn_pc":
                cache[name] = cnn_qonnx(p, in_shape=(1, 6, 6), channels=4, per_channel=True, seed=1)
            elif name == "cnn1_pc":
                cache[name] = cnn_qonnx(p, in_shape=(2, 12), channels=3, dims=1, stride=2, per_channel=True)
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["mlp_pc", "mlp_pc_relu", "cnn_pc", "cnn1_pc"])
def test_lower_per_channel_matches_golden(pc_models, name):
    p = pc_models(name)
    m = lower(p)
    lin = [ly for ly in m.layers if isinstance(ly, Linear)]
    assert all(ly.field_shift is not None and int(np.max(ly.field_shift)) >= 2 for ly in lin)
    last = m.layers[-1]
    assert last.field_out and last.requant is None and m.output_exps is not None
    # weights aligned onto the finest scale: every field's terms and bias share the factor 2^shift
    for ly in lin:
        for terms, b, t in zip(ly.connections(), ly.bias_vector(), ly.field_shift, strict=True):
            assert all(w % (1 << int(t)) == 0 for _, w in terms) and int(b) % (1 << int(t)) == 0
    g, x = assert_ir_matches_golden(p, m)
    # requantized hidden layers equal the golden trace (their scale is one power of two again)
    tr = g.trace((x[:50] * 2.0 ** m.input_fmt.scale_exp).reshape(50, *m.input_shape))
    ours = m.run(x[:50], trace=True)
    for ly in m.layers:
        if isinstance(ly, AccLayer) and ly.requant is not None and not ly.field_out:
            assert np.array_equal(np.asarray(tr[ly.onnx_output][0]).reshape(50, -1), ours[ly.name]), ly.name


def test_parallel_requant_shift_per_field(pc_models, tmp_path):
    m = lower(pc_models("mlp_pc_relu"))
    generate(m, tmp_path / "rtl")
    fc1 = (tmp_path / "rtl" / "fc1.v").read_text()
    shifts = {int(s) for s in re.findall(r"\.SHIFT\((-?\d+)\)", fc1)}
    assert len(shifts) > 1  # one requantization shift per channel
    assert shifts == {m.layers[0].requant.shift - int(t) for t in m.layers[0].field_shift}
    assert "multiple of 2^shift[i]" in fc1
    fc3 = (tmp_path / "rtl" / "fc3.v").read_text()
    assert "field i at scale" in fc3


def test_interface_per_field_output_scales(pc_models, tmp_path):
    p = pc_models("cnn_pc")
    m = lower(p)
    it = generate(m, tmp_path / "rtl", strategy="resource", reuse=5)
    out, e = golden.GoldenModel(str(p)).run_codes(np.zeros((1, *m.input_shape), dtype=np.int64))
    assert it["output"]["scale_exp"] is None
    assert it["output"]["scale_exps"] == [int(v) for v in np.asarray(e).ravel()]
    assert it["layers"][-1]["scale_exps"] == it["output"]["scale_exps"]


@needs_verilator
@pytest.mark.parametrize("name,kw", [
    ("mlp_pc", {}),
    ("mlp_pc", {"strategy": "resource", "reuse": 4, "pipeline": 2}),
    ("mlp_pc", {"strategy": "resource", "reuse": 64, "pipeline": 3}),         # input-serial folding
    ("mlp_pc_relu", {"multiplier": "dsp", "pipeline": 2, "debug_taps": True}),
    ("mlp_pc_relu", {"strategy": "resource", "reuse": 8, "pipeline": 1, "multiplier": "dsp"}),
    ("cnn_pc", {}),
    ("cnn_pc", {"strategy": "resource", "reuse": 5, "pipeline": 2}),
    ("cnn1_pc", {"strategy": "resource", "reuse": 3, "pipeline": 1}),
])
def test_per_channel_rtl_verifies(pc_models, tmp_path, name, kw):
    p = pc_models(name)
    d = tmp_path / "rtl"
    iface = generate(p, d, **kw)
    lint(d, iface)
    verify_ok(d, p)


def test_per_channel_activation_scale_rejected(tmp_path):
    from codesign.errors import UnsupportedError

    inits = []
    nodes = [quant_node("x", "y", np.array([[2.0**-3, 2.0**-2, 2.0**-3]]), 0, 6, 1, 0, "ROUND", inits, name="qin")]
    with pytest.raises(UnsupportedError, match="qin.*per-channel activation scales"):
        lower(make_model(nodes, inits, (1, 3), (1, 3)))


def _relu_pc_graph():
    """MatMul with per-channel weight scales + a per-channel bias finer than the accumulator, then a bare
    Relu as the output: per-field output scales min(accumulator, bias) per channel, as the golden model."""
    from onnx import helper
    from rtl_helpers import const

    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    rng = np.random.default_rng(0)
    inits.append(const("W", rng.normal(scale=0.5, size=(6, 5))))
    nodes.append(quant_node("W", "Wq", np.array([[2.0**-4, 2.0**-2, 2.0**-5, 2.0**-3, 2.0**-2]]), 0, 6, 1, 1, "ROUND",
                            inits, name="wq"))
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["h"], name="mm"))
    inits.append(const("B", rng.normal(scale=0.5, size=5)))
    nodes.append(quant_node("B", "Bq", np.array([2.0**-7, 2.0**-5, 2.0**-8, 2.0**-6, 2.0**-9]), 0, 16, 1, 0, "ROUND",
                            inits, name="bq"))
    nodes.append(helper.make_node("Add", ["h", "Bq"], ["hb"], name="bias"))
    nodes.append(helper.make_node("Relu", ["hb"], ["y"], name="relu"))
    return make_model(nodes, inits, (1, 6), (1, 5))


@needs_verilator
@pytest.mark.parametrize("kw", [{}, {"strategy": "resource", "reuse": 2}, {"strategy": "resource", "reuse": 20,
                                                                           "pipeline": 2}])
def test_finer_per_channel_bias_and_relu_output(tmp_path, kw):
    import onnx

    p = tmp_path / "m.onnx"
    onnx.save(_relu_pc_graph(), str(p))
    m = lower(p)
    ly = m.layers[0]
    assert ly.field_out and ly.requant.relu and not ly.out_fmt.signed
    assert m.output_exps.tolist() == [-7, -5, -8, -6, -9]  # min(-3 + weight exp, bias exp) per channel
    assert_ir_matches_golden(p, m)
    d = tmp_path / "rtl"
    lint(d, generate(m, d, **kw))
    verify_ok(d, p)
