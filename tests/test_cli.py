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


@pytest.mark.parametrize("args, section, expected", [
    (["verify", "--waves"], "verify", {"waves": True}),
    (["verify"], "verify", {"waves": True}),  # from the run's config
    (["verify", "--no-waves", "--vectors", "50"], "verify", {"waves": False, "random_vectors": 50}),
    (["energy", "--activity", "--vectors", "7"], "energy", {"activity": True, "vectors": 7}),
    (["energy"], "energy", {"activity": True, "vectors": 1000}),
    (["energy", "--no-activity"], "energy", {"activity": False}),
])
def test_stage_flags_map_to_config_keys(tmp_path, monkeypatch, args, section, expected):
    """Behaviour flags are config keys (verify.waves, energy.activity/vectors): a flag overrides the run's
    config for this command, no flag keeps it."""
    from codesign import cli, config, flow
    from codesign.run import RunDir

    rd = RunDir(tmp_path / "run")
    flow.save_config(rd, config.load("digits_mlp", {"verify.waves": True, "energy.activity": True}))
    seen = {}
    monkeypatch.setattr(flow, "run_step", lambda rd, cfg, step: seen.update(step=step.name, cfg=cfg) or {})
    cli.app([args[0], str(rd.root), *args[1:]], standalone_mode=False)
    assert seen["step"] == args[0]
    got = getattr(seen["cfg"], section)
    assert {k: getattr(got, k) for k in expected} == expected
