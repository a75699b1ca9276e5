"""Input vectors: the model's test set, corner vectors and seeded uniform random codes."""

from __future__ import annotations

from typing import Any

import numpy as np

from codesign.errors import StageInputError
from codesign.verify.iface import Stream

KINDS = ("corner", "test", "random")


def code_range(s: Stream, spec: Any = None) -> tuple[int, int]:
    """Codes on the input quantizer's grid: the interface's full range, narrowed by the golden model's
    ``input_spec`` when it says so (``code_min``/``code_max``, ``min``/``max`` or ``narrow``)."""
    lo, hi = s.code_min, s.code_max

    def g(k: str) -> Any:
        return spec.get(k) if isinstance(spec, dict) else getattr(spec, k, None)

    if spec is not None:
        for kmin, kmax in (("code_min", "code_max"), ("min", "max")):
            if g(kmin) is not None and g(kmax) is not None:
                lo, hi = max(lo, int(g(kmin))), min(hi, int(g(kmax)))
                return lo, hi
        if g("narrow") and s.signed:
            lo = lo + 1
    return lo, hi


def corner_vectors(s: Stream, lo: int, hi: int, max_onehot: int = 256) -> np.ndarray:
    f = s.fields
    rows = [np.zeros(f), np.full(f, lo), np.full(f, hi)]
    alt = np.where(np.arange(f) % 2 == 0, lo, hi)
    rows += [alt, np.where(np.arange(f) % 2 == 0, hi, lo)]
    if lo < 0:
        rows.append(np.full(f, -1))
    rows.append(np.full(f, min(1, hi)))
    for v in sorted({hi, lo} - {0}):
        for i in range(min(f, max_onehot)):
            r = np.zeros(f)
            r[i] = v
            rows.append(r)
    return np.unique(np.array(rows, dtype=np.int64), axis=0)


def test_codes(test_x: np.ndarray, s: Stream) -> tuple[np.ndarray, str]:
    """Real test inputs (on the quantizer grid) -> (N, fields) codes, in the interface's layout."""
    x = np.asarray(test_x)
    note = "as given"
    if x.ndim >= 2 and tuple(x.shape[1:]) != s.shape:
        # NCHW / NCL (PyTorch) -> channels-last (the cleaned ONNX layout)
        moved = np.moveaxis(x, 1, -1)
        if tuple(moved.shape[1:]) == s.shape and x.ndim >= 3:
            x, note = moved, "channels-first -> channels-last"
        elif int(np.prod(x.shape[1:])) != s.fields:
            raise StageInputError(f"test_x has shape {list(x.shape)}, "
                                  f"the RTL input has {s.fields} fields {list(s.shape)}")
    if np.issubdtype(x.dtype, np.integer):
        codes = x.astype(np.int64)
    else:
        if s.scale_exp is None:
            raise StageInputError("interface.json input.scale_exp is needed to turn test_x into codes")
        q = x.astype(np.float64) / 2.0 ** s.scale_exp
        codes = np.rint(q)
        bad = np.abs(q - codes) > 1e-9
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise StageInputError(f"test_x[{i}] is not on the input grid 2^{s.scale_exp} (export should quantize it)")
        codes = codes.astype(np.int64)
    codes = codes.reshape(len(codes), s.fields)
    if codes.size and (codes.min() < s.code_min or codes.max() > s.code_max):
        raise StageInputError(f"test_x codes span [{codes.min()}, {codes.max()}], outside the "
                              f"{s.bits}-bit input [{s.code_min}, {s.code_max}]")
    return codes, note


def make_stimulus(s: Stream, n_random: int, test_x: np.ndarray | None, seed: int, *, corners: bool = True,
                  spec: Any = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Returns (codes (N, fields) int64, kind index per vector (N,) into KINDS, info)."""
    lo, hi = code_range(s, spec)
    parts, kinds = [], []
    info: dict[str, Any] = {"code_range": [lo, hi], "seed": seed}
    if corners:
        c = corner_vectors(s, lo, hi)
        parts.append(c)
        kinds.append(np.full(len(c), 0))
    if test_x is not None and len(test_x):
        t, note = test_codes(test_x, s)
        parts.append(t)
        kinds.append(np.full(len(t), 1))
        info["test_x_layout"] = note
    if n_random > 0:
        r = np.random.default_rng(seed).integers(lo, hi + 1, size=(n_random, s.fields), dtype=np.int64)
        parts.append(r)
        kinds.append(np.full(n_random, 2))
    if not parts:
        return np.zeros((0, s.fields), np.int64), np.zeros(0, np.int64), info
    return np.concatenate(parts), np.concatenate(kinds).astype(np.int64), info
