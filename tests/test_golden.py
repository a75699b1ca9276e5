"""Golden model: equality with qonnx execute_onnx on Brevitas exports, hypothesis tests against a slow
exact reference (Python ints / Fractions), API and bad-input errors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from golden_models import QDOMAIN, const, export_pair, hls4ml_model, make_model, quant_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from codesign.errors import CodesignError, UnsupportedError
from codesign.golden import GoldenModel
from codesign.golden.compare import count_mismatches, qonnx_reference
from codesign.golden.quant import max_int, min_int

MODES = ["ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO", "HALF_UP", "HALF_DOWN", "UP", "round", "floor"]


# ------------------------------------------------------------------------------------ reference
def ref_round(v: Fraction, mode: str) -> int:
    mode = mode.upper()
    f = math.floor(v)
    r = v - f
    if mode == "FLOOR":
        return f
    if mode == "CEIL":
        return math.ceil(v)
    if mode in ("ROUND_TO_ZERO", "DOWN"):
        return math.trunc(v)
    if mode == "UP":
        return math.ceil(v) if v > 0 else math.floor(v)
    if r != Fraction(1, 2):
        return f + (1 if r > Fraction(1, 2) else 0)
    if mode in ("ROUND", "HALF_EVEN"):
        return f + (f % 2)
    if mode == "HALF_UP":
        return f + 1 if v > 0 else f
    if mode == "HALF_DOWN":
        return f if v > 0 else f + 1
    raise AssertionError(mode)


def ref_quant(x: Fraction, scale: Fraction, zp: Fraction, bits: int, signed: bool, narrow: bool, mode: str):
    """The QONNX Quant formula, literally, on exact rationals."""
    y = x / scale + zp
    if bits == 1 and signed:
        y = Fraction(1) if y >= 0 else Fraction(-1)
    else:
        y = min(max(y, min_int(signed, narrow, bits)), max_int(signed, narrow, bits))
        y = ref_round(y, mode)
    return (y - zp) * scale


def fr(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    out = np.empty(a.shape, dtype=object)
    for i, v in np.ndenumerate(a):
        out[i] = Fraction(float(v))
    return out


def vquant(xs, scale, zp, bits, signed, narrow, mode):
    scale = np.broadcast_to(np.asarray(scale, dtype=object), xs.shape)
    out = np.empty(xs.shape, dtype=object)
    for i, v in np.ndenumerate(xs):
        out[i] = ref_quant(v, Fraction(float(scale[i])), Fraction(zp), bits, signed, narrow, mode)
    return out


def as_float(a) -> np.ndarray:
    return np.vectorize(float, otypes=[np.float64])(a)


# ------------------------------------------------------------------------------------ brevitas
KINDS = [("mlp", False), ("mlp", True), ("mlp_pc", False), ("conv1d", False), ("conv2d", False), ("conv2d", True),
         ("conv2d_pc", False)]

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_exports")
    out = {}
    for kind, po2 in KINDS:
        out[(kind, po2)] = export_pair(kind, d, po2=po2, seed=1)
    return out


@pytest.mark.parametrize("kind,po2", KINDS)
@pytest.mark.parametrize("variant", [0, 1], ids=["raw", "clean"])
def test_brevitas_matches_execute_onnx(exports, kind, po2, variant):
    path = exports[(kind, po2)][variant]
    gm = GoldenModel(path)
    rng = np.random.default_rng(0)
    x = gm.quantize_input(rng.normal(scale=1.5, size=(24, *gm.input_spec.shape)))
    y = gm.run(x)
    ref = qonnx_reference(path, x)
    assert count_mismatches(y, ref) == 0
    # extremes of the input grid too
    sp = gm.input_spec
    xe = np.ldexp(np.stack([np.full(sp.shape, sp.code_min), np.full(sp.shape, sp.code_max)]).astype(float),
                  sp.scale_exp)
    assert count_mismatches(gm.run(xe), qonnx_reference(path, xe)) == 0
    # bounds contain every traced value
    rg = gm.ranges()
    for name, (codes, e) in gm.trace(x).items():
        lo, hi, re_ = rg[name]
        assert re_ == e if isinstance(e, int) else np.array_equal(re_, e)
        assert lo <= int(codes.min()) and int(codes.max()) <= hi, name


def test_raw_and_clean_agree(exports):
    raw, clean = exports[("conv2d", False)]
    a, b = GoldenModel(raw), GoldenModel(clean)
    x = a.quantize_input(np.random.default_rng(3).normal(size=(40, 1, 8, 8)))
    assert np.array_equal(a.run(x), b.run(x))
    assert a.input_spec.as_dict() | {"name": "", "quant_node": ""} == b.input_spec.as_dict() | {"name": "",
                                                                                                   "quant_node": ""}


def test_api_spec_codes_trace(exports):
    raw, clean = exports[("mlp", False)]
    gm = GoldenModel(clean)
    sp = gm.input_spec
    assert (sp.bits, sp.signed, sp.narrow, sp.scale_exp, sp.shape) == (8, True, False, sp.scale_exp, (16,))
    assert gm.output_names == [gm.model.graph.output[0].name]
    x = gm.quantize_input(np.random.default_rng(1).normal(size=(7, 16)))
    codes, e = gm.run_codes(np.ldexp(x, -sp.scale_exp).astype(np.int64))
    assert codes.dtype == np.int64 and isinstance(e, int)
    assert np.array_equal(np.ldexp(codes.astype(float), e), gm.run(x))
    tr = gm.trace(x)
    assert gm.input_name in tr and gm.output_names[0] in tr
    assert np.array_equal(tr[gm.output_names[0]][0], codes)
    # single sample without batch axis
    assert np.array_equal(gm.run(x[0]), gm.run(x[:1])[0])
    # narrower input range -> narrower (or equal) bounds
    full, part = gm.ranges(), gm.ranges((0.0, 0.0))
    out = gm.output_names[0]
    assert full[out][0] <= part[out][0] <= part[out][1] <= full[out][1]
    assert gm.constants  # quantized weights are exposed


def test_off_grid_input_rejected(exports):
    gm = GoldenModel(exports[("mlp", False)][1])
    x = np.zeros((2, 16))
    x[1, 3] = 2.0 ** (gm.input_spec.scale_exp - 1)  # half a step
    with pytest.raises(CodesignError, match="not on the input quantizer's grid"):
        gm.run(x)
    x[1, 3] = 1000.0  # outside the clipping range
    with pytest.raises(CodesignError, match="grid"):
        gm.run(x)
    with pytest.raises(CodesignError, match="shape"):
        gm.run(np.zeros((2, 15)))


def test_cli_and_trace(exports, tmp_path):
    import json

    from codesign.golden import golden_cli

    gm = GoldenModel(exports[("conv2d", False)][1])
    x = gm.quantize_input(np.random.default_rng(2).normal(size=(5, 1, 8, 8)))
    np.save(tmp_path / "x.npy", x)
    s = golden_cli(exports[("conv2d", False)][1], tmp_path / "x.npy", tmp_path / "y.npy", False, tmp_path / "tr")
    assert np.array_equal(np.load(tmp_path / "y.npy"), gm.run(x))
    idx = json.loads((tmp_path / "tr" / "index.json").read_text())
    assert s["tensors"] == len(idx) and gm.output_names[0] in idx
    xc = np.ldexp(x, -gm.input_spec.scale_exp).astype(np.int64)
    s = golden_cli(exports[("conv2d", False)][1], tmp_path / "x.npy", tmp_path / "yc.npy", True, None)
    yc = np.load(tmp_path / "yc.npy")
    assert yc.dtype == np.int64 and np.array_equal(yc, gm.run_codes(xc)[0])
    assert np.array_equal(np.ldexp(yc.astype(float), s["output_scale_exp"]), gm.run(x))
    np.save(tmp_path / "bad.npy", x + 2.0 ** (gm.input_spec.scale_exp - 2))
    with pytest.raises(CodesignError, match="grid"):
        golden_cli(exports[("conv2d", False)][1], tmp_path / "bad.npy", tmp_path / "o.npy", False, None)


# ------------------------------------------------------------------------------------ hypothesis: dense
qparams = st.fixed_dictionaries({
    "bits": st.integers(1, 8), "signed": st.booleans(), "narrow": st.booleans(),
    "exp": st.integers(-6, 2), "mode": st.sampled_from(MODES),
})


@st.composite
def dense_case(draw):
    c = {"K": draw(st.integers(1, 5)), "M": draw(st.integers(1, 4)), "N": draw(st.integers(1, 4)),
         "qi": draw(qparams), "qw": draw(qparams), "qa": draw(qparams)}
    c["w_exp"] = [draw(st.integers(-5, 0)) for _ in range(c["M"])] if draw(st.booleans()) else draw(st.integers(-5, 0))
    c["a_exp"] = [draw(st.integers(-4, 1)) for _ in range(c["M"])] if draw(st.booleans()) else c["qa"]["exp"]
    c["zp"] = draw(st.sampled_from([0, 0, 1, -2, 0.5]))
    c["seed"] = draw(st.integers(0, 2**16))
    c["relu"] = draw(st.booleans())
    c["mul"] = draw(st.sampled_from([None, 0.5, 4.0, -2.0, 0.375]))
    c["second"] = draw(st.booleans())
    return c


def _scale(e):
    return np.array([2.0**v for v in e])[None, :] if isinstance(e, list) else 2.0**e


def build_dense(c):
    rng = np.random.default_rng(c["seed"])
    K, M, qi, qw, qa = c["K"], c["M"], c["qi"], c["qw"], c["qa"]
    W = rng.normal(scale=0.7, size=(K, M)).astype(np.float32)
    W[rng.random(W.shape) < 0.2] = 2.0 ** rng.integers(-4, 1)  # exact grid values / ties
    b = rng.normal(scale=0.3, size=(M,)).astype(np.float32)
    W2 = rng.normal(scale=0.5, size=(M, 2)).astype(np.float32)
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0 ** qi["exp"], 0, qi["bits"], qi["signed"], qi["narrow"], qi["mode"], inits))
    inits.append(const("W", W))
    wb = max(qw["bits"], 2)
    nodes.append(quant_node("W", "Wq", _scale(c["w_exp"]), 0, wb, 1, qw["narrow"], qw["mode"], inits))
    inits.append(const("b", b))
    nodes.append(quant_node("b", "bq", 2.0**-12, 0, 24, 1, 0, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["mm"], name="mm"))
    nodes.append(helper.make_node("Add", ["mm", "bq"], ["acc"], name="add"))
    cur = "acc"
    if c["relu"]:
        nodes.append(helper.make_node("Relu", [cur], ["r"], name="relu"))
        cur = "r"
    if c["mul"] is not None:
        inits.append(const("mulc", c["mul"]))
        nodes.append(helper.make_node("Mul", [cur, "mulc"], ["mu"], name="mul"))
        cur = "mu"
    last = "a" if c["second"] else "y"
    nodes.append(quant_node(cur, last, _scale(c["a_exp"]), c["zp"], qa["bits"], qa["signed"], qa["narrow"],
                            qa["mode"], inits))
    if c["second"]:
        inits.append(const("W2", W2))
        nodes.append(quant_node("W2", "W2q", 2.0**-3, 0, 6, 1, 1, "ROUND", inits))
        nodes.append(helper.make_node("MatMul", ["a", "W2q"], ["y"], name="mm2"))
    return make_model(nodes, inits, (1, K), (1, 2 if c["second"] else M)), dict(W=W, wb=wb, b=b, W2=W2)


def ref_dense(x, c, W, wb, b, W2):
    qi, qw, qa = c["qi"], c["qw"], c["qa"]
    xq = vquant(fr(x), 2.0 ** qi["exp"], 0, qi["bits"], qi["signed"], qi["narrow"], qi["mode"])
    Wq = vquant(fr(W), np.broadcast_to(_scale(c["w_exp"]), W.shape), 0, wb, True, qw["narrow"], qw["mode"])
    bq = vquant(fr(b), 2.0**-12, 0, 24, True, False, "ROUND")
    acc = xq.dot(Wq) + bq
    if c["relu"]:
        acc = np.vectorize(lambda v: max(v, 0), otypes=[object])(acc)
    if c["mul"] is not None:
        acc = acc * Fraction(c["mul"])
    y = vquant(acc, np.broadcast_to(_scale(c["a_exp"]), acc.shape), Fraction(c["zp"]), qa["bits"], qa["signed"],
               qa["narrow"], qa["mode"])
    if c["second"]:
        y = y.dot(vquant(fr(W2), 2.0**-3, 0, 6, True, True, "ROUND"))
    return xq, y


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dense_case())
def test_dense_property(c):
    model, p = build_dense(c)
    gm = GoldenModel(model)
    qi = c["qi"]
    rng = np.random.default_rng(c["seed"] + 1)
    x = rng.normal(scale=2.0 ** (qi["exp"] + qi["bits"] - 1), size=(c["N"], c["K"]))
    x[rng.random(x.shape) < 0.2] = 0.0
    x = np.where(rng.random(x.shape) < 0.3, (rng.integers(-8, 8, x.shape) + 0.5) * 2.0 ** qi["exp"], x)  # ties
    xq_ref, y_ref = ref_dense(x, c, **p)
    xq = gm.quantize_input(x)
    assert np.array_equal(xq, as_float(xq_ref))
    y = gm.run(xq)
    assert np.array_equal(y, as_float(y_ref))
    lo, hi, e = gm.ranges()["y"]
    codes = gm.trace(xq)["y"][0]
    assert lo <= codes.min() and codes.max() <= hi


def test_input_zero_point():
    inits = []
    m = make_model([quant_node("x", "y", 0.25, 3.0, 4, 0, 0, "HALF_UP", inits)], inits, (1, 3), (1, 3))
    gm = GoldenModel(m)
    assert (gm.input_spec.code_min, gm.input_spec.code_max) == (-3, 12)
    x = np.array([[-5.0, -0.125, 0.375], [0.1, 2.9, 9.0]])
    ref = as_float(vquant(fr(x), 0.25, 3, 4, False, False, "HALF_UP"))
    assert np.array_equal(gm.quantize_input(x), ref)
    assert np.array_equal(gm.run(ref), ref)


# ------------------------------------------------------------------------------------ hypothesis: conv
@st.composite
def conv_case(draw):
    C = draw(st.integers(1, 3))
    g = draw(st.sampled_from([1, C]))
    Co = g * draw(st.integers(1, 2))
    H, W = draw(st.integers(3, 6)), draw(st.integers(3, 6))
    k = draw(st.integers(1, 3))
    s, d, p = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
    if (k - 1) * d + 1 > min(H, W) + 2 * p:
        d = 1
    if k > min(H, W) + 2 * p:
        k = 1
    pool = draw(st.sampled_from(["max", "avg", "gap", "none"]))
    one_d = draw(st.booleans())
    if one_d:
        H = 1
    mode = draw(st.sampled_from(MODES))
    tmode = draw(st.sampled_from(["FLOOR", "ROUND", "CEIL"]))
    return C, Co, g, H, W, k, s, d, p, pool, one_d, mode, tmode, draw(st.integers(0, 2**16))


def ref_conv(x, w, s, d, p):
    N, C, H, W = x.shape
    Co, Cg, kh, kw = w.shape
    g = C // Cg
    xp = np.zeros((N, C, H + 2 * p[0], W + 2 * p[1]), dtype=object)
    xp[...] = Fraction(0)
    xp[:, :, p[0]:p[0] + H, p[1]:p[1] + W] = x
    Ho = (H + 2 * p[0] - (kh - 1) * d - 1) // s + 1
    Wo = (W + 2 * p[1] - (kw - 1) * d - 1) // s + 1
    out = np.empty((N, Co, Ho, Wo), dtype=object)
    for n in range(N):
        for o in range(Co):
            gi = o // (Co // g)
            for i in range(Ho):
                for j in range(Wo):
                    acc = Fraction(0)
                    for c in range(Cg):
                        for a in range(kh):
                            for b_ in range(kw):
                                acc += xp[n, gi * Cg + c, i * s + a * d, j * s + b_ * d] * w[o, c, a, b_]
                    out[n, o, i, j] = acc
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_case())
def test_conv_pool_property(case):
    C, Co, g, H, W, k, s, d, p, pool, one_d, mode, tmode, seed = case
    rng = np.random.default_rng(seed)
    kh = 1 if one_d else k
    w = rng.normal(scale=0.5, size=(Co, C // g, kh, k)).astype(np.float32)
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-4, 0, 6, 1, 0, "ROUND", inits))
    inits.append(const("w", w if not one_d else w[:, :, 0]))
    nodes.append(quant_node("w", "wq", 2.0**-5, 0, 6, 1, 1, "ROUND", inits))
    pads = [p, p] if one_d else [0 if one_d else p, p, 0 if one_d else p, p]
    nodes.append(helper.make_node("Conv", ["xq", "wq"], ["c"], name="conv", group=g, strides=[s] * (1 if one_d else 2),
                                  dilations=[d] * (1 if one_d else 2), pads=pads))
    nodes.append(quant_node("c", "a", 2.0**-3, 0, 5, 0, 0, mode, inits, name="act"))
    ph = 0 if one_d else p
    Ho = (H + 2 * ph - (kh - 1) * d - 1) // s + 1
    Wo = (W + 2 * p - (k - 1) * d - 1) // s + 1
    cur, shape = "a", (Co, Ho, Wo)
    kk = [1, 2] if one_d else [2, 2]
    can_pool = Wo >= 2 and (one_d or Ho >= 2)
    if pool == "max" and can_pool:
        nodes.append(helper.make_node("MaxPool", [cur], ["mp"], name="mp", kernel_shape=kk[1:] if one_d else kk,
                                      strides=kk[1:] if one_d else kk))
        cur, shape = "mp", (Co, Ho // kk[0], Wo // 2)
    elif pool in ("avg", "gap") and can_pool:
        if pool == "avg":
            nodes.append(helper.make_node("AveragePool", [cur], ["ap"], name="ap", kernel_shape=kk[1:] if one_d else kk,
                                          strides=kk[1:] if one_d else kk))
            K = 2 if one_d else 4
            shape = (Co, Ho // kk[0], Wo // 2)
        else:
            nodes.append(helper.make_node("GlobalAveragePool", [cur], ["ap"], name="gap"))
            K = Ho * Wo
            shape = (Co, 1, 1)
        inits.extend([const("ts", 2.0**-3 / K), const("tz", 0.0), const("tib", 9.0), const("tos", 2.0**-3),
                      const("tob", 5.0)])
        nodes.append(helper.make_node("Trunc", ["ap", "ts", "tz", "tib", "tos", "tob"], ["tr"], domain=QDOMAIN,
                                      name="trunc", rounding_mode=tmode, signed=0, narrow=0))
        cur = "tr"
    else:
        pool = "none"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="id"))
    in_shape = (1, C, W) if one_d else (1, C, H, W)
    out_shape = (1, shape[0], shape[2]) if one_d else (1, *shape)
    model = make_model(nodes, inits, in_shape, out_shape)
    gm = GoldenModel(model)
    x = gm.quantize_input(rng.normal(size=(2, *in_shape[1:])))
    y = gm.run(x)
    # reference
    x4 = x[:, :, None, :] if one_d else x
    wq = vquant(fr(w), 2.0**-5, 0, 6, True, True, "ROUND")
    c = ref_conv(fr(x4), wq, s, d, (ph, p))
    a = vquant(c, 2.0**-3, 0, 5, False, False, mode)
    if pool == "max":
        r = np.empty((a.shape[0], Co, Ho // kk[0], Wo // 2), dtype=object)
        for i, _v in np.ndenumerate(r):
            n, o, u, t = i
            r[i] = max(a[n, o, u * kk[0] + du, t * 2 + dt] for du in range(kk[0]) for dt in range(2))
        a = r
    elif pool in ("avg", "gap"):
        if pool == "avg":
            r = np.empty((a.shape[0], Co, Ho // kk[0], Wo // 2), dtype=object)
            for i, _v in np.ndenumerate(r):
                n, o, u, t = i
                r[i] = sum(a[n, o, u * kk[0] + du, t * 2 + dt] for du in range(kk[0]) for dt in range(2)) / K
        else:
            r = a.sum(axis=(2, 3), keepdims=True) / K
        # qonnx Trunc v2: round(x/scale) then /trunc_scale, clamp, round(mode), * out_scale
        ts = Fraction(float(np.float32(2.0**-3 / K)))
        tos = Fraction(1, 8)
        tsc = Fraction(2) ** round(math.log2(float(tos / ts)))
        out = np.empty(r.shape, dtype=object)
        for i, v in np.ndenumerate(r):
            y0 = ref_round(v / ts, "ROUND") / tsc
            y0 = min(max(y0, 0), 31)
            out[i] = ref_round(Fraction(y0), tmode) * tos
        a = out
    if one_d:
        a = a[:, :, 0, :]
    assert np.array_equal(y, as_float(a))


# ------------------------------------------------------------------------------------ ops via helper
def _mlp_helper(extra_nodes, extra_inits, out_shape=(1, 3), last="h"):
    inits, nodes = list(extra_inits), []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    inits.append(const("W", np.arange(12).reshape(4, 3) / 8 - 0.75))
    nodes.append(quant_node("W", "Wq", 2.0**-3, 0, 6, 1, 1, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["h"], name="mm"))
    nodes.extend(extra_nodes)
    return make_model(nodes, inits, (1, 4), out_shape, out_name=last)


def test_gemm_concat_reshape_transpose_flatten():
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    inits.append(const("W", (np.arange(12).reshape(3, 4) / 8 - 0.75)))
    nodes.append(quant_node("W", "Wq", 2.0**-3, 0, 6, 1, 1, "ROUND", inits))
    inits.append(const("C", [0.5, -0.25, 1.0]))
    nodes.append(helper.make_node("Gemm", ["xq", "Wq", "C"], ["g"], name="gemm", transB=1, alpha=0.5))
    nodes.append(helper.make_node("Concat", ["g", "g"], ["cat"], name="cat", axis=1))
    inits.append(const("shp", [1, 2, 3], np.int64))
    nodes.append(helper.make_node("Reshape", ["cat", "shp"], ["rs"], name="rs"))
    nodes.append(helper.make_node("Transpose", ["rs"], ["tp"], name="tp", perm=[0, 2, 1]))
    nodes.append(helper.make_node("Flatten", ["tp"], ["y"], name="fl", axis=1))
    gm = GoldenModel(make_model(nodes, inits, (1, 4), (1, 6)))
    x = gm.quantize_input(np.random.default_rng(0).normal(size=(5, 4)))
    W = np.round(np.clip((np.arange(12).reshape(3, 4) / 8 - 0.75) * 8, -31, 31)) / 8
    g = 0.5 * x @ W.T + np.array([0.5, -0.25, 1.0])
    ref = np.concatenate([g, g], axis=1).reshape(5, 2, 3).transpose(0, 2, 1).reshape(5, 6)
    assert np.array_equal(gm.run(x), ref)


def test_batchnorm_exact_and_rejected():
    def bn_model(var, eps):
        inits = [const("g", [1.0, -0.5]), const("bb", [0.25, 0.0]), const("mu", [0.5, -1.0]), const("v", var)]
        inits2, nodes = [], []
        nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits2))
        nodes.append(helper.make_node("BatchNormalization", ["xq", "g", "bb", "mu", "v"], ["y"], name="bn",
                                      epsilon=eps))
        return make_model(nodes, inits + inits2, (1, 2, 3), (1, 2, 3))

    gm = GoldenModel(bn_model([4.0, 0.25], 0.0))
    x = gm.quantize_input(np.random.default_rng(0).normal(size=(3, 2, 3)))
    ref = np.empty_like(x)
    ref[:, 0] = (x[:, 0] - 0.5) / 2 * 1.0 + 0.25
    ref[:, 1] = (x[:, 1] + 1.0) / 0.5 * -0.5
    assert np.array_equal(gm.run(x), ref)
    with pytest.raises(UnsupportedError, match="bn.*BatchNormalization.*not exactly representable"):
        GoldenModel(bn_model([1.0, 1.0], 1e-5), mixed=False)


def test_residual_add_with_different_scales():
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    nodes.append(quant_node("xq", "xr", 2.0**-1, 0, 4, 1, 0, "FLOOR", inits, name="requant"))
    nodes.append(helper.make_node("Add", ["xq", "xr"], ["s"], name="res"))
    inits.append(const("d", 4.0))
    nodes.append(helper.make_node("Div", ["s", "d"], ["y"], name="div"))
    gm = GoldenModel(make_model(nodes, inits, (1, 4), (1, 4)))
    x = gm.quantize_input(np.random.default_rng(0).normal(scale=2, size=(9, 4)))
    xr = np.clip(np.floor(x / 0.5), -8, 7) * 0.5
    assert np.array_equal(gm.run(x), (x + xr) / 4)
    assert gm.trace(x)["y"][1] == -5


def test_int64_overflow_falls_back_to_python_ints():
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-20, 0, 40, 1, 0, "ROUND", inits))
    nodes.append(helper.make_node("Mul", ["xq", "xq"], ["sq"], name="sq"))
    nodes.append(helper.make_node("Mul", ["sq", "sq"], ["y"], name="q4"))
    gm = GoldenModel(make_model(nodes, inits, (1, 2), (1, 2)))
    codes = np.array([[2**39 - 1, -(2**39)]], dtype=np.int64)
    y, e = gm.run_codes(codes)
    assert y.dtype == object and e == -80
    assert [int(v) for v in y[0]] == [(2**39 - 1) ** 4, 2**156]
    assert gm.ranges()["y"][1] == 2**156


# ------------------------------------------------------------------------------------ bad input
def _q_model(scale=2.0**-3, zp=0.0, op=None, dyn=False):
    inits, nodes = [], []
    nodes.append(quant_node("x", "y" if op is None else "xq", scale, zp, 6, 1, 0, "ROUND", inits, name="qin"))
    if op is not None:
        nodes.append(helper.make_node(op, ["xq"], ["y"], name="weird"))
    m = make_model(nodes, inits, (1, 4), (1, 4))
    if dyn:
        m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "n"
    return m


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(UnsupportedError, match=r"qin.*Quant.*0\.3.*not a power of two"):
        GoldenModel(_q_model(scale=0.3), mixed=False)
    with pytest.raises(UnsupportedError, match="zero point"):
        GoldenModel(_q_model(zp=0.3))
    with pytest.raises(UnsupportedError, match="weird.*Softmax.*not supported"):
        GoldenModel(_q_model(op="Softmax"), mixed=False)
    with pytest.raises(UnsupportedError, match="dynamic shape"):
        GoldenModel(_q_model(dyn=True))
    with pytest.raises(UnsupportedError, match="not quantized"):
        GoldenModel(make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [], (1, 4), (1, 4)))
    with pytest.raises(UnsupportedError, match="rounding_mode"):
        inits = []
        GoldenModel(make_model([quant_node("x", "y", 0.5, 0, 4, 1, 0, "STOCHASTIC", inits)], inits, (1, 4), (1, 4)))
    with pytest.raises(CodesignError, match="not found"):
        GoldenModel("/nonexistent/model.onnx")
    inits = []
    avg = [quant_node("x", "xq", 0.5, 0, 4, 1, 0, "ROUND", inits),
           helper.make_node("GlobalAveragePool", ["xq"], ["y"], name="gap")]
    with pytest.raises(UnsupportedError, match="non-power-of-two window"):
        GoldenModel(make_model(avg, inits, (1, 2, 3, 3), (1, 2, 1, 1)), mixed=False)


# ------------------------------------------------------------------------------------ stage / hls4ml
def test_run_stage(exports, tmp_path):
    import json

    from codesign.config import Config
    from codesign.golden import run_stage
    from codesign.run import RunDir

    rd = RunDir(tmp_path / "run")
    (rd.root / "export").mkdir()
    clean = exports[("mlp", False)][1]
    (rd.root / "export" / "model.onnx").write_bytes(clean.read_bytes())
    gm = GoldenModel(clean)
    x = gm.quantize_input(np.random.default_rng(5).normal(size=(30, 16)))
    y = np.argmax(gm.run(x), axis=1)
    y[:3] = (y[:3] + 1) % 5
    np.save(rd.root / "export" / "test_x.npy", x)
    np.save(rd.root / "export" / "test_y.npy", y)
    figs = run_stage(rd, Config())
    assert figs["qonnx_mismatches"] == 0 and figs["accuracy"] == pytest.approx(27 / 30)
    rep = json.loads((rd.root / "report.json").read_text())["golden"]
    assert rep["accuracy"] == figs["accuracy"] and rep["qonnx_mismatches"] == 0
    assert np.array_equal(np.load(rd.root / "golden" / "test_out.npy"), gm.run(x))
    assert "golden/test_out.npy" in rd.manifest()["files"]


def test_run_stage_missing_export(tmp_path):
    from codesign.config import Config
    from codesign.errors import StageInputError
    from codesign.golden import run_stage
    from codesign.run import RunDir

    with pytest.raises(StageInputError, match="export"):
        run_stage(RunDir(tmp_path / "r"), Config())


@pytest.mark.slow
@pytest.mark.parametrize("po2", [False, True])
def test_matches_hls4ml_csim(exports, tmp_path, po2):
    clean = exports[("mlp", po2)][1]
    gm = GoldenModel(clean)
    x = gm.quantize_input(np.random.default_rng(0).normal(scale=1.5, size=(500, 16)))
    hm = hls4ml_model(clean, tmp_path / "hls")
    yh = np.asarray(hm.predict(np.ascontiguousarray(x)), dtype=np.float64).reshape(len(x), -1)
    assert count_mismatches(gm.run(x), yh) == 0


# ------------------------------------------------------------------------------------ attribute coverage
WINDOW_CASES = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER")),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[4, 2], strides=[1, 2])),
    ("Conv", dict(kernel_shape=[3, 3], auto_pad="SAME_LOWER", strides=[2, 2])),
    ("Conv", dict(kernel_shape=[2, 3], pads=[0, 1, 1, 2], dilations=[2, 1], group=3)),
    ("GlobalMaxPool", {}),
    ("GlobalAveragePool", {}),
]


@pytest.mark.parametrize("op,attrs", WINDOW_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(WINDOW_CASES)])
def test_window_ops_match_execute_onnx(tmp_path, op, attrs):
    import onnx

    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-2, 0, 5, 1, 0, "ROUND", inits))
    ins = ["xq"]
    if op == "Conv":
        g = attrs.get("group", 1)
        w = np.random.default_rng(0).normal(size=(6, 3 // g, *attrs["kernel_shape"]))
        inits.append(const("w", w))
        nodes.append(quant_node("w", "wq", 2.0**-3, 0, 5, 1, 1, "ROUND", inits))
        inits.append(const("bias", np.arange(6) / 4))
        ins += ["wq", "bias"]
    nodes.append(helper.make_node(op, ins, ["p"], name="op", **attrs))
    inits.append(const("ax", [1], np.int64))
    nodes.append(helper.make_node("Unsqueeze", ["p", "ax"], ["u"], name="unsq"))
    nodes.append(helper.make_node("Squeeze", ["u", "ax"], ["sq"], name="sq"))
    nodes.append(helper.make_node("Sub", ["sq", "sq"], ["z"], name="sub"))
    nodes.append(helper.make_node("Add", ["sq", "z"], ["y"], name="add"))
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    hw = (8, 4) if op == "GlobalAveragePool" else (7, 6)  # average over a power-of-two window count
    m = make_model(nodes, inits, (1, 3, *hw), (1, 1, 1, 1))
    out_shape = GoldenModel(m).tensors["y"].shape  # the golden model does not need declared shapes
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(out_shape)))
    path = tmp_path / "m.onnx"
    ModelWrapper(m).transform(InferShapes()).save(str(path))
    gm = GoldenModel(path)
    x = gm.quantize_input(np.random.default_rng(1).normal(scale=2, size=(3, 3, *hw)))
    y = gm.run(x)
    ref = qonnx_reference(path, x, batched=False)
    assert y.shape == ref.shape
    assert count_mismatches(y, ref) == 0


@pytest.mark.parametrize("mode", ["FLOOR", "ROUND", "CEIL"])
def test_trunc_v1_matches_execute_onnx(tmp_path, mode):
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-4, 0, 8, 1, 0, "ROUND", inits))
    inits.extend([const("ts", 2.0**-4), const("tz", 0.0), const("tib", 8.0), const("tob", 5.0)])
    nodes.append(helper.make_node("Trunc", ["xq", "ts", "tz", "tib", "tob"], ["y"], domain=QDOMAIN, name="t1",
                                  rounding_mode=mode))
    m = make_model(nodes, inits, (1, 64), (1, 64), qonnx_opset=1)
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    path = tmp_path / "t.onnx"
    ModelWrapper(m).transform(InferShapes()).save(str(path))
    gm = GoldenModel(path)
    x = np.ldexp(np.arange(-128, 128, dtype=float).reshape(4, 64), -4)
    assert count_mismatches(gm.run(x), qonnx_reference(path, x, batched=False)) == 0
    with pytest.raises(UnsupportedError, match="Trunc v2.*needs 6 inputs"):
        m.opset_import[1].version = 2
        GoldenModel(m)


CL_CASES = [  # qonnx requires every attribute on channels-last nodes
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 1], dilations=[1, 1], group=1),
    dict(kernel_shape=[2, 3], pads=[0, 1, 1, 2], strides=[1, 1], dilations=[2, 1], group=3),
    dict(kernel_shape=[1, 3], pads=[0, 1, 0, 1], strides=[1, 2], dilations=[1, 1], group=1),
]


@pytest.mark.parametrize("attrs", CL_CASES)
def test_channels_last_conv_matches_execute_onnx(tmp_path, attrs):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-2, 0, 5, 1, 0, "ROUND", inits))
    g = attrs["group"]
    w = np.random.default_rng(0).normal(size=(6, *attrs["kernel_shape"], 3 // g))  # (O, kh, kw, C/g)
    inits.append(const("w", w))
    nodes.append(quant_node("w", "wq", 2.0**-3, 0, 5, 1, 1, "ROUND", inits))
    inits.append(const("bias", np.arange(6) / 4))
    nodes.append(helper.make_node("Conv", ["xq", "wq", "bias"], ["y"], name="clconv",
                                  domain="qonnx.custom_op.channels_last", **attrs))
    m = make_model(nodes, inits, (1, 7, 6, 3), (1, 1, 1, 1))
    m.opset_import.append(helper.make_opsetid("qonnx.custom_op.channels_last", 1))
    out_shape = GoldenModel(m).tensors["y"].shape
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", 1, list(out_shape)))
    m.graph.value_info.extend([helper.make_tensor_value_info("xq", 1, [1, 7, 6, 3]),
                               helper.make_tensor_value_info("wq", 1, list(w.shape))])
    path = tmp_path / "cl.onnx"
    ModelWrapper(m).transform(InferShapes()).save(str(path))
    gm = GoldenModel(path)
    x = gm.quantize_input(np.random.default_rng(1).normal(scale=2, size=(3, 7, 6, 3)))
    y = gm.run(x)
    ref = qonnx_reference(path, x, batched=False)
    assert y.shape == ref.shape and count_mismatches(y, ref) == 0


def test_bipolar_quant_matches_execute_onnx(tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    inits = [const("s_in", 0.5), const("W", np.random.default_rng(0).normal(size=(8, 3))), const("s_w", 0.25)]
    nodes = [helper.make_node("BipolarQuant", ["x", "s_in"], ["xq"], domain=QDOMAIN, name="bq_in"),
             helper.make_node("BipolarQuant", ["W", "s_w"], ["Wq"], domain=QDOMAIN, name="bq_w"),
             helper.make_node("MatMul", ["xq", "Wq"], ["y"], name="mm")]
    path = tmp_path / "b.onnx"
    ModelWrapper(make_model(nodes, inits, (1, 8), (1, 3))).transform(InferShapes()).save(str(path))
    gm = GoldenModel(path)
    assert (gm.input_spec.bits, gm.input_spec.code_min, gm.input_spec.code_max) == (1, -1, 1)
    x = gm.quantize_input(np.random.default_rng(1).normal(size=(20, 8)))
    assert set(np.unique(x)) <= {-0.5, 0.5}
    assert count_mismatches(gm.run(x), qonnx_reference(path, x)) == 0
    with pytest.raises(CodesignError, match="grid"):
        gm.run(np.zeros((1, 8)))  # 0 is not a bipolar value


def test_wide_matmul_uses_python_ints():
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 1.0, 0, 40, 1, 0, "ROUND", inits))
    W = np.array([[2.0**29 - 1, -(2.0**29)], [12345.0, 2.0**28], [-(2.0**29), 7.0]])
    inits.append(const("W", W, np.float64))
    nodes.append(quant_node("W", "Wq", 1.0, 0, 30, 1, 0, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["y"], name="mm"))
    gm = GoldenModel(make_model(nodes, inits, (1, 3), (1, 2)))
    xc = np.array([[2**39 - 1, -(2**39), 2**39 - 7], [1, 2, 3]], dtype=np.int64)
    y, e = gm.run_codes(xc)
    ref = [[sum(int(xc[n, k]) * int(W[k, j]) for k in range(3)) for j in range(2)] for n in range(2)]
    assert e == 0 and [[int(v) for v in row] for row in y] == ref
    lo, hi, _ = gm.ranges()["y"]
    assert lo <= min(min(r) for r in ref) and max(max(r) for r in ref) <= hi and hi > 2**63
