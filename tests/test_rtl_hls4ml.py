"""hls4ml backend plugin ``CodesignRTL``: convert -> write -> compile -> predict, bit-exact."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.needs("iverilog")


def test_plugin_registers_via_env_var():
    env = dict(os.environ, HLS4ML_BACKEND_PLUGINS="codesign.hls4ml_plugin")
    code = "import hls4ml.backends as b; print('codesignrtl' in b.get_available_backends())"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.stdout.strip().endswith("True"), p.stderr[-2000:]


def test_convert_write_compile_predict(tmp_path):
    import hls4ml

    from codesign.hls4ml_plugin import ensure_registered
    from codesign.rtl import lower
    from codesign.rtl.fixtures import mlp_qonnx

    ensure_registered()
    p = mlp_qonnx(tmp_path / "m.onnx", (16, 8, 4), "fixed", seed=3)
    model = onnx.load(str(p))
    hm = hls4ml.converters.convert_from_onnx_model(model, backend="CodesignRTL", output_dir=str(tmp_path / "prj"),
                                                   strategy="resource", reuse=2, simulator="icarus")
    hm.write()
    assert (tmp_path / "prj" / "rtl" / "codesign_top.v").exists()
    hm.compile()
    ir = lower(model)
    x = np.random.default_rng(0).integers(ir.input_fmt.lo, ir.input_fmt.hi + 1, size=(32, 16))
    y = hm.predict(x * 2.0**ir.input_fmt.scale_exp)
    np.testing.assert_array_equal(y, ir.run(x) * 2.0**ir.output_fmt.scale_exp)


@pytest.mark.parametrize("kind", ["per_channel", "residual"])
def test_predict_per_channel_and_residual(tmp_path, kind):
    """predict() returns real values: per-channel output scales (one per field) and a residual graph."""
    import hls4ml

    from codesign.golden import GoldenModel
    from codesign.hls4ml_plugin import ensure_registered
    from codesign.rtl import lower
    from codesign.rtl.fixtures import mlp_qonnx, resmlp_qonnx

    ensure_registered()
    p = tmp_path / "m.onnx"
    if kind == "per_channel":
        mlp_qonnx(p, (16, 8, 4), per_channel=True, seed=2)
    else:
        resmlp_qonnx(p, width=8, blocks=1)
    model = onnx.load(str(p))
    hm = hls4ml.converters.convert_from_onnx_model(model, backend="CodesignRTL", output_dir=str(tmp_path / "prj"),
                                                   simulator="icarus")
    hm.compile()
    ir = lower(model)
    assert (ir.output_exps is not None) == (kind == "per_channel")
    n_in = 16 if kind == "per_channel" else 8
    x = np.random.default_rng(1).integers(ir.input_fmt.lo, ir.input_fmt.hi + 1, size=(24, n_in))
    real = x * 2.0**ir.input_fmt.scale_exp
    np.testing.assert_array_equal(hm.predict(real), GoldenModel(str(p)).run(real))
