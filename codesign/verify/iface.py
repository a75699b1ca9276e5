"""Field packing between integer codes and the simulator's hex lines, for the streams of an
``interface.json`` (the schema and its reader are :mod:`codesign.rtl.interface`, re-exported here).

One vector per beat; field ``i`` of ``tdata`` is bits ``[i*bits +: bits]`` (field 0 in the LSBs), two's
complement when signed.
"""

from __future__ import annotations

import numpy as np

from codesign.rtl.interface import Interface, LayerInfo, Stream, load_interface

__all__ = ["Interface", "LayerInfo", "Stream", "load_interface", "codes_to_bits", "bits_to_hex",
           "pack_hex_lines", "hex_to_codes", "int_to_codes", "codes_to_ints"]


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
