"""The ``golden`` stage and the ``codesign golden`` command."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.golden.compare import compare, on_quantizer_grid, qonnx_reference, reference_context
from codesign.golden.graph import GoldenModel
from codesign.run import atomic_path, atomic_write_json, load_array


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, arr)


def run_batched(gm: GoldenModel, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``gm.run`` in chunks (bounded memory for big test sets)."""
    if len(x) == 0:
        return gm.run(x)
    return np.concatenate([gm.run(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def run_stage(rd, cfg) -> dict[str, Any]:
    model = rd.require("export/model.onnx", "export")
    tx = rd.require("export/test_x.npy", "export")
    ty = rd.require("export/test_y.npy", "export")
    gm = GoldenModel(model)
    x = np.load(tx)
    y = np.load(ty)
    t0 = time.perf_counter()
    out = run_batched(gm, x)
    seconds = time.perf_counter() - t0
    d = rd.stage_dir("golden")
    _save_npy(d / "test_out.npy", out)
    rd.add(d / "test_out.npy", "golden")
    pred = np.argmax(out.reshape(len(out), -1), axis=1) if len(out) else np.zeros(0)
    acc = float(np.mean(pred == y)) if len(y) else 0.0
    # one run of the reference: its outputs, plus every tensor where a float tail needs the quantizer grids
    ctx = None if on_quantizer_grid(gm) else reference_context(model, x)
    ref = qonnx_reference(model, x) if ctx is None else np.asarray(ctx[gm.output_names[0]], dtype=np.float64)
    figures = {
        "accuracy": acc,
        **compare(gm, x, out, ref, ctx),
        "vectors": int(len(x)),
        "vectors_per_s": float(len(x) / seconds) if seconds > 0 else None,
    }
    rd.record("golden", figures)
    return figures


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _scale_entry(scale) -> dict:
    """``{"scale_exp": e}`` for a power-of-two scale, ``{"scale": s}`` for a float one (JSON-ready)."""
    if scale is None:
        return {}
    if isinstance(scale, int) or (isinstance(scale, np.ndarray) and scale.dtype.kind in "iu"):
        return {"scale_exp": scale if isinstance(scale, int) else np.asarray(scale).tolist()}
    return {"scale": float(scale) if np.ndim(scale) == 0 else np.asarray(scale).tolist()}


def golden_cli(model: Path, inputs: Path, out: Path, codes: bool = False, trace_dir: Path | None = None,
               input_precision: str | None = None) -> dict:
    """``codesign golden MODEL.onnx --inputs X.npy --out Y.npy [--codes] [--trace DIR] [--input-precision P]``.

    X holds the graph's inputs: real values on the input grid (off-grid values are an error, never
    rounded; ``GoldenModel.quantize_input`` snaps floats), or any floats where host pre-processing
    quantizes them. Y gets ``GoldenModel.run``'s output, or with ``--codes`` the integer codes of the core
    output (int64; real = codes * 2**output_scale_exp, or codes * output_scale for a float scale).
    ``--input-precision`` gives the grid of an input that no quantizer defines (``ap_fixed<16,6>``).
    ``--trace DIR`` writes every integer tensor's codes as ``DIR/<tensor>.npy`` plus ``DIR/index.json``
    (``{tensor: {"file", "scale_exp" or "scale", "shape"}}``). Returns a summary dict.
    """
    gm = GoldenModel(model, input_precision=input_precision)
    if not Path(inputs).exists():
        raise CodesignError(f"inputs file {inputs} not found")
    x = load_array(inputs, "--inputs")
    scale = gm._scale_of(gm.core_output)
    if codes:
        xc = gm.preprocess(x) if gm.input_spec.host_pre else gm.codes_from_real(x)
        y, scale = gm.run_codes(xc)
        _save_npy(Path(out), np.asarray(y))
    else:
        _save_npy(Path(out), gm.run(x))
    summary: dict[str, Any] = {"vectors": int(len(x)), "output": gm.output_names[0], "out": str(out)}
    if gm.core_output != gm.output_names[0]:
        summary["core_output"] = gm.core_output
    summary.update({f"output_{k}": v for k, v in _scale_entry(scale).items()})
    if trace_dir is not None:
        td = Path(trace_dir)
        td.mkdir(parents=True, exist_ok=True)
        index = {}
        for name, (c, ex) in gm.trace(x).items():
            f = _safe(name) + ".npy"
            _save_npy(td / f, np.asarray(c))
            index[name] = {"file": f, **_scale_entry(ex), "shape": list(np.shape(c))}
        atomic_write_json(td / "index.json", index)
        summary["trace"] = str(td)
        summary["tensors"] = len(index)
    return summary
