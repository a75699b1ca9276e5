"""Shared helpers of the RTL layer tests (test_rtl_residual / _perchannel / _avgpool): lint, verification
against the golden model, on-grid input codes with corners, onnx.helper graph builders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codesign.verify import tool_env

sys.path.insert(0, str(Path(__file__).parent))
from golden_models import QDOMAIN, const, make_model, quant_node  # noqa: E402,F401  (re-exported)

needs_verilator = pytest.mark.needs("verilator")
needs_iverilog = pytest.mark.needs("iverilog")


def lint(d, iface) -> None:
    """``verilator --lint-only -Wall`` of a generated design: no warning at all."""
    p = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", iface["top"], *iface["files"]],
                       cwd=d, env=tool_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]


def verify_ok(d, onnx_path, vectors: int = 3000) -> dict:
    """codesign.verify on Verilator against the golden model: random + corner vectors, input gaps and
    output backpressure in the second half; 0 mismatches, measured latency and II as declared."""
    from codesign.verify import summary, verify

    res = verify(d, onnx_path, vectors=vectors, simulator="verilator")
    assert res["mismatches"] == 0 and res["ok"], summary(res) + f" {res['checks_failed']}"
    assert res["vectors"] >= vectors and res["latency_cycles"]["ok"] and res["ii"]["ok"]
    return res


def codes(m, n, seed=0):
    """Random input codes of an IR model, the first rows all-min, all-max and alternating extremes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(m.input_fmt.lo, m.input_fmt.hi + 1, size=(n, int(np.prod(m.input_shape))))
    x[0], x[1] = m.input_fmt.lo, m.input_fmt.hi
    x[2, ::2], x[2, 1::2] = m.input_fmt.lo, m.input_fmt.hi
    return x


def assert_ir_matches_golden(p, m, n=2000, seed=3):
    """The IR's integer reference equals the golden model (codes and output scale exponents)."""
    from codesign.golden import GoldenModel

    g = GoldenModel(str(p))
    x = codes(m, n, seed)
    out, e = g.run_codes(x.reshape(n, *m.input_shape))
    assert np.array_equal(np.asarray(out).reshape(n, -1), m.run(x))
    exps = np.asarray(e).ravel()
    if m.output_exps is None:
        assert exps.size == 1 and int(exps[0]) == m.output_fmt.scale_exp
    else:
        assert np.array_equal(exps, m.output_exps)
    return g, x
