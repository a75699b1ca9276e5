"""The command line: help lists the stages, user errors are one line with a non-zero exit."""

import subprocess
import sys

import pytest


def run(*args, cwd=None):
    import os
    from pathlib import Path

    import codesign

    env = {**os.environ, "PYTHONPATH": str(Path(codesign.__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "codesign", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


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


def test_rtl_out_on_a_run_dir_is_refused(tmp_path):
    """``--out`` only applies to an .onnx input; on a run directory it was silently ignored (the run's own
    rtl/ was overwritten): now a one-line error, nothing written."""
    from codesign import config, flow
    from codesign.run import RunDir

    rd = RunDir(tmp_path / "run")
    flow.save_config(rd, config.load("digits_mlp"))
    r = run("rtl", str(rd.root), "--reuse", "4", "--out", str(tmp_path / "other"))
    assert r.returncode == 2 and "--out applies to a .onnx file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "other").exists() and not (rd.root / "rtl").exists()
    assert "reuse: 4" not in (rd.root / "config.yaml").read_text()


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


def _commands() -> list[list[str]]:
    from codesign.cli import app

    cmds = [[c.name or c.callback.__name__] for c in app.registered_commands]
    for g in app.registered_groups:
        cmds += [[g.name, c.name or c.callback.__name__] for c in g.typer_instance.registered_commands]
    return cmds


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: "-".join(c))
def test_every_subcommand_refuses_a_bogus_option(cmd):
    """A mistyped option is a usage error naming it: exit 2, no traceback (every subcommand)."""
    r = run(*cmd, "--bogus-option")
    assert r.returncode == 2, (cmd, r.stdout[-500:], r.stderr[-500:])
    assert "No such option" in r.stderr and "--bogus-option" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_inputs_are_one_line_errors(tmp_path):
    """A file that is not an array, or not an ONNX model: one line naming it, exit 2, nothing written."""
    from pathlib import Path

    bad = tmp_path / "bad.npy"
    bad.write_text("not an array")
    model = Path(__file__).resolve().parent.parent / "models" / "qonnx" / "TFC_2W2A.onnx"
    out = tmp_path / "y.npy"
    r = run("golden", str(model), "--inputs", str(bad), "--out", str(out))
    assert r.returncode == 2 and "bad.npy" in r.stderr and "Traceback" not in r.stderr and not out.exists()
    onnx_bad = tmp_path / "bad.onnx"
    onnx_bad.write_bytes(b"\x00garbage")
    r = run("rtl", str(onnx_bad), "--out", str(tmp_path / "rtl"))
    assert r.returncode == 2 and "bad.onnx" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "rtl" / "interface.json").exists()


def test_nan_and_inf_inputs_are_one_line_errors(tmp_path):
    """NaN or inf in an input file (even for a model whose float pre-processing would accept it): one line
    naming the file and the first bad index, exit 2, nothing written."""
    from pathlib import Path

    import numpy as np

    model = Path(__file__).resolve().parent.parent / "models" / "qonnx" / "TFC_2W2A.onnx"
    for bad in (np.nan, np.inf):
        x = np.zeros((3, 1, 28, 28), dtype=np.float32)
        x[1, 0, 2, 3] = bad
        np.save(tmp_path / "x.npy", x)
        out = tmp_path / "y.npy"
        r = run("golden", str(model), "--inputs", str(tmp_path / "x.npy"), "--out", str(out))
        assert r.returncode == 2 and "NaN/inf" in r.stderr and "(1, 0, 2, 3)" in r.stderr, r.stderr[-500:]
        assert "Traceback" not in r.stderr and not out.exists()


def test_verify_fpga_energy_on_a_plain_rtl_folder(tmp_path):
    """`codesign rtl MODEL.onnx --out DIR` writes a folder that is not a run directory; `codesign verify`,
    `fpga` and `energy` take it as it is (the golden model of the ONNX file its interface.json names)."""
    import json
    from pathlib import Path

    import numpy as np
    import onnx
    from golden_models import const, make_model, quant_node
    from onnx import helper

    rng = np.random.default_rng(0)
    inits: list = []
    nodes = [quant_node("x", "xq", 0.125, 0, 6, 1, 0, "ROUND", inits),
             quant_node("w", "wq", 0.25, 0, 4, 1, 1, "ROUND", inits),
             helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="fc"),
             helper.make_node("Relu", ["acc"], ["r"], name="relu"),
             quant_node("r", "y", 0.5, 0, 5, 0, 0, "ROUND", inits)]
    inits.append(const("w", rng.integers(-7, 8, (8, 4)) * 0.25))
    onnx.save(make_model(nodes, inits, (1, 8), (1, 4)), tmp_path / "m.onnx")
    d = tmp_path / "rtl"
    r = run("rtl", str(tmp_path / "m.onnx"), "--out", str(d))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("verify", "rtl", "--vectors", "300", "--sim", "icarus", cwd=tmp_path)  # a relative folder
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    v = json.loads((tmp_path / "rtl_verify" / "verify.json").read_text())
    assert v["mismatches"] == 0 and v["vectors"] >= 300
    r = run("fpga", str(d), "--target", "ice40-up5k", "--clock-mhz", "12")
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads((tmp_path / "rtl_fpga" / "ice40-up5k" / "fpga.json").read_text())
    assert f["luts"] > 0 and f["timing_met"] and Path(f["bitstream"]).stat().st_size > 1000
    r = run("energy", str(d))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "rtl_energy" / "energy.json").read_text())["pj_per_inference"] > 0
