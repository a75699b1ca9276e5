"""The built wheel is complete: installed away from the source tree, codesign emits RTL (the hw/ library
ships with it), verifies it against the golden model and finds its model zoo (models/ ships with it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from codesign.rtl.fixtures import mlp_qonnx

REPO = Path(__file__).resolve().parent.parent
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "codesign", "hw", "models")
SHIPPED = {"hw": ("*.v", "boards/*"), "models": ("*.yaml",)}  # as setup.py: repository folder -> files

VERIFY = """
import json, sys
from pathlib import Path
import codesign
from codesign.verify import verify
r = verify(Path("rtl").resolve(), Path(sys.argv[1]), vectors=300, out_dir=Path("verify").resolve())
print(json.dumps({"codesign": codesign.__file__, "mismatches": r["mismatches"], "vectors": r["vectors"],
                  "ok": r["ok"], "simulator": r["simulator"]}))
"""


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the build inputs (the source tree stays untouched), with the project
    venv's setuptools (no build isolation: no index needed)."""
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "share"))
        else:
            shutil.copy2(p, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp / "dist", src])
    (wheel,) = (tmp / "dist").glob("codesign-*.whl")
    return wheel


def test_wheel_installed_without_source_tree_emits_and_verifies_rtl(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, patterns in SHIPPED.items():
        files = [f.relative_to(REPO / folder) for pat in patterns for f in (REPO / folder).glob(pat) if f.is_file()]
        assert files
        missing = [str(f) for f in files if f"codesign/share/{folder}/{f.as_posix()}" not in names]
        assert not missing, f"wheel lacks {folder}/ files: {missing}"

    # a fresh venv whose dependencies come from the project venv: a plain path line in a .pth file puts
    # that site-packages on sys.path without processing the .pth files in it, so the project venv's
    # editable codesign (a .pth import hook there) stays out and only the wheel provides codesign
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (purelib / "codesign-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel])

    work = tmp_path / "work"  # outside the source tree: nothing can come from the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CODESIGN_SIM_CACHE=str(tmp_path / "sim-cache"), COLUMNS="200")
    where = _run([py, "-c", "import codesign, codesign.resources as r; "
                  "print(codesign.__file__, r.hw_dir(), r.boards_dir(), r.models_dir(), sep='\\n')"],
                 cwd=work, env=env).stdout.split()
    assert len(where) == 4
    for p in where:
        assert Path(p).is_relative_to(purelib / "codesign"), f"{p}: not the installed wheel ({purelib})"
    assert (Path(where[2]) / "ulx3s.lpf").is_file()

    model = mlp_qonnx(tmp_path / "model.onnx", sizes=(8, 4, 3))
    _run([venv / "bin" / "codesign", "rtl", model, "--out", "rtl"], cwd=work, env=env)
    iface = json.loads((work / "rtl" / "interface.json").read_text())
    libs = [f for f in iface["files"] if (REPO / "hw" / f).is_file()]
    assert libs, iface["files"]  # the generated design uses the hw/ library, copied from the wheel
    for f in libs:
        assert (work / "rtl" / f).read_bytes() == (REPO / "hw" / f).read_bytes()

    res = json.loads(_run([py, "-c", VERIFY, model], cwd=work, env=env).stdout.strip().splitlines()[-1])
    assert Path(res["codesign"]).is_relative_to(purelib / "codesign")
    assert res["ok"] and res["mismatches"] == 0 and res["vectors"] >= 300, res

    out = _run([venv / "bin" / "codesign", "models"], cwd=work, env=env).stdout
    zoo = sorted(p.stem for p in (REPO / "models").glob("*.yaml"))
    assert zoo and all(name in out for name in zoo), out
