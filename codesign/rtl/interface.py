"""``interface.json``: what a generated design looks like from the outside, written by the RTL stage
(:func:`Interface.to_json`) and read by verify, fpga and energy (:func:`load_interface`).

The schema is in docs/contracts.md. One vector per beat; field ``i`` of ``tdata`` is bits
``[i*bits +: bits]`` (field 0 in the LSBs), two's complement when signed.

``io = "stream"`` (:mod:`codesign.rtl.emit.stream`): the input takes ``input.beats`` beats per vector of
``input.fields_per_beat`` fields each (``tdata`` is ``fields_per_beat * bits`` wide); field ``c`` of beat
``p`` carries input-vector field ``input.beat_fields[p][c]``. ``fields``/``shape`` still describe the whole
vector (stimulus, golden model); :meth:`Stream.to_beats` cuts vectors into beats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import StageInputError


@dataclass(frozen=True)
class Stream:
    """An AXI-Stream port (or a debug tap: no ``tready``) and the vector it carries."""

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
    beat_order: str | None = None  # io=stream: the beat order in words
    scale_exps: tuple[int, ...] | None = None  # per-field exponents (per-channel output scales)
    bipolar: bool = False  # 1-bit fields: bit b carries the code 2b - 1
    scale: float | None = None  # a float (non-power-of-two) scale of every field (scale_exp is then null)
    scales: tuple[float, ...] | None = None  # per-field float scales

    def to_bits_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes (bipolar: -1/+1) -> the stored field values (bipolar: bits)."""
        return (np.asarray(codes) + 1) // 2 if self.bipolar else np.asarray(codes)

    def from_bits_codes(self, stored: np.ndarray) -> np.ndarray:
        """Stored field values -> codes (bipolar bits -> -1/+1)."""
        return 2 * np.asarray(stored) - 1 if self.bipolar else np.asarray(stored)

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

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tdata": self.tdata, "tvalid": self.tvalid, "tready": self.tready, "fields": self.fields,
                             "bits": self.bits, "signed": self.signed, "scale_exp": self.scale_exp,
                             "shape": list(self.shape)}
        if self.beat_fields is not None:
            f = len(self.beat_fields[0])
            d.update(beats=self.beats, fields_per_beat=f, tdata_bits=f * self.bits, beat_order=self.beat_order,
                     beat_fields=[list(r) for r in self.beat_fields])
        if self.scale_exps is not None:
            d["scale_exps"] = list(self.scale_exps)
        if self.bipolar:
            d["bipolar"] = True
        if self.scale is not None:
            d["scale"] = self.scale
        if self.scales is not None:
            d["scales"] = list(self.scales)
        return d


@dataclass(frozen=True)
class LayerInfo:
    """One layer module of the design: its output vector, timing and (with debug taps) its tap port."""

    name: str
    kind: str
    onnx_output: str | None
    fields: int = 0
    bits: int = 0
    signed: bool = True
    scale_exp: int | None = None
    shape: tuple[int, ...] = ()
    latency_cycles: int | None = None
    ii: int | None = None
    streamed: bool = False  # io=stream: a line-buffered layer before the collector
    pot: bool = False
    sparsity: float = 0.0
    scale_exps: tuple[int, ...] | None = None
    inputs: tuple[str, ...] | None = None  # residual graphs: producers ("input" = the network input)
    skip_fifo: dict | None = None  # a join: the FIFO on the early input
    tap: Stream | None = None  # debug tap (tdata/tvalid) carrying the layer's output vector

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "onnx_output": self.onnx_output,
                             "fields": self.fields, "bits": self.bits, "signed": self.signed,
                             "scale_exp": self.scale_exp, "shape": list(self.shape),
                             "latency_cycles": self.latency_cycles, "ii": self.ii}
        if self.streamed:
            d["streamed"] = True
        d.update(pot=self.pot, sparsity=self.sparsity)
        if self.scale_exps is not None:
            d["scale_exps"] = list(self.scale_exps)
        if self.inputs is not None:
            d["inputs"] = list(self.inputs)
        if self.skip_fifo is not None:
            d["skip_fifo"] = self.skip_fifo
        if self.tap is not None:
            d["tap"] = {"tdata": self.tap.tdata, "tvalid": self.tap.tvalid}
        return d


@dataclass(frozen=True)
class Interface:
    """A generated design's interface (``interface.json``); ``path`` is set when loaded from a file."""

    top: str
    files: tuple[str, ...]  # relative to the folder of interface.json, in compile order
    input: Stream
    output: Stream
    latency_cycles: int | None
    ii: int | None
    clock: str = "clk"
    reset: str | None = "rst"
    reset_active_low: bool = False
    io: str = "vector"
    timing: dict | None = None  # io=stream: how latency and II were derived
    strategy: str = "latency"
    reuse: int = 1
    onnx: str | None = None
    stream: dict | None = None  # io=stream: line-buffer geometry, collector
    layers: tuple[LayerInfo, ...] = ()
    multiplier: str | None = None
    axis_slice: bool | None = None
    pipeline: int | None = None
    flow_control: str | None = None  # "credit" (valid-only pipeline + output FIFO); None: "stall"
    host: dict | None = None  # host pre-/post-processing around the core (codesign.graph.analysis.partition)
    input_precision: str | None = None  # the input grid given for a graph input without a quantizer
    path: Path | None = field(default=None, compare=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def sources(self) -> list[Path]:
        """The design's Verilog files (absolute when loaded from a file)."""
        return [self.folder / f for f in self.files] if self.path is not None else [Path(f) for f in self.files]

    @property
    def taps(self) -> list[LayerInfo]:
        return [la for la in self.layers if la.tap is not None]

    def replace(self, **changes: Any) -> Interface:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"top": self.top, "files": list(self.files), "clock": self.clock, "reset": self.reset,
                             "reset_active_low": self.reset_active_low}
        if self.io != "vector":
            d["io"] = self.io
        d.update(input=self.input.to_json(), output=self.output.to_json(), latency_cycles=self.latency_cycles,
                 ii=self.ii)
        if self.timing is not None:
            d["timing"] = self.timing
        d.update(strategy=self.strategy, reuse=self.reuse, onnx=self.onnx)
        if self.stream is not None:
            d["stream"] = self.stream
        d["layers"] = [la.to_json() for la in self.layers]
        for k in ("multiplier", "axis_slice", "pipeline", "flow_control", "host", "input_precision"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    def write(self, folder: str | Path) -> Path:
        """``folder/interface.json`` (written to a temporary file, then renamed)."""
        from codesign.run import atomic_write_json

        p = Path(folder) / "interface.json"
        atomic_write_json(p, self.to_json())
        return p


# ---- reading -------------------------------------------------------------------------------------
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
            if (len(bf) != beats or len({len(r) for r in bf}) != 1
                    or sorted(v for r in bf for v in r) != list(range(fields))):
                raise ValueError(f"beat_fields must be {beats} beats of equal size covering the {fields} fields once")
        elif beats != 1:
            raise ValueError("beats > 1 needs beat_fields")
        ses, scs = d.get("scale_exps"), d.get("scales")
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
            beat_order=d.get("beat_order"),
            scale_exps=None if ses is None else tuple(int(v) for v in ses),
            bipolar=bool(d.get("bipolar", False)),
            scale=None if d.get("scale") is None else float(d["scale"]),
            scales=None if scs is None else tuple(float(v) for v in scs),
        )
    except (KeyError, TypeError, ValueError) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise StageInputError(f"interface.json {where}: {what}") from None


def _layer(la: dict[str, Any], i: int) -> LayerInfo:
    name = str(la.get("name", f"layer{i}"))
    tap = None
    if la.get("tap"):
        tap_d = dict(la)
        tap_d.update(la["tap"])
        tap = _stream(tap_d, f"layers[{i}] ({name}).tap", tap=True)
    ses, ins = la.get("scale_exps"), la.get("inputs")
    return LayerInfo(name=name, kind=str(la.get("kind", "")), onnx_output=la.get("onnx_output"),
                     fields=int(la.get("fields", 0) or 0), bits=int(la.get("bits", 0) or 0),
                     signed=bool(la.get("signed", True)), scale_exp=la.get("scale_exp"),
                     shape=tuple(la.get("shape") or ()), latency_cycles=la.get("latency_cycles"), ii=la.get("ii"),
                     streamed=bool(la.get("streamed", False)), pot=bool(la.get("pot", False)),
                     sparsity=float(la.get("sparsity", 0.0) or 0.0),
                     scale_exps=None if ses is None else tuple(int(v) for v in ses),
                     inputs=None if ins is None else tuple(ins), skip_fifo=la.get("skip_fifo"), tap=tap)


def interface_from_json(d: dict[str, Any], path: Path | None = None) -> Interface:
    where = f" ({path})" if path is not None else ""
    for key in ("top", "files", "clock", "input", "output"):
        if key not in d:
            raise StageInputError(f"interface.json: missing key '{key}'{where}")
    lat, ii = d.get("latency_cycles"), d.get("ii")
    return Interface(
        top=str(d["top"]), files=tuple(str(f) for f in d["files"]), clock=str(d["clock"]), reset=d.get("reset"),
        reset_active_low=bool(d.get("reset_active_low", False)), io=str(d.get("io", "vector") or "vector"),
        input=_stream(d["input"], "input"), output=_stream(d["output"], "output"),
        latency_cycles=None if lat is None else int(lat), ii=None if ii is None else int(ii),
        timing=d.get("timing"), strategy=str(d.get("strategy", "latency")), reuse=int(d.get("reuse", 1) or 1),
        onnx=d.get("onnx") or None, stream=d.get("stream"),
        layers=tuple(_layer(la, i) for i, la in enumerate(d.get("layers") or [])),
        multiplier=d.get("multiplier"), axis_slice=d.get("axis_slice"), pipeline=d.get("pipeline"),
        flow_control=d.get("flow_control"), host=d.get("host"), input_precision=d.get("input_precision"), path=path)


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
    iface = interface_from_json(d, p)
    for f in iface.sources():
        if not f.exists():
            raise StageInputError(f"interface.json files: {f} not found")
    return iface
