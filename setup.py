"""Build hook: the wheel carries the top-level ``hw/`` and ``models/`` folders as package data.

They stay at the top of the repository, the documented place to read and edit them; ``build_py``
copies them into the built package as ``codesign/share/hw`` (``*.v``, ``boards/*``) and
``codesign/share/models`` (``*.yaml``), where :mod:`codesign.resources` finds them in an installed
codesign. An editable install reads the repository folders directly and copies nothing. All other
metadata is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHARED = {"hw": ("*.v", "boards/*"), "models": ("*.yaml", "qonnx/*")}  # repository folder -> files shipped


class BuildPyWithShare(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for folder, patterns in SHARED.items():
            src = ROOT / folder
            files = sorted(f for pat in patterns for f in src.glob(pat) if f.is_file())
            if not files:  # e.g. an sdist made without MANIFEST.in: never build a wheel that cannot emit RTL
                raise SystemExit(f"setup.py: no {' or '.join(patterns)} files in {src}")
            for f in files:
                dst = Path(self.build_lib, "codesign", "share", folder, f.relative_to(src))
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst)


setup(cmdclass={"build_py": BuildPyWithShare})
