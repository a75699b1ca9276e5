"""pytest plugin: the ``codesign_verify`` fixture.

    def test_my_accel(codesign_verify):
        res = codesign_verify("runs/digits_mlp/rtl", "runs/digits_mlp/export/model.onnx")
        assert res["mismatches"] == 0

The fixture calls :func:`codesign.verify.verify` with ``out_dir`` in the test's ``tmp_path`` (so
``verify.json``, the logs and waveforms stay with the test) and attaches a one-line summary to the
test report. Its defaults are the ``verify:`` keys of a codesign config, set on the pytest command line
(when the plugin is registered as a ``pytest11`` entry point) or as ini keys of the pytest configuration
(e.g. ``[tool.pytest.ini_options]`` in pyproject.toml); the command line wins:

    --codesign-sim / codesign_sim          verify.simulator: verilator | icarus   (default verilator)
    --codesign-vectors / codesign_vectors  verify.random_vectors                  (default 100000)
    --codesign-waves / codesign_waves      verify.waves: dump waveforms + toggle counts

Load it in a test module with ``pytest_plugins = ["codesign.verify.pytest_plugin"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("codesign", "codesign RTL verification")
    g.addoption("--codesign-sim", default=None, help="simulator for codesign_verify (verilator|icarus)")
    g.addoption("--codesign-vectors", default=None, type=int, help="random vectors for codesign_verify")
    g.addoption("--codesign-waves", action="store_true", default=False, help="dump waves + toggle counts")
    parser.addini("codesign_sim", "codesign_verify simulator (verilator|icarus)")
    parser.addini("codesign_vectors", "codesign_verify random vectors")
    parser.addini("codesign_waves", "codesign_verify: dump waves + toggle counts", type="bool", default=False)


def _opt(config: pytest.Config, name: str) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # plugin loaded after option parsing (pytest_plugins in a test module)
        return None


def _ini(config: pytest.Config, name: str) -> Any:
    try:
        return config.getini(name)
    except ValueError:  # not registered (plugin loaded late)
        return None


def verify_defaults(config: pytest.Config) -> Any:
    """The fixture's defaults as a validated :class:`codesign.config.VerifyConfig` (command line, then ini)."""
    from codesign import config as config_mod

    given = {"simulator": _opt(config, "--codesign-sim") or _ini(config, "codesign_sim"),
             "random_vectors": _opt(config, "--codesign-vectors") or _ini(config, "codesign_vectors"),
             "waves": bool(_opt(config, "--codesign-waves") or _ini(config, "codesign_waves"))}
    given = {k: v for k, v in given.items() if v not in (None, "")}
    return config_mod.from_dict({"verify": given}, "pytest options (--codesign-*/codesign_*)").verify


@pytest.fixture
def codesign_verify(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Returns ``run(rtl_dir, onnx_or_reference=None, **verify_kwargs) -> result dict``."""
    from codesign.verify import summary, verify

    vc = verify_defaults(request.config)
    calls = {"n": 0}

    def run(rtl_dir: str | Path, onnx: Any = None, **kw: Any) -> dict[str, Any]:
        calls["n"] += 1
        kw.setdefault("simulator", vc.simulator)
        kw.setdefault("vectors", vc.random_vectors)
        kw.setdefault("waves", vc.waves)
        kw.setdefault("out_dir", tmp_path / f"verify{calls['n'] if calls['n'] > 1 else ''}")
        res = verify(rtl_dir, onnx, **kw)
        request.node.user_properties.append(("codesign_verify", summary(res)))
        return res

    return run
