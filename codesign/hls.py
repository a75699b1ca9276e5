"""Vendor hand-off: the hls4ml Vitis HLS project for the same QONNX model, checked by C simulation.

``codesign hls RUN_DIR`` converts ``export/model.onnx`` (cleaned, channels-last) with hls4ml's Vitis
backend, writes the HLS C++ project (with hls4ml's ``build_prj.tcl``) into ``hls/``, compiles its
C simulation with g++ (no vendor tool needed), and compares ``predict`` with the golden model on the
test set and on random on-grid vectors: the check is exact (0 mismatches), since every quantized
tensor of the model maps to an exact ``ap_fixed`` type.

Users with Vitis HLS then run ``vitis_hls -f build_prj.tcl`` inside ``hls/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from codesign.config import Config
from codesign.errors import CodesignError


def _load_for_hls4ml(onnx_path: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    m = ModelWrapper(str(onnx_path))
    for n in m.graph.node:  # hls4ml accepts upper-case rounding modes only
        for a in n.attribute:
            if a.name == "rounding_mode":
                a.s = a.s.upper()
    return m


def convert(onnx_path: str | Path, out_dir: str | Path, io_type: str = "io_parallel", reuse: int = 1,
            strategy: str = "Latency", part: str = "xc7z020clg400-1", clock_period_ns: float = 5.0):
    """hls4ml ModelGraph (Vitis backend) for a QONNX file; written to ``out_dir``, not yet compiled."""
    import hls4ml

    m = _load_for_hls4ml(Path(onnx_path))
    cfg = hls4ml.utils.config.config_from_onnx_model(m, granularity="name", backend="Vitis",
                                                     default_precision="fixed<32,16>")
    cfg["Model"]["ReuseFactor"] = reuse
    cfg["Model"]["Strategy"] = strategy
    try:
        return hls4ml.converters.convert_from_onnx_model(
            m, output_dir=str(out_dir), io_type=io_type, backend="Vitis", hls_config=cfg, part=part,
            clock_period=clock_period_ns)
    except Exception as e:  # hls4ml raises plain exceptions for unsupported layers
        raise CodesignError(f"hls4ml could not convert {onnx_path}: {type(e).__name__}: {e}") from None


def check_against_golden(hls_model, onnx_path: str | Path, x_real: np.ndarray) -> dict[str, Any]:
    """Compile the C simulation and compare ``predict`` with the golden model on ``x_real``."""
    from codesign.golden import GoldenModel

    g = GoldenModel(onnx_path)
    t0 = time.time()
    hls_model.compile()
    t_compile = time.time() - t0
    t0 = time.time()
    got = np.asarray(hls_model.predict(np.ascontiguousarray(x_real, dtype=np.float64)), dtype=np.float64)
    t_pred = time.time() - t0
    exp = g.run(x_real)
    got = got.reshape(exp.shape)
    bad = np.nonzero((got != exp).reshape(len(exp), -1).any(axis=1))[0]
    return {"vectors": int(len(x_real)), "mismatches": int(len(bad)), "compile_seconds": round(t_compile, 2),
            "predict_vectors_per_s": round(len(x_real) / max(t_pred, 1e-9), 1),
            "first_mismatches": [{"index": int(i), "expected": exp[i].tolist(), "got": got[i].tolist()}
                                 for i in bad[:3]]}


def run_stage(rd, cfg: Config, random_vectors: int = 10_000) -> dict[str, Any]:
    """Write ``hls/`` (the hls4ml Vitis project) and check its C simulation against the golden model."""
    from codesign.golden import GoldenModel

    onnx_path = rd.require("export/model.onnx", "export")
    test_x = np.load(rd.require("export/test_x.npy", "export"))
    g = GoldenModel(onnx_path)
    rng = np.random.default_rng(cfg.verify.seed)
    spec = g.input_spec
    lo = -(1 << (spec.bits - 1)) + (1 if spec.narrow else 0) if spec.signed else 0
    hi = (1 << (spec.bits - 1)) - 1 if spec.signed else (1 << spec.bits) - 1
    rand = rng.integers(lo, hi + 1, size=(random_vectors, *test_x.shape[1:])) * 2.0 ** spec.scale_exp
    x = np.concatenate([test_x, rand])
    out = rd.stage_dir("hls")
    strategy = "Resource" if cfg.rtl.strategy == "resource" else "Latency"
    hm = convert(onnx_path, out, reuse=cfg.rtl.reuse, strategy=strategy)
    hm.write()
    res = check_against_golden(hm, onnx_path, x)
    figures = {"backend": "Vitis", "io_type": "io_parallel", "strategy": strategy, "reuse": cfg.rtl.reuse,
               "project": "hls/build_prj.tcl", **res}
    rd.add_tree(out, "hls")
    rd.record("hls", {k: v for k, v in figures.items() if k != "first_mismatches"})
    if res["mismatches"]:
        from codesign.errors import VerificationError

        raise VerificationError(f"hls4ml C simulation differs from the golden model on {res['mismatches']} of "
                                f"{res['vectors']} vectors, first: {res['first_mismatches'][0]}")
    return figures
