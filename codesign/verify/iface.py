"""interface.json (written by the rtl stage): loading, validation, and field packing.

The schema is in docs/contracts.md. One vector per beat; field ``i`` of ``tdata`` is bits
``[i*bits +: bits]`` (field 0 in the LSBs), two's complement when signed.

``"io": "stream"`` (codesign.rtl.stream): the input takes ``input.beats`` beats per vector of
``input.fields_per_beat`` fields each (``tdata`` is ``fields_per_beat * bits`` wide); field ``c`` of beat
``p`` carries input-vector field ``input.beat_fields[p][c]``. ``fields``/``shape`` still describe the whole
vector (stimulus, golden model); :meth:`Stream.to_beats` cuts vectors into beats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import StageInputError


@dataclass(frozen=True)
class Stream:
    tdata: str
    tvalid: str
    tready: str | None
    fields: int
    bits: int
    signed: bool
    scale_exp: int | None
    shape: tuple[int, ...]
    beats: int = 1  # io=stream: beats per vector
    beat_fields: tuple[tuple[int, ...], ...] | None = None  # io=stream: input field of each beat's fields

    @property
    def width(self) -> int:
        """Bits of a whole vector (= tdata in vector mode)."""
        return self.fields * self.bits

    @property
    def beat_width(self) -> int:
        """Width of ``tdata`` (one beat)."""
        return self.beat_stream().width

    def beat_stream(self) -> Stream:
        """The stream of single beats (itself in vector mode)."""
        if self.beat_fields is None:
            return self
        f = len(self.beat_fields[0])
        return Stream(self.tdata, self.tvalid, self.tready, f, self.bits, self.signed, self.scale_exp, (f,))

    def to_beats(self, codes: np.ndarray) -> np.ndarray:
        """(N, fields) vectors -> (N * beats, fields per beat) beat codes, in stream order."""
        c = np.asarray(codes).reshape(-1, self.fields)
        if self.beat_fields is None:
            return c
        idx = np.asarray(self.beat_fields, dtype=np.int64)
        return c[:, idx].reshape(len(c) * idx.shape[0], idx.shape[1])

    @property
    def bytes_per_field(self) -> int:
        return (self.bits + 7) // 8

    @property
    def hex_digits(self) -> int:
        return (self.width + 3) // 4

    @property
    def code_min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def code_max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    onnx_output: str | None
    stream: Stream | None  # tap stream (tdata/tvalid) when the RTL has debug taps


@dataclass
class Interface:
    path: Path
    top: str
    files: list[Path]
    clock: str
    reset: str | None
    reset_active_low: bool
    input: Stream
    output: Stream
    latency_cycles: int | None
    ii: int | None
    layers: list[Layer] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def sources(self) -> list[Path]:
        return list(self.files)

    @property
    def strategy(self) -> str:
        return str(self.raw.get("strategy", "latency"))

    @property
    def reuse(self) -> int:
        return int(self.raw.get("reuse", 1) or 1)

    @property
    def io(self) -> str:
        """``vector`` (one vector per beat) or ``stream`` (input.beats pixel beats per vector)."""
        return str(self.raw.get("io", "vector"))

    @property
    def onnx(self) -> str | None:
        return self.raw.get("onnx") or None

    @property
    def taps(self) -> list[Layer]:
        return [la for la in self.layers if la.stream is not None]


def _stream(d: dict[str, Any], where: str, *, tap: bool = False) -> Stream:
    try:
        fields = int(d["fields"])
        bits = int(d["bits"])
        if fields < 1 or bits < 1:
            raise ValueError("fields and bits must be >= 1")
        shape = tuple(int(s) for s in d.get("shape") or [fields])
        if int(np.prod(shape)) != fields:
            raise ValueError(f"shape {list(shape)} has {int(np.prod(shape))} elements, fields is {fields}")
        se = d.get("scale_exp")
        beats, bf = int(d.get("beats", 1) or 1), None
        if d.get("beat_fields") is not None:
            bf = tuple(tuple(int(v) for v in row) for row in d["beat_fields"])
            if len(bf) != beats or len({len(r) for r in bf}) != 1 or sorted(v for r in bf for v in r) != list(range(fields)):
                raise ValueError(f"beat_fields must be {beats} beats of equal size covering the {fields} fields once")
        elif beats != 1:
            raise ValueError("beats > 1 needs beat_fields")
        return Stream(
            tdata=str(d["tdata"]),
            tvalid=str(d["tvalid"]),
            tready=None if tap or not d.get("tready") else str(d["tready"]),  # absent: always ready
            fields=fields,
            bits=bits,
            signed=bool(d.get("signed", True)),
            scale_exp=None if se is None else int(se),
            shape=shape,
            beats=beats,
            beat_fields=bf,
        )
    except (KeyError, TypeError, ValueError) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise StageInputError(f"interface.json {where}: {what}") from None


def load_interface(path: str | Path) -> Interface:
    """Read ``interface.json`` (or the folder that holds it) and check it (used by verify, fpga, energy)."""
    p = Path(path)
    if p.is_dir():
        p = p / "interface.json"
    if not p.exists():
        raise StageInputError(f"{p} not found: run `codesign rtl` first (or `codesign flow`)")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise StageInputError(f"{p} is not valid JSON: {e}") from None
    for key in ("top", "files", "clock", "input", "output"):
        if key not in d:
            raise StageInputError(f"interface.json: missing key '{key}' ({p})")
    files = [p.parent / f for f in d["files"]]
    for f in files:
        if not f.exists():
            raise StageInputError(f"interface.json files: {f} not found")
    layers = []
    for i, la in enumerate(d.get("layers") or []):
        name = str(la.get("name", f"layer{i}"))
        tap = None
        if la.get("tap"):
            tap_d = dict(la)
            tap_d.update(la["tap"])
            tap = _stream(tap_d, f"layers[{i}] ({name}).tap", tap=True)
        layers.append(Layer(name=name, kind=str(la.get("kind", "")), onnx_output=la.get("onnx_output"), stream=tap))
    lat = d.get("latency_cycles")
    ii = d.get("ii")
    return Interface(
        path=p,
        top=str(d["top"]),
        files=files,
        clock=str(d["clock"]),
        reset=d.get("reset"),
        reset_active_low=bool(d.get("reset_active_low", False)),
        input=_stream(d["input"], "input"),
        output=_stream(d["output"], "output"),
        latency_cycles=None if lat is None else int(lat),
        ii=None if ii is None else int(ii),
        layers=layers,
        raw=d,
    )


# ---- packing: integer codes <-> fixed-width hex lines (vectorized) ----------------------------

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def codes_to_bits(codes: np.ndarray, s: Stream) -> np.ndarray:
    """(N, fields) integer codes -> (N, width) bits, LSB first. Codes must be in range."""
    c = np.asarray(codes, dtype=np.int64).reshape(-1, s.fields)
    if c.size and (c.min() < s.code_min or c.max() > s.code_max):
        raise ValueError(f"codes outside [{s.code_min}, {s.code_max}] for a {s.bits}-bit field")
    u = (c & ((1 << s.bits) - 1)).astype(np.uint64)
    shifts = np.arange(s.bits, dtype=np.uint64)
    bits = ((u[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)  # (N, fields, bits)
    return bits.reshape(len(c), s.width)


def bits_to_hex(bits: np.ndarray, ndigits: int) -> np.ndarray:
    """(N, width) bits LSB first -> (N, ndigits) ASCII hex bytes, most significant digit first."""
    n, w = bits.shape
    pad = ndigits * 4 - w
    if pad:
        bits = np.concatenate([bits, np.zeros((n, pad), np.uint8)], axis=1)
    nib = bits.reshape(n, ndigits, 4) @ np.array([1, 2, 4, 8], dtype=np.uint8)
    return _HEX[nib[:, ::-1]]


def pack_hex_lines(codes: np.ndarray, s: Stream) -> bytes:
    """Codes -> the text of a ``$readmemh`` file, one vector per line."""
    h = bits_to_hex(codes_to_bits(codes, s), s.hex_digits)
    nl = np.full((len(h), 1), ord("\n"), np.uint8)
    return np.concatenate([h, nl], axis=1).tobytes()


def hex_to_codes(hexchars: np.ndarray, s: Stream) -> tuple[np.ndarray, np.ndarray]:
    """(N, ndigits) ASCII hex (MSD first, as ``%h`` prints) -> ((N, fields) int64 codes, (N,) bool
    'has x/z'). Digits that are not hex (x, z, X, Z from a 4-state simulator) count as unknown."""
    hc = np.asarray(hexchars, dtype=np.uint8)
    n, nd = hc.shape
    lower = hc | 0x20
    is_dig = (hc >= ord("0")) & (hc <= ord("9"))
    is_af = (lower >= ord("a")) & (lower <= ord("f"))
    nib = np.where(is_dig, hc - ord("0"), np.where(is_af, lower - ord("a") + 10, 0)).astype(np.uint8)
    unknown = ~(is_dig | is_af).all(axis=1)
    bits = ((nib[:, ::-1, None] >> np.arange(4, dtype=np.uint8)) & 1).reshape(n, nd * 4)[:, : s.width]
    b = bits.reshape(n, s.fields, s.bits).astype(np.int64)
    vals = b @ (np.int64(1) << np.arange(s.bits, dtype=np.int64)) if s.bits < 63 else _wide(b)
    if s.signed:
        vals = np.where(vals >= (1 << (s.bits - 1)), vals - (1 << s.bits), vals)
    return vals, unknown


def _wide(b: np.ndarray) -> np.ndarray:  # pragma: no cover - >62-bit fields are not expected
    raise ValueError("fields wider than 62 bits are not supported")


def int_to_codes(values: list[int], s: Stream) -> np.ndarray:
    """Packed Python ints (one per beat) -> (N, fields) codes."""
    if not values:
        return np.zeros((0, s.fields), np.int64)
    nd = s.hex_digits
    text = "".join(format(v, f"0{nd}x")[-nd:] for v in values).encode()
    codes, _ = hex_to_codes(np.frombuffer(text, np.uint8).reshape(len(values), nd), s)
    return codes


def codes_to_ints(codes: np.ndarray, s: Stream) -> list[int]:
    """(N, fields) codes -> packed Python ints (one per beat)."""
    h = bits_to_hex(codes_to_bits(codes, s), s.hex_digits)
    return [int(row, 16) for row in h.view(f"S{s.hex_digits}").ravel().tolist()]
