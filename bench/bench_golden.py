"""Throughput of the golden model vs qonnx execute_onnx (and hls4ml C simulation when it works).

    .venv/bin/python bench/bench_golden.py [--vectors 10000] [--model mlp|conv1d|conv2d] [--no-hls4ml]
    .venv/bin/python bench/bench_golden.py --onnx runs/bench/digits_cnn/export/model.onnx --label digits_cnn

Benchmarks a cleaned QONNX file: an exported zoo model (``--onnx``, what ``python -m bench golden`` does
for digits_mlp and digits_cnn) or a small Brevitas model built here (``--model``). Runs N random on-grid
vectors through each engine, checks they agree exactly and prints vectors/s and the ratios (targets:
golden >= 50x execute_onnx, >= 10x hls4ml C simulation).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def build_mlp(folder: Path, sizes: list[int], seed: int = 0) -> Path:
    import brevitas.nn as qnn
    import onnx
    import torch
    from brevitas.export import export_qonnx
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Int32Bias,
        Uint8ActPerTensorFixedPoint,
    )

    from codesign.graph.clean import clean_qonnx

    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        layers.append(qnn.QuantLinear(a, b, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias,
                                      return_quant_tensor=not last))
        if not last:
            layers.append(qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True))
    net = torch.nn.Sequential(*layers).eval()
    x = torch.randn(1, sizes[0])
    with torch.no_grad():
        net(x)
    raw, clean = folder / "mlp_raw.onnx", folder / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, args=x, export_path=str(raw))
        onnx.save(clean_qonnx(raw, channels_last=None), str(clean))
    return clean


def bench(fn, *args, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=10_000)
    ap.add_argument("--sizes", default="64,32,10", help="MLP layer sizes")
    ap.add_argument("--model", choices=["mlp", "conv2d", "conv1d"], default="mlp",
                    help="mlp (sizes above) or the small Brevitas CNNs of tests/golden_models.py")
    ap.add_argument("--onnx", type=Path, help="cleaned QONNX file to benchmark (instead of --model)")
    ap.add_argument("--label", default=None, help="name printed for --onnx")
    ap.add_argument("--no-hls4ml", action="store_true")
    ap.add_argument("--onnx-vectors", type=int, default=2000, help="vectors for execute_onnx (extrapolated)")
    args = ap.parse_args()
    from codesign.golden import GoldenModel
    from codesign.golden.compare import count_mismatches, qonnx_reference, qonnx_reference_batched

    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as td:
        folder = Path(td)
        if args.onnx is not None:
            path = args.onnx.resolve()
            label = args.label or str(args.onnx)
        elif args.model == "mlp":
            path = build_mlp(folder, sizes)
            label = f"MLP {sizes}"
        else:
            from golden_models import export_pair

            path = export_pair(args.model, folder)[1]
            label = f"{args.model} CNN (tests/golden_models.py, cleaned channels-last)"
        t0 = time.perf_counter()
        gm = GoldenModel(path)
        t_compile = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        x = gm.quantize_input(rng.normal(scale=1.0, size=(args.vectors, *gm.input_spec.shape)))
        t_g, y = bench(gm.run, x)
        g_vps = args.vectors / t_g
        print(f"model {label}, {args.vectors} vectors")
        print(f"golden:       {g_vps:12.0f} vectors/s  ({t_g * 1e3:.1f} ms; compile {t_compile * 1e3:.0f} ms)")
        t_o, ref = bench(qonnx_reference_batched, path, x, repeat=1)
        if ref is not None:
            o_vps = args.vectors / t_o
            print(f"execute_onnx batched (ChangeBatchSize): {o_vps:10.0f} vectors/s  "
                  f"({count_mismatches(y, ref)} mismatches vs golden)")
        else:
            print("execute_onnx batched (ChangeBatchSize): fails on this graph")
            raw = path.with_name(path.stem + "_raw.onnx")
            if raw.exists():  # the raw (channels-first) Brevitas export of the same model batches fine
                graw = GoldenModel(raw)
                xr = x if graw.input_spec.shape == gm.input_spec.shape else np.moveaxis(x, -1, 1)
                t_o, ref = bench(qonnx_reference_batched, raw, xr, repeat=1)
                if ref is not None:
                    o_vps = args.vectors / t_o
                    print(f"execute_onnx batched on the raw export ({raw.name}): {o_vps:10.0f} vectors/s  "
                          f"({count_mismatches(y, ref)} mismatches vs golden)")
        n_o = min(args.onnx_vectors, args.vectors)
        t_s, ref_s = bench(lambda a: qonnx_reference(path, a, batched=False), x[:n_o], repeat=1)
        s_vps = n_o / t_s
        print(f"execute_onnx one vector at a time: {s_vps:10.0f} vectors/s  ({n_o} vectors, "
              f"{count_mismatches(y[:n_o], ref_s)} mismatches)")
        batched = f"{g_vps / o_vps:.1f}x batched, " if ref is not None else ""
        print(f"ratio golden/execute_onnx: {batched}{g_vps / s_vps:.0f}x one at a time")
        if not args.no_hls4ml:
            try:
                t0 = time.perf_counter()
                from codesign.hls import convert

                hm = convert(path, folder / "hls")
                hm.compile()
                t_build = time.perf_counter() - t0
                xf = np.ascontiguousarray(x, dtype=np.float64)
                t_h, yh = bench(hm.predict, xf)
                yh = np.asarray(yh, dtype=np.float64).reshape(len(x), -1)
                h_vps = args.vectors / t_h
                print(f"hls4ml C sim: {h_vps:12.0f} vectors/s  (build {t_build:.0f} s, "
                      f"{count_mismatches(y, yh)} mismatches vs golden)")
                print(f"ratio golden/hls4ml: {g_vps / h_vps:.1f}x")
            except Exception as e:  # noqa: BLE001 - optional comparison
                print(f"hls4ml: skipped ({type(e).__name__}: {str(e)[:200]})")


if __name__ == "__main__":
    main()
