"""Knowledge distillation at low precision: the same student with and without Hinton KD, over seeds.

    python -m bench.kd [--seeds 0 1 2] [--model digits_mlp_pot] [--set key=value ...]

Student: the zoo model at a low precision (default: power-of-two weights with a 2-bit code, i.e.
{0, +-2^e}, and 3-bit activations). Teacher: a float MLP (hidden 128) trained in the same run. Prints
test accuracy per seed and mean +- standard deviation, whichever way it comes out.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from codesign import config, data
from codesign.train import train_model

LOW = {"quant.weight": {"scheme": "pot", "bits": 2}, "quant.act": {"bits": 3}}


def run(model: str, seeds: list[int], extra: dict) -> dict[str, list[float]]:
    torch.set_num_threads(1)
    res: dict[str, list[float]] = {"no KD": [], "KD": []}
    for seed in seeds:
        for label, kd in (("no KD", False), ("KD", True)):
            over = {**LOW, "seed": seed, "train.kd": {"enabled": kd, "temperature": 4.0, "alpha": 0.7,
                                                     "teacher_hidden": [128]}, **extra}
            cfg = config.load(model, over)
            ds = data.load(cfg.data, cfg.seed)
            t0 = time.time()
            _, hist = train_model(cfg, ds, progress=False)
            res[label].append(hist["accuracy_quantized"])
            print(f"seed {seed} {label:6s} accuracy {hist['accuracy_quantized']:.4f} ({time.time() - t0:.0f} s)",
                  flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits_mlp_pot")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    extra = dict(config.parse_override(s) for s in a.set)
    res = run(a.model, a.seeds, extra)
    print(f"\n| {a.model}, po2 2-bit code weights, 3-bit activations | mean | std | per seed |\n|---|---|---|---|")
    for k, v in res.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {k} | {statistics.mean(v):.4f} | {sd:.4f} | {', '.join(f'{x:.4f}' for x in v)} |")


if __name__ == "__main__":
    main()
