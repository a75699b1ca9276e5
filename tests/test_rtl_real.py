"""RTL of QONNX models trained elsewhere (models/qonnx): FINN's TFC_2W2A (BatchNorm thresholds, float
pre-/post-processing on the host) and hls4ml's QKeras jet tagger (an input grid from --input-precision,
Softmax on the host). The IR equals the reference's own kernels at the core output on every input; the
generated RTL equals the IR in simulation, fully parallel and folded."""

from __future__ import annotations

import numpy as np
import pytest

from codesign.graph.analysis import parse_precision, partition
from codesign.graph.reference import Subgraph
from codesign.real_models import JET_PRECISION, QONNX
from codesign.rtl import generate, ir, lower
from codesign.rtl.formats import Thresholds


@pytest.fixture(scope="module")
def cleaned():
    """The two models, cleaned as codesign cleans foreign files (shapes inferred, constants folded)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    return {n: cleanup_model(ModelWrapper(str(QONNX / f"{n}.onnx"))).model for n in ("TFC_2W2A", "qkeras_jettagging")}


def _inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "TFC_2W2A":  # MNIST-like pixels k/255, with all-black and all-white images
        x = rng.integers(0, 256, (n, 1, 1, 28, 28)) / 255.0
        x[0], x[1] = 0.0, 1.0
        return x.astype(np.float32).reshape(n, 1, 28, 28)
    g = parse_precision(JET_PRECISION)
    codes = rng.integers(g.code_min, g.code_max + 1, (n, 16))
    codes[0], codes[1] = g.code_min, g.code_max
    return (codes * 2.0**g.scale_exp).astype(np.float32)


@pytest.mark.parametrize("name", ["TFC_2W2A", "qkeras_jettagging"])
def test_ir_equals_the_reference_at_the_core_output(cleaned, name):
    """1,000 inputs through the reference's kernels (pre-processing included) and through the IR: the core
    output codes are identical; every threshold layer carries its proof."""
    m = cleaned[name]
    prec = JET_PRECISION if name == "qkeras_jettagging" else None
    model = lower(m, name, input_precision=prec)
    p = partition(m)
    x = _inputs(name, 1000)
    sub = Subgraph(m, [p.graph_input], [p.core_input, p.core_output])
    outs = [sub({p.graph_input: x[i:i + 1]}) for i in range(len(x))]  # TFC's flatten has batch 1 built in
    ref = {t: np.concatenate([o[t] for o in outs]) for t in (p.core_input, p.core_output)}
    scale_in = model.input_fmt.scale or 2.0**model.input_fmt.scale_exp
    codes = np.rint(ref[p.core_input] / scale_in).astype(np.int64).reshape(len(x), -1)
    want = np.rint(ref[p.core_output].reshape(len(x), -1) / 2.0**model.output_fmt.scale_exp).astype(np.int64)
    assert np.array_equal(model.run(codes), want)
    assert model.host_post and model.host_pre == (name == "TFC_2W2A")
    ths = [ly.requant for ly in model.layers if isinstance(getattr(ly, "requant", None), Thresholds)]
    assert len(ths) == (3 if name == "TFC_2W2A" else 0)
    assert all(t.proof["mismatches"] == 0 and t.proof["method"] == "exhaustive" for t in ths)
    if name == "TFC_2W2A":
        assert any(d < 0 for t in ths for d in t.dir)  # negative BatchNorm gammas: decreasing channels


@pytest.mark.needs("verilator")
@pytest.mark.parametrize("name,kw", [("qkeras_jettagging", {}),
                                     ("TFC_2W2A", {"strategy": "resource", "reuse": 64, "pipeline": 2}),
                                     ("qkeras_jettagging", {"strategy": "resource", "reuse": 16, "pipeline": 3})])
def test_rtl_equals_the_ir(cleaned, tmp_path, name, kw):
    from codesign.verify import run_codes

    m = cleaned[name]
    model = lower(m, name, input_precision=JET_PRECISION if name == "qkeras_jettagging" else None)
    iface = generate(model, tmp_path / "rtl", **kw)
    assert iface["host"]["post"] and iface["output"]["scale_exp"] is not None
    f = model.input_fmt
    rng = np.random.default_rng(1)
    x = rng.integers(f.lo, f.hi + 1, (400, int(np.prod(model.input_shape))))
    x[0], x[1] = f.lo, f.hi
    y, st = run_codes(tmp_path / "rtl", x, simulator="verilator")
    assert np.array_equal(y, model.run(x))
    assert st["latency"] == iface["latency_cycles"] and st["ii"] == iface["ii"]


def test_ir_round_trips_with_thresholds(cleaned):
    model = lower(cleaned["TFC_2W2A"])
    back = ir.model_from_json(model.to_json())
    x = np.random.default_rng(2).integers(-1, 2, (300, 784))
    assert np.array_equal(back.run(x), model.run(x)) and back.host_pre and back.host_post
