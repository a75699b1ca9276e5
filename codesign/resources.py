"""Where codesign's data folders are: the Verilog library, the board constraint files and the model zoo.

The source of these files is the repository's top-level ``hw/`` (``hw/*.v``, ``hw/boards/*``) and
``models/`` (``models/*.yaml``) folders, the place to read and edit them. A built wheel carries copies
as package data, ``codesign/share/hw`` and ``codesign/share/models`` (copied by the ``build_py`` hook
in ``setup.py``). These functions return the installed copies when they are there, else the
repository folders (a source checkout or an editable install).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SHARE = "share"  # package-data folder of a built wheel (setup.py writes it, nothing else)


def _folder(name: str) -> Path:
    installed = _PACKAGE / SHARE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def hw_dir() -> Path:
    """The hand-written Verilog library (``cs_*.v``, ``uart_*.v``)."""
    return _folder("hw")


def boards_dir() -> Path:
    """Board constraint files (``ulx3s.lpf``, ``icebreaker.pcf``)."""
    return hw_dir() / "boards"


def models_dir() -> Path:
    """The model zoo, one config YAML per model."""
    return _folder("models")
