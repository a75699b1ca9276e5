"""Read and check ``rtl/interface.json`` (the accelerator the FPGA stage wraps; see docs/contracts.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codesign.errors import StageInputError


@dataclass(frozen=True)
class Stream:
    """One AXI-Stream side of the accelerator: ``fields`` integers of ``bits`` bits packed in tdata."""

    tdata: str
    tvalid: str
    tready: str | None
    fields: int
    bits: int
    signed: bool
    scale_exp: int
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        return self.fields * self.bits

    @property
    def bytes_per_field(self) -> int:
        return (self.bits + 7) // 8


@dataclass(frozen=True)
class Interface:
    path: Path
    top: str
    files: tuple[str, ...]
    clock: str
    reset: str | None
    reset_active_low: bool
    input: Stream
    output: Stream
    latency_cycles: int | None
    ii: int | None
    strategy: str
    reuse: int
    onnx: str | None
    raw: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def sources(self) -> list[Path]:
        return [self.folder / f for f in self.files]


def _stream(d: Any, side: str, src: Path) -> Stream:
    if not isinstance(d, dict):
        raise StageInputError(f"{src}: '{side}' must be an object")
    for key in ("tdata", "tvalid", "fields", "bits"):
        if key not in d:
            raise StageInputError(f"{src}: {side}.{key} is missing")
    fields, bits = int(d["fields"]), int(d["bits"])
    if fields < 1 or bits < 1:
        raise StageInputError(f"{src}: {side}.fields and {side}.bits must be >= 1 (got {fields}, {bits})")
    return Stream(
        tdata=str(d["tdata"]),
        tvalid=str(d["tvalid"]),
        tready=d.get("tready") or None,
        fields=fields,
        bits=bits,
        signed=bool(d.get("signed", True)),
        scale_exp=int(d.get("scale_exp", 0)),
        shape=tuple(int(s) for s in d.get("shape") or [fields]),
    )


def load_interface(path: str | Path) -> Interface:
    """Load ``interface.json`` (or the folder holding it) and check the keys the FPGA stage needs."""
    p = Path(path)
    if p.is_dir():
        p = p / "interface.json"
    if not p.exists():
        raise StageInputError(f"{p} not found: run `codesign rtl` first (or pass the folder holding interface.json)")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise StageInputError(f"{p} is not valid JSON: {e}") from None
    for key in ("top", "files", "clock"):
        if key not in d:
            raise StageInputError(f"{p}: '{key}' is missing")
    files = tuple(str(f) for f in d["files"])
    for f in files:
        if not (p.parent / f).exists():
            raise StageInputError(f"{p}: listed source {f} not found in {p.parent}")
    return Interface(
        path=p,
        top=str(d["top"]),
        files=files,
        clock=str(d["clock"]),
        reset=d.get("reset") or None,
        reset_active_low=bool(d.get("reset_active_low", False)),
        input=_stream(d.get("input"), "input", p),
        output=_stream(d.get("output"), "output", p),
        latency_cycles=d.get("latency_cycles"),
        ii=d.get("ii"),
        strategy=str(d.get("strategy", "latency")),
        reuse=int(d.get("reuse", 1) or 1),
        onnx=d.get("onnx") or None,
        raw=d,
    )
