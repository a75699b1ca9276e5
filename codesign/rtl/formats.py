"""Integer code formats and requantizers of the RTL IR.

Every tensor of the IR is a vector of integer codes ``q`` with a power-of-two scale (real = ``q *
2**scale_exp``), described by a :class:`FixedFormat`; codes with a float (non-power-of-two) scale carry it
in ``scale`` (real = ``q * scale``; the scale never enters the integer arithmetic: the epilogue that reads
such codes is a :class:`Thresholds` computed with it). A ``bipolar`` field is one stored bit ``b`` for the
value ``2b - 1`` (QONNX ``BipolarQuant``, FINN ``BIPOLAR``).

Requantization (:class:`Requant`) of an accumulator ``a``: ``r = round(a / 2**shift)`` with the rounding
mode (a negative shift is an exact left shift), then ``max(r, 0)`` if ``relu``, then saturation to the
output format's range ``[out.lo, out.hi]`` (``narrow`` drops the most negative code).
Rounding modes (QONNX names): ``ROUND`` (= ``HALF_EVEN``), ``FLOOR``, ``CEIL``, ``ROUND_TO_ZERO``
(= ``DOWN``), ``UP`` (away from zero), ``HALF_UP`` (half away from zero), ``HALF_DOWN`` (half toward
zero). All integer: :func:`shift_round` is the exact reference the hardware implements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUNDING_MODES = ("ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO", "UP", "HALF_UP", "HALF_DOWN")
_ALIASES = {"HALF_EVEN": "ROUND", "DOWN": "ROUND_TO_ZERO"}


def normalize_rounding(mode: str) -> str:
    m = mode.upper()
    m = _ALIASES.get(m, m)
    if m not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}")
    return m


def bits_for(lo: int, hi: int) -> int:
    """Width of the smallest two's-complement signed type holding ``[lo, hi]`` (at least 1)."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


@dataclass(frozen=True)
class FixedFormat:
    """Integer code format: ``bits`` wide, two's complement if ``signed``; real = q * 2**scale_exp."""

    bits: int
    signed: bool
    scale_exp: int
    narrow: bool = False
    bipolar: bool = False  # one stored bit b for the value 2b - 1 (bits 1, unsigned)
    scale: float | None = None  # a float (non-power-of-two) scale of the codes, per tensor

    @property
    def lo(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def hi(self) -> int:
        if self.signed:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - 1 - (1 if self.narrow else 0)

    def describe(self) -> str:
        if self.bipolar:
            return "bipolar (b -> 2b-1)" + ("" if self.scale is None else f" x {self.scale:.6g}")
        s = "s" if self.signed else "u"
        sc = f"2^{self.scale_exp}" if self.scale is None else f"{self.scale:.6g}"
        return f"{s}{self.bits} x {sc}" + (" narrow" if self.narrow else "")

    def value(self, code):
        """The integer value a stored code stands for (bipolar: 2b - 1)."""
        return 2 * code - 1 if self.bipolar else code

    def to_json(self) -> dict:
        d = {"bits": self.bits, "signed": self.signed, "scale_exp": self.scale_exp, "narrow": self.narrow}
        if self.bipolar:
            d["bipolar"] = True
        if self.scale is not None:
            d["scale"] = self.scale
        return d

    @staticmethod
    def from_json(d: dict) -> FixedFormat:
        return FixedFormat(int(d["bits"]), bool(d["signed"]), int(d["scale_exp"]), bool(d.get("narrow", False)),
                           bool(d.get("bipolar", False)), d.get("scale"))


def shift_round(a: np.ndarray | int, shift: int, mode: str) -> np.ndarray:
    """Exact integer ``round(a / 2**shift)`` in the given rounding mode (object/int64 arrays)."""
    a = np.asarray(a, dtype=object) if np.asarray(a).dtype == object else np.asarray(a, dtype=np.int64)
    mode = normalize_rounding(mode)
    if shift <= 0:
        return a * (1 << (-shift))
    one = 1 << shift
    half = 1 << (shift - 1)
    fl = a >> shift  # floor (arithmetic)
    rem = a - fl * one  # 0 <= rem < 2^shift
    neg = a < 0
    if mode == "FLOOR":
        up = np.zeros_like(rem, dtype=bool)
    elif mode == "CEIL":
        up = rem != 0
    elif mode == "ROUND_TO_ZERO":
        up = neg & (rem != 0)
    elif mode == "UP":
        up = (~neg) & (rem != 0)
    elif mode == "ROUND":
        up = (rem > half) | ((rem == half) & ((fl & 1) == 1))
    elif mode == "HALF_UP":  # half away from zero
        up = (rem > half) | ((rem == half) & ~neg)
    else:  # HALF_DOWN: half toward zero
        up = (rem > half) | ((rem == half) & neg)
    return fl + up.astype(fl.dtype)


@dataclass(frozen=True)
class Requant:
    """``out = sat(relu?(round(acc / 2**shift)))``; ``shift < 0`` is an exact left shift."""

    shift: int
    rounding: str
    relu: bool
    out: FixedFormat

    @property
    def lo(self) -> int:
        return max(self.out.lo, 0) if self.relu else self.out.lo

    @property
    def hi(self) -> int:
        return self.out.hi

    @property
    def relu_only(self) -> bool:
        """A bare Relu on the accumulator (no Quant yet): exact, unsigned, same scale."""
        return self.relu and self.shift == 0 and self.rounding == "FLOOR" and not self.out.narrow and \
            self.out.signed is False

    def apply(self, acc: np.ndarray) -> np.ndarray:
        r = shift_round(acc, self.shift, self.rounding)
        return np.clip(r, self.lo, self.hi)

    def bounds(self, lo: int, hi: int) -> tuple[int, int]:
        """Output range for accumulator inputs in ``[lo, hi]`` (rounding is monotonic)."""
        rl, rh = (int(v) for v in shift_round(np.array([lo, hi], dtype=object), self.shift, self.rounding))
        return min(max(rl, self.lo), self.hi), min(max(rh, self.lo), self.hi)

    def describe(self) -> str:
        return f"requant shift {self.shift} {self.rounding}{' relu' if self.relu else ''}"

    def to_json(self) -> dict:
        return {"type": "shift", "shift": self.shift, "rounding": self.rounding, "relu": self.relu,
                "out": self.out.to_json()}

    @staticmethod
    def from_json(d: dict) -> Requant:
        return Requant(int(d["shift"]), d["rounding"], bool(d["relu"]), FixedFormat.from_json(d["out"]))


class _ExactEpilogue:
    """What :class:`Thresholds` and :class:`MulShift` share as requantizers: their codes span the output
    format, and a relu is already part of the function (never a bare relu)."""

    out: FixedFormat

    @property
    def lo(self) -> int:
        return self.out.lo

    @property
    def hi(self) -> int:
        return self.out.hi

    @property
    def relu_only(self) -> bool:
        return False


@dataclass(frozen=True, eq=False)
class Thresholds(_ExactEpilogue):
    """A per-channel monotone step function of the accumulator, exact by construction:
    ``code = base[c] + dir[c] * #{k : acc >= t[c][k]}`` for output channel ``c`` (``t[c]`` ascending,
    repeated where one accumulator step crosses several output codes; ``dir`` +1 increasing, -1
    decreasing). It replaces whatever float arithmetic stood between the accumulator and the next
    quantizer (float scales, bias, BatchNorm, relu, the quantizer's rounding and clipping): the
    thresholds were found by evaluating that function as the reference does and checked against it
    (``proof``: how, and on how many accumulator values)."""

    t: tuple[tuple[int, ...], ...]
    base: tuple[int, ...]
    dir: tuple[int, ...]
    out: FixedFormat
    proof: dict | None = None
    relu: bool = False  # the requantizer interface (a relu is part of the function already)

    @property
    def levels(self) -> int:
        return max((len(x) for x in self.t), default=0)

    def apply(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Codes of a batch of accumulators ``acc`` (N, fields); ``channels``: the channel of each field."""
        acc = np.asarray(acc)
        out = np.empty(acc.shape, dtype=np.int64)
        for j, c in enumerate(np.asarray(channels)):
            tc = np.asarray(self.t[c], dtype=acc.dtype if acc.dtype != object else np.int64)
            cnt = np.searchsorted(tc, acc[:, j].astype(np.int64), side="right") if tc.size else 0
            out[:, j] = self.base[c] + self.dir[c] * cnt
        return out

    def field(self, c: int, lo: int, hi: int) -> tuple[int, list[int]]:
        """The step function of one output field whose accumulator stays in ``[lo, hi]``: (code at ``lo``,
        the thresholds inside ``(lo, hi]``)."""
        t = self.t[c]
        below = sum(1 for x in t if x <= lo)
        return self.base[c] + self.dir[c] * below, [x for x in t if lo < x <= hi]

    def bounds(self, lo: int, hi: int) -> tuple[int, int]:
        return self.out.lo, self.out.hi

    def describe(self) -> str:
        n = sum(len(x) for x in self.t)
        dec = sum(1 for d in self.dir if d < 0)
        how = f", {self.proof['method']}" if self.proof else ""
        return f"thresholds ({n} over {len(self.t)} channels{f', {dec} decreasing' if dec else ''}{how})"

    def to_json(self) -> dict:
        return {"type": "thresholds", "t": [list(x) for x in self.t], "base": list(self.base), "dir": list(self.dir),
                "out": self.out.to_json(), "proof": self.proof}

    @staticmethod
    def from_json(d: dict) -> Thresholds:
        return Thresholds(tuple(tuple(int(v) for v in x) for x in d["t"]), tuple(d["base"]), tuple(d["dir"]),
                          FixedFormat.from_json(d["out"]), d.get("proof"))


@dataclass(frozen=True, eq=False)
class MulShift(_ExactEpilogue):
    """The same step function as a :class:`Thresholds`, as fixed-point arithmetic:
    ``code = clip((acc * m[c] + b[c]) >> shift, clip[c])`` (floor), ``m``, ``b`` and ``shift`` chosen so
    that this equals the thresholds on the whole accumulator range of every field (``proof``); ``clip[c]``
    is the channel's lowest and highest code. Cheaper than thresholds when an output has many levels."""

    m: tuple[int, ...]
    b: tuple[int, ...]
    shift: int
    out: FixedFormat
    proof: dict | None = None
    relu: bool = False
    clip: tuple[tuple[int, int], ...] = ()

    def apply(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc).astype(object)
        ch = np.asarray(channels)
        m = np.array([self.m[c] for c in ch], dtype=object)[None, :]
        b = np.array([self.b[c] for c in ch], dtype=object)[None, :]
        lo = np.array([self.clip[c][0] for c in ch], dtype=object)[None, :]
        hi = np.array([self.clip[c][1] for c in ch], dtype=object)[None, :]
        return np.minimum(np.maximum((acc * m + b) >> self.shift, lo), hi).astype(np.int64)

    def bounds(self, lo: int, hi: int) -> tuple[int, int]:
        return self.out.lo, self.out.hi

    def describe(self) -> str:
        how = f", {self.proof['method']}" if self.proof else ""
        return f"multiply-shift (x m + b) >> {self.shift}, m {min(self.m)}..{max(self.m)}{how}"

    def to_json(self) -> dict:
        return {"type": "mulshift", "m": list(self.m), "b": list(self.b), "shift": self.shift,
                "out": self.out.to_json(), "clip": [list(c) for c in self.clip], "proof": self.proof}

    @staticmethod
    def from_json(d: dict) -> MulShift:
        return MulShift(tuple(int(v) for v in d["m"]), tuple(int(v) for v in d["b"]), int(d["shift"]),
                        FixedFormat.from_json(d["out"]), d.get("proof"), clip=tuple(tuple(c) for c in d["clip"]))


def requant_from_json(d: dict) -> Requant | Thresholds | MulShift:
    if d.get("type") == "thresholds":
        return Thresholds.from_json(d)
    if d.get("type") == "mulshift":
        return MulShift.from_json(d)
    return Requant.from_json(d)
