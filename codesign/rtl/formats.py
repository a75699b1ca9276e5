"""Integer code formats and requantizers of the RTL IR.

Every tensor of the IR is a vector of integer codes ``q`` with a power-of-two scale (real = ``q *
2**scale_exp``), described by a :class:`FixedFormat`.

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
        s = "s" if self.signed else "u"
        return f"{s}{self.bits} x 2^{self.scale_exp}" + (" narrow" if self.narrow else "")

    def to_json(self) -> dict:
        return {"bits": self.bits, "signed": self.signed, "scale_exp": self.scale_exp, "narrow": self.narrow}

    @staticmethod
    def from_json(d: dict) -> FixedFormat:
        return FixedFormat(int(d["bits"]), bool(d["signed"]), int(d["scale_exp"]), bool(d.get("narrow", False)))


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
