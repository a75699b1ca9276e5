"""pytest plugin: the ``codesign_verify`` fixture.

    def test_my_accel(codesign_verify):
        res = codesign_verify("runs/digits_mlp/rtl", "runs/digits_mlp/export/model.onnx")
        assert res["mismatches"] == 0

The fixture calls :func:`codesign.verify.verify` with ``out_dir`` in the test's ``tmp_path`` (so
``verify.json``, the logs and waveforms stay with the test) and attaches a one-line summary to the
test report. Defaults can be changed on the command line (when the plugin is registered as a
``pytest11`` entry point) or with environment variables:

    --codesign-sim / CODESIGN_VERIFY_SIM            verilator | icarus   (default verilator)
    --codesign-vectors / CODESIGN_VERIFY_VECTORS    random vectors       (default 100000)
    --codesign-waves / CODESIGN_VERIFY_WAVES=1      dump waveforms + toggle counts

Load it in a test module with ``pytest_plugins = ["codesign.verify.pytest_plugin"]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("codesign", "codesign RTL verification")
    g.addoption("--codesign-sim", default=None, help="simulator for codesign_verify (verilator|icarus)")
    g.addoption("--codesign-vectors", default=None, type=int, help="random vectors for codesign_verify")
    g.addoption("--codesign-waves", action="store_true", default=False, help="dump waves + toggle counts")


def _opt(config: pytest.Config, name: str) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # plugin loaded after option parsing (pytest_plugins in a test module)
        return None


@pytest.fixture
def codesign_verify(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Returns ``run(rtl_dir, onnx_or_reference=None, **verify_kwargs) -> result dict``."""
    from codesign.verify import summary, verify

    cfg = request.config
    sim = _opt(cfg, "--codesign-sim") or os.environ.get("CODESIGN_VERIFY_SIM") or "verilator"
    vec = _opt(cfg, "--codesign-vectors") or os.environ.get("CODESIGN_VERIFY_VECTORS")
    waves = bool(_opt(cfg, "--codesign-waves")) or os.environ.get("CODESIGN_VERIFY_WAVES", "") not in ("", "0")
    calls = {"n": 0}

    def run(rtl_dir: str | Path, onnx: Any = None, **kw: Any) -> dict[str, Any]:
        calls["n"] += 1
        kw.setdefault("simulator", sim)
        if vec is not None:
            kw.setdefault("vectors", int(vec))
        kw.setdefault("waves", waves)
        kw.setdefault("out_dir", tmp_path / f"verify{calls['n'] if calls['n'] > 1 else ''}")
        res = verify(rtl_dir, onnx, **kw)
        request.node.user_properties.append(("codesign_verify", summary(res)))
        return res

    return run
