"""Where expected outputs come from: the golden model, or any callable (pluggable).

``make_reference(source, iface)`` accepts
  - a path to an ONNX model: ``codesign.golden.GoldenModel(path)`` is the reference;
  - an object with ``run_codes(x_codes) -> (codes, scale_exp)`` (a ``GoldenModel``, or a stand-in);
  - a callable ``codes -> codes`` (``(N, *in_shape)`` int64 -> ``(N, ...)`` int64);
  - a :class:`Reference` (returned as is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import StageInputError
from codesign.verify.iface import Interface

Codes = np.ndarray
REF_CHUNK_FIELDS = 1 << 19  # input fields per golden-model call (bounded memory on big inputs)
TraceFn = Callable[[np.ndarray], dict[str, Any]]


def _get(spec: Any, key: str, default: Any = None) -> Any:
    if spec is None:
        return default
    if isinstance(spec, dict):
        return spec.get(key, default)
    return getattr(spec, key, default)


def scalar_exp(se: Any) -> Any:
    """A scale exponent as an int; a per-channel exponent that is not uniform stays a list."""
    if se is None:
        return None
    a = np.asarray(se)
    if a.size == 1 or (a.size and (a == a.flat[0]).all()):
        return int(a.flat[0])
    return a.tolist()


@dataclass
class Reference:
    """Expected outputs for integer input codes.

    ``run_codes(x)`` returns the output codes (and optionally their scale exponent as a tuple);
    ``trace_codes(x)`` (optional) returns ``{onnx tensor name: codes or (codes, scale_exp)}`` for
    localizing a mismatch to a layer. ``input_spec`` (optional): bits / signed / scale_exp / shape,
    and ``min``/``max`` codes when the input quantizer is narrower than its bit width."""

    run_codes: Callable[[np.ndarray], Any]
    trace_codes: TraceFn | None = None
    input_spec: Any = None
    name: str = "callable"
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None  # float graph input -> input codes (host)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, int | None]:
        r = self.run_codes(x)
        if isinstance(r, tuple):
            codes, se = r
            return np.asarray(codes), scalar_exp(se)
        return np.asarray(r), None

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray] | None:
        if self.trace_codes is None:
            return None
        out = {}
        for k, v in self.trace_codes(x).items():
            out[k] = np.asarray(v[0] if isinstance(v, tuple) else v)
        return out


def _from_golden(g: Any, name: str, iface: Interface) -> Reference:
    """A reference from a golden model (or a stand-in with ``run_codes``). The RTL's ports carry stored
    field values: a bipolar field is the bit ``b`` of the code ``2b - 1``; the golden model works on codes.
    Float-scale outputs report no scale exponent (interface.json gives their float scales)."""
    in_se = iface.input.scale_exp
    spec = getattr(g, "input_spec", None)
    if in_se is None:
        in_se = _get(spec, "scale_exp")
    fin, fout = iface.input, iface.output

    def run_codes(x: np.ndarray) -> tuple[np.ndarray, Any]:
        x = fin.from_bits_codes(x)
        # in chunks: a conv net's intermediates (im2col) are hundreds of times its input (CNV: 10,000
        # vectors at once need far more than 23 GiB)
        n = max(1, min(8192, REF_CHUNK_FIELDS // max(1, int(np.prod(np.shape(x)[1:])))))
        parts = [g.run_codes(x[i:i + n]) for i in range(0, len(x), n)] if len(x) > n else [g.run_codes(x)]
        se = parts[0][1] if isinstance(parts[0], tuple) else None
        codes = np.concatenate([np.asarray(p[0] if isinstance(p, tuple) else p) for p in parts])
        if se is not None and np.asarray(se).dtype.kind == "f" and not np.all(np.asarray(se) == np.round(se)):
            se = None  # a float scale: not an exponent
        return fout.to_bits_codes(np.asarray(codes)), se

    def trace(x: np.ndarray) -> dict[str, Any]:
        if hasattr(g, "trace_codes"):
            return g.trace_codes(fin.from_bits_codes(x))
        real = np.asarray(x, dtype=np.float64) * 2.0 ** int(in_se)
        return g.trace(real)

    has_trace = hasattr(g, "trace_codes") or (hasattr(g, "trace") and in_se is not None)
    pre = None
    if _get(spec, "host_pre") and hasattr(g, "preprocess"):
        def pre(x: np.ndarray) -> np.ndarray:
            return fin.to_bits_codes(np.asarray(g.preprocess(x)))
    return Reference(run_codes=run_codes, trace_codes=trace if has_trace else None, input_spec=spec, name=name,
                     preprocess=pre)


def make_reference(source: Any, iface: Interface) -> Reference:
    if isinstance(source, Reference):
        return source
    if source is None:
        onnx = iface.onnx
        if not onnx:
            raise StageInputError("verify needs a reference: an ONNX model path, a GoldenModel or a callable")
        source = (iface.folder / onnx).resolve()
    if isinstance(source, str | Path):
        p = Path(source)
        if not p.exists():
            raise StageInputError(f"ONNX model {p} not found: run `codesign export` first")
        try:
            from codesign.golden import GoldenModel  # type: ignore[attr-defined]
        except ImportError as e:
            raise StageInputError(f"codesign.golden.GoldenModel is not available ({e})") from None
        return _from_golden(GoldenModel(str(p), input_precision=iface.input_precision), f"GoldenModel({p.name})", iface)
    if hasattr(source, "run_codes"):
        return _from_golden(source, type(source).__name__, iface)
    if callable(source):
        return Reference(run_codes=source, name=getattr(source, "__name__", "callable"))
    raise StageInputError(f"verify: cannot use {type(source).__name__} as a reference")
