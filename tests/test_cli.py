"""The command line: help lists the stages, user errors are one line with a non-zero exit."""

import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "codesign", *args], capture_output=True, text=True)


def test_help_lists_stages():
    r = run("--help")
    assert r.returncode == 0
    for stage in ("train", "export", "golden", "hls", "rtl", "verify", "fpga", "energy", "study", "report", "flow"):
        assert stage in r.stdout


@pytest.mark.parametrize("cmd", ["flow", "train", "rtl", "verify", "fpga"])
def test_subcommand_help(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout


def test_stage_on_empty_run_dir_says_what_to_run(tmp_path):
    r = run("export", str(tmp_path))
    assert r.returncode == 2
    assert "config.yaml not found" in r.stderr and "Traceback" not in r.stderr


def test_unknown_until_stage(tmp_path):
    r = run("flow", "--until", "synth", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "unknown stage 'synth'" in r.stderr
