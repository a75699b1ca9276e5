"""Quantizers and model builders: po2 weights are exactly {0, +-2^e}, every scale is a power of two,
stable layer names, bad configs raise CodesignError before training."""

import math

import numpy as np
import pytest
import torch

from codesign import config, quant
from codesign.errors import CodesignError

torch.set_num_threads(1)


def _is_po2(v: float) -> bool:
    return v > 0 and math.log2(v) == round(math.log2(v))


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_pot_quantize_values_and_range(bits):
    w = torch.randn(64, 32) * 0.3
    q, scale = quant.pot_quantize(w, bits)
    n_exp = quant.pot_n_exp(bits)
    nz = q[q != 0].abs()
    e = torch.log2(nz)
    assert torch.all(e == torch.round(e)), "non-zero values must be exact powers of two"
    emax = math.floor(math.log2(4 / 3 * float(w.abs().max())))
    assert int(e.max()) <= emax and int(e.min()) >= emax - n_exp + 1
    assert float(scale) == 2.0 ** (emax - n_exp + 1)
    # integer codes on the 2^emin grid fit a signed narrow integer of pot_int_bits
    codes = (q / scale).abs()
    assert float(codes.max()) <= 2 ** (quant.pot_int_bits(bits) - 1) - 1
    assert torch.all(torch.sign(q[q != 0]) == torch.sign(w[q != 0]))


def test_pot_quantize_nearest():
    w = torch.tensor([1.0, 0.74, 0.76, 1.49, 1.51, -0.3, 0.0, 1e-4])
    q, _ = quant.pot_quantize(w, 3)  # 3 exponents: emax = floor(log2(4/3*1.51)) = 1 -> {0.5, 1, 2}
    assert q.tolist() == [1.0, 0.5, 1.0, 1.0, 2.0, -0.5, 0.0, 0.0]


def test_pot_model_weights_are_powers_of_two():
    cfg = config.load("digits_mlp_pot")
    m = quant.build_model(cfg, (64,), 10)
    assert m.pot_layers() == ["fc1", "fc2"]
    m.eval()
    for name in ("fc1", "fc2"):
        qw = getattr(m, name).quant_weight()
        v = qw.value.detach()
        nz = v[v != 0].abs()
        assert torch.all(torch.log2(nz) == torch.round(torch.log2(nz)))
        assert _is_po2(float(qw.scale)) and float(qw.zero_point) == 0
        assert float(qw.bit_width) == quant.pot_int_bits(4)
    names = quant.snap_pot_weights(m)
    assert names == ["fc1", "fc2"]
    w = m.fc1.weight.detach()
    assert torch.equal(w, m.fc1.quant_weight().value.detach())


@pytest.mark.parametrize("name,shape", [("digits_mlp", (64,)), ("digits_cnn", (1, 8, 8)), ("mnist1d_cnn", (1, 40))])
def test_builders_names_and_po2_scales(name, shape):
    cfg = config.load(name)
    m = quant.build_model(cfg, shape, 10)
    x = torch.rand(4, *shape) * 2 - 1
    m.train()
    m(x).sum().backward()
    m.eval()
    y, feats = m(x, return_features=True)
    assert y.shape == (4, 10)
    layers = m.weight_layers()
    assert layers[-1].startswith("fc") and all(n[-1].isdigit() for n in layers)
    assert _is_po2(float(feats["inp"].scale)) and float(feats["inp"].scale) == 2.0 ** -7
    for n in layers:
        qw = getattr(m, n).quant_weight()
        assert _is_po2(float(qw.scale)) and float(qw.zero_point) == 0
    for n, f in feats.items():
        if n.startswith("relu"):
            assert _is_po2(float(f.scale)) and float(f.zero_point) == 0
    # float twin has the same parameter names
    fm = quant.build_float_model(cfg, shape, 10)
    fkeys = set(fm.state_dict())
    assert fkeys <= set(m.state_dict())


def test_per_layer_override():
    cfg = config.load("digits_mlp", {"quant.layers": {"fc2": {"weight": {"scheme": "pot", "bits": 3}}}})
    m = quant.build_model(cfg, (64,), 10)
    assert m.pot_layers() == ["fc2"]
    assert float(m.fc1.quant_weight().bit_width) == 8


@pytest.mark.parametrize("over,match", [
    ({"quant.layers": {"fc7": {"weight": {"bits": 4}}}}, "fc7"),
    ({"quant.weight": {"scheme": "pot", "bits": 6}}, "bits"),
    ({"quant.act": {"rounding": "HALF_UP"}}, "HALF_UP"),
    ({"quant.input": {"scale": "float"}}, "quant.input.scale"),
    ({"quant.weight": {"scheme": "float", "bits": 2, "narrow": False}}, "narrow"),
    ({"quant.layers": {"fc2": {"act": {"bits": 4}}}}, "output layer"),
])
def test_bad_config_raises(over, match):
    cfg = config.load("digits_mlp", over)
    with pytest.raises(CodesignError, match=match):
        quant.build_model(cfg, (64,), 10)


def test_builder_layout_mismatch():
    cfg = config.load("digits_cnn")
    with pytest.raises(CodesignError, match="cnn2d"):
        quant.build_model(cfg, (64,), 10)
    cfg = config.load("digits_cnn", {"model.channels": [4, 4, 4, 4]})
    with pytest.raises(CodesignError, match="pool"):
        quant.build_model(cfg, (1, 8, 8), 10)


def test_input_grid():
    cfg = config.load("digits_mlp")
    m = quant.build_model(cfg, (64,), 10)
    x = np.random.default_rng(0).uniform(-1.2, 1.2, (5, 64)).astype(np.float32)
    g = quant.input_grid(m, x).numpy()
    codes = g * 128
    assert np.all(codes == np.round(codes)) and codes.min() >= -128 and codes.max() <= 127


def test_ternary_and_floor_rounding():
    cfg = config.load("digits_mlp", {"quant.weight": {"scheme": "ternary"}, "quant.act": {"rounding": "FLOOR"}})
    m = quant.build_model(cfg, (64,), 10)
    v = m.fc1.quant_weight()
    codes = (v.value / v.scale).detach()
    assert set(torch.unique(codes).tolist()) <= {-1.0, 0.0, 1.0}


def test_pot_quantize_is_nearest_allowed_value():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=1, max_size=40), st.integers(2, 5))
    def check(vals, bits):
        w = torch.tensor(vals, dtype=torch.float32)
        q, scale = quant.pot_quantize(w, bits)
        if float(w.abs().max()) == 0:
            assert torch.all(q == 0)
            return
        emin = int(math.log2(float(scale)))
        mags = [0.0] + [2.0 ** e for e in range(emin, emin + quant.pot_n_exp(bits))]
        cand = torch.tensor(sorted({s * m for m in mags for s in (1.0, -1.0)}), dtype=torch.float64)
        dist = (w.double()[:, None] - cand[None, :]).abs().min(1).values
        assert torch.all((w.double() - q.double()).abs() <= dist + 1e-12)

    check()


@pytest.mark.parametrize("scale", ["po2", "float"])
def test_activation_scale_learned_or_from_statistics(scale):
    """``quant.act.learned``: a trained scale parameter (default) or the running statistics, no parameter; the
    statistics-driven po2 scale stays a power of two after a training step."""
    kinds = {}
    for learned in (True, False):
        cfg = config.load("digits_mlp_pot", {"quant.act": {"bits": 3, "scale": scale, "learned": learned}})
        m = quant.build_model(cfg, (64,), 10)
        relu = next(mod for mod in m.modules() if type(mod).__name__ == "QuantReLU")
        si = relu.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl
        kinds[learned] = (type(si).__name__, sorted(k for k, _ in si.named_parameters()))
        if not learned:
            m.train()
            m(torch.rand(32, 64))
            m.eval()
            s = float(relu.act_quant.scale().detach())
            assert s > 0 and (scale == "float" or math.log2(s) == round(math.log2(s)))
    assert kinds[True][1] == ["value"] and kinds[False] == ("RuntimeStatsScaling", [])
