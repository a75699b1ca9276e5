"""RTL backend, ``io='stream'``: one pixel per input beat, leading conv/pool layers on line buffers.

Small channels-last Brevitas CNNs (``codesign.rtl.fixtures.cnn_qonnx``: QuantIdentity -> Conv -> ReLU ->
MaxPool -> Flatten -> Linear) are generated in stream mode and verified with cocotb + Verilator against
the golden model: thousands of random + corner vectors each, every vector cut into its pixel beats,
random input gaps and output backpressure in the second half, 0 mismatches, measured latency / II as
declared. Also: verilator -Wall lint of the generated designs and of the hand-written hw/cs_*.v, the
collector's field order (beat order of interface.json), the cycle model, the errors, the config/CLI/
hls4ml plumbing, and (slow) the digits_cnn zoo model through the flow.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from rtl_helpers import lint, needs_verilator, verify_ok

from codesign.errors import UnsupportedError
from codesign.resources import hw_dir
from codesign.rtl import generate, lower
from codesign.rtl.emit.stream_plan import plan_stream
from codesign.verify import tool_env

# name: cnn_qonnx keyword arguments
CASES = {
    "conv2d_pad_s1": dict(in_shape=(2, 6, 6), channels=3, kernel=3, padding=1, stride=1, pool=2),
    "conv2d_pad_s2": dict(in_shape=(2, 7, 7), channels=3, kernel=3, padding=1, stride=2, pool=2),
    "conv2d_k2_s2_nopad": dict(in_shape=(1, 8, 6), channels=2, kernel=2, padding=0, stride=2, pool=1),
    "conv1d_pad": dict(in_shape=(2, 12), channels=3, kernel=3, padding=1, stride=1, pool=2, dims=1),
    "conv1d_k5_s2_pad2": dict(in_shape=(3, 11), channels=2, kernel=5, padding=2, stride=2, pool=2, dims=1),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from codesign.rtl.fixtures import cnn_qonnx

    d = tmp_path_factory.mktemp("stream_models")
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = cnn_qonnx(d / f"{name}.onnx", n_out=4, seed=3, **CASES[name])
        return cache[name]

    return get


def test_hw_library_lint_clean():
    """The hand-written streaming blocks are verilator -Wall clean, for several parameter sets."""
    runs = [("cs_pad.v", []), ("cs_pad.v", ["-GPT=0", "-GPB=0", "-GPL=2", "-GPR=0", "-GH=1"]),
            ("cs_window.v", []), ("cs_window.v", ["-GKH=1", "-GKW=1", "-GSW=2"]),
            ("cs_window.v", ["-GKH=2", "-GKW=3", "-GWP=8", "-GHP=5", "-GSH=3", "-GSW=2"]),
            ("cs_collect.v", []), ("cs_collect.v", ["-GN=1"])]
    for f, args in runs:
        p = subprocess.run(["verilator", "--lint-only", "-Wall", *args, str(hw_dir() / f)], env=tool_env(),
                           capture_output=True, text=True)
        assert p.returncode == 0, (f, args, p.stderr[-2000:])


def test_plan_and_beat_order(models):
    """The input transpose becomes the beat order; the collector's vector is the (H, W, C) C-order one."""
    p = models("conv2d_pad_s1")
    m = lower(p)
    plan = plan_stream(m)
    assert [ly.kind for ly in plan.layers] == ["conv2d", "maxpool"]
    assert plan.beats == 36 and plan.beat_fields.shape == (36, 2)
    # graph input (C, H, W) = (2, 6, 6): beat p = pixel (h, w), field c -> input index c*36 + p
    assert plan.beat_fields[7].tolist() == [7, 36 + 7]
    assert [ly.kind for ly in plan.rest.layers] == ["dense"] and plan.rest.input_shape == (3, 3, 3)
    # the streamed chain + collector reproduces the IR's pool output vector field for field
    x = np.random.default_rng(0).integers(m.input_fmt.lo, m.input_fmt.hi + 1, size=(5, 72))
    tr = m.run(x, trace=True)
    pool = tr[plan.layers[-1].name]
    h = x[:, plan.beat_fields.ravel()]  # the beats, in stream order
    from codesign.rtl.emit.stream_plan import pe_layer

    g = plan.geoms[0]
    img = np.pad(h.reshape(5, g.h, g.w, g.c), ((0, 0), (g.pt, g.pb), (g.pl, g.pr), (0, 0)))
    pe = pe_layer(plan.layers[0], g)
    conv = np.stack([pe.forward(img[:, r:r + 3, c:c + 3, :].reshape(5, -1))
                     for r in range(g.oh) for c in range(g.ow)], 1)
    g2 = plan.geoms[1]
    cm = conv.reshape(5, g2.h, g2.w, g2.c)
    pe2 = pe_layer(plan.layers[1], g2)
    pooled = np.stack([pe2.forward(cm[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2, :].reshape(5, -1))
                       for r in range(g2.oh) for c in range(g2.ow)], 1)
    assert np.array_equal(pooled.reshape(5, -1), pool)  # beat k -> fields [k*C, (k+1)*C)


@needs_verilator
@pytest.mark.parametrize("name", list(CASES))
def test_stream_rtl_verifies(models, tmp_path, name):
    p = models(name)
    d = tmp_path / "rtl"
    iface = generate(p, d, io="stream")
    assert iface["io"] == "stream"
    assert iface["input"]["beats"] * iface["input"]["fields_per_beat"] == iface["input"]["fields"]
    assert iface["input"]["tdata_bits"] == iface["input"]["fields_per_beat"] * iface["input"]["bits"]
    assert iface["ii"] >= iface["input"]["beats"]
    lint(d, iface)
    res = verify_ok(d, p, vectors=3000)
    assert res["backpressure"]["enabled"] and res["ii"]["measured_max"] == iface["ii"]


@needs_verilator
def test_stream_options_taps_slice_loop(models, tmp_path):
    """debug taps (vector layers), output register slice, pipeline 2, the Python clock-loop testbench."""
    from codesign.verify import summary, verify

    p = models("conv2d_pad_s2")
    d = tmp_path / "rtl"
    iface = generate(p, d, io="stream", debug_taps=True, axis_slice=True, pipeline=2)
    lint(d, iface)
    verify_ok(d, p, vectors=2000)
    res = verify(d, p, vectors=300, style="loop")
    assert res["mismatches"] == 0 and res["ok"], summary(res)


@needs_verilator
def test_stream_only_network(models, tmp_path):
    """A network that is all window layers: the collector output is the network output."""
    from codesign.rtl.ir import Model
    from codesign.verify import summary, verify

    m = lower(models("conv1d_pad"))
    sub = Model(m.name, m.input_name, m.input_shape, m.input_fmt, m.layers[:-1])
    d = tmp_path / "rtl"
    iface = generate(sub, d, io="stream")
    assert iface["stream"]["vector_top"] is None and iface["output"]["shape"] == list(sub.output_shape)
    lint(d, iface)
    res = verify(d, lambda x: sub.run(x.reshape(len(x), -1)), vectors=2000)
    assert res["mismatches"] == 0 and res["ok"], summary(res) + str(res["checks_failed"])


RES_CASES = {"identity": dict(in_shape=(2, 6, 6), channels=3, avgpool=True),
             "projection": dict(in_shape=(2, 6, 6), channels=3, avgpool=False, projection=True)}


@pytest.fixture(scope="module")
def res_models(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from codesign.rtl.fixtures import rescnn_qonnx

    d = tmp_path_factory.mktemp("stream_res_models")
    return {name: rescnn_qonnx(d / f"{name}.onnx", seed=5, **kw) for name, kw in RES_CASES.items()}


@needs_verilator
@pytest.mark.parametrize("name", list(RES_CASES))
def test_stream_residual_verifies(res_models, tmp_path, name):
    """Residual blocks stream too: the fork feeds both branches pixel by pixel, each add input waits in a
    cs_fifo, the add's per-pixel unit joins them. Identity skip (one branch empty) and a 1x1 projection
    (a conv on both sides); 0 mismatches with input gaps and backpressure, latency / II as the model says."""
    p = res_models[name]
    plan = plan_stream(lower(p))
    assert not plan.is_chain and plan.layers[-1].kind == "add"
    assert [ly.kind for ly in plan.layers].count("conv2d") == (4 if name == "projection" else 3)
    d = tmp_path / "rtl"
    iface = generate(p, d, io="stream")
    (add,) = [ly for ly in iface["stream"]["layers"] if ly["kind"] == "add"]
    assert len(add["sources"]) == 2 and all(dep >= 2 for dep in add["skip_fifo_depths"])
    if name == "identity":  # the skip FIFO holds what the two 3x3 convs can take in; the other needs 2
        assert add["skip_fifo_depths"][0] == 2 and add["skip_fifo_depths"][1] > 2 * 8
    assert "cs_fifo.v" in iface["files"]
    lint(d, iface)
    res = verify_ok(d, p, vectors=3000)
    assert res["backpressure"]["enabled"] and res["ii"]["measured_max"] == iface["ii"]


def test_stream_residual_fifo_sizing_survives_stalls(res_models):
    """The cycle model with random input gaps and output stalls: the sized FIFOs never deadlock; a skip
    FIFO of 2 words (too small for what the two convs hold) does."""
    import random

    from codesign.config import RTLConfig
    from codesign.rtl.emit.stream import _Graph, _stream_graph
    from codesign.rtl.emit.stream_plan import Fifo, stream_timing

    plan = plan_stream(lower(res_models["identity"]))

    def stages():
        ch = _Graph(plan)
        _stream_graph(plan, RTLConfig(io="stream"), ch)
        return ch

    for seed in range(3):
        rng = random.Random(seed)
        ch = stages()
        stream_timing(ch.timing, plan.beats, 0, images=6, preds=ch.preds,
                      stall=lambda c, rng=rng: (rng.random() < 0.3, rng.random() < 0.5))
    ch = stages()
    skip = max((st for st in ch.timing if isinstance(st, Fifo)), key=lambda st: st.depth)
    skip.depth = 2
    with pytest.raises(RuntimeError, match="no progress"):
        stream_timing(ch.timing, plan.beats, 0, images=3, preds=ch.preds)


def test_stream_errors(models, tmp_path):
    from codesign.rtl.fixtures import mlp_qonnx

    mlp = mlp_qonnx(tmp_path / "mlp.onnx", sizes=(8, 4))
    with pytest.raises(UnsupportedError, match="starts with a window layer"):
        generate(mlp, tmp_path / "a", io="stream")
    with pytest.raises(UnsupportedError, match="latency"):
        generate(models("conv1d_pad"), tmp_path / "b", io="stream", strategy="resource", reuse=4)
    with pytest.raises(UnsupportedError, match="rtl.io"):
        generate(models("conv1d_pad"), tmp_path / "c", io="pixels")


def test_vector_mode_unchanged(models, tmp_path):
    """io='vector' (the default) writes no stream blocks and no io key."""
    iface = generate(models("conv1d_pad"), tmp_path / "v")
    assert "io" not in iface and not any(f.startswith(("cs_pad", "cs_window", "cs_collect")) for f in iface["files"])
    assert iface["top"] == "codesign_top"


def test_config_cli_hls4ml_plumbing(models, tmp_path):
    from codesign import config
    from codesign.hls4ml_plugin import io_from_hls4ml

    assert config.load("digits_cnn").rtl.io == "vector"
    assert config.load("digits_cnn", {"rtl.io": "stream"}).rtl.io == "stream"
    with pytest.raises(Exception):  # noqa: B017 - pydantic validation error
        config.load("digits_cnn", {"rtl.io": "pixels"})
    assert io_from_hls4ml("io_stream") == "stream" and io_from_hls4ml("io_parallel") == "vector"
    assert io_from_hls4ml(None) == "vector"
    import sys

    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "codesign", "rtl", str(models("conv1d_pad")), "--out", str(out),
                        "--io", "stream"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "interface.json").read_text())["io"] == "stream"


@pytest.mark.slow
@needs_verilator
def test_digits_cnn_stream_flow(tmp_path):
    """The digits_cnn zoo model (trained briefly, exported) through the flow with rtl.io=stream: the
    verify stage passes (0 mismatches, latency / II as declared)."""
    import torch

    from codesign import config, flow

    torch.set_num_threads(1)
    cfg = config.load("digits_cnn", {"train.epochs": 1, "data.n_samples": 300, "rtl.io": "stream",
                                     "verify.random_vectors": 3000})
    rd = flow.run_flow(cfg, tmp_path / "run", until="verify")
    rep = rd.report()
    assert rep["rtl"]["io"] == "stream"
    v = json.loads((rd.root / "verify" / "verify.json").read_text())
    assert v["mismatches"] == 0 and v["ok"] and v["vectors"] >= 3000
    iface = json.loads((rd.root / "rtl" / "interface.json").read_text())
    assert iface["input"]["beats"] == 64 and iface["input"]["fields_per_beat"] == 1
    assert [la["kind"] for la in iface["stream"]["layers"]] == ["conv2d", "maxpool", "conv2d", "maxpool"]
