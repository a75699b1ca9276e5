"""Knowledge distillation at low precision: the same student without KD, with Hinton KD, and with Hinton KD
plus a feature loss (FitNets hint, PKT, correlation congruence), over seeds.

    python -m bench.kd [--seeds 0 1 2] [--model digits_mlp_pot] [--variants ...] [--set key=value ...] [--no-doc]

Student: the zoo model at a low precision (default: power-of-two weights with a 2-bit code, i.e.
{0, +-2^e}, and 3-bit activations). Teacher: a float MLP (hidden 128) trained in the same run (the same
teacher for every variant of a seed: same seed, same data split). Prints test accuracy per seed and
mean +- standard deviation, whichever way it comes out, and rewrites its section of docs/benchmarks.md
(``<!-- bench:kd -->``) unless ``--no-doc``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

from bench.common import machine, write_section
from codesign import config, data
from codesign.train import train_model

LOW = {"quant.weight": {"scheme": "pot", "bits": 2}, "quant.act": {"bits": 3}}
KD = {"enabled": True, "temperature": 4.0, "alpha": 0.7, "teacher_hidden": [128]}
VARIANTS = {
    "no KD": None,
    "KD (Hinton)": {},
    "KD + FitNets hint": {"feature": True, "feature_loss": "hint"},
    "KD + PKT": {"feature": True, "feature_loss": "pkt"},
    "KD + CC": {"feature": True, "feature_loss": "cc"},
    "KD, 3 teachers averaged": {"teacher_hidden": [[128], [96], [64]]},
}


def run(model: str, seeds: list[int], extra: dict, variants: list[str]) -> dict[str, list[float]]:
    torch.set_num_threads(1)
    res: dict[str, list[float]] = {v: [] for v in variants}
    for seed in seeds:
        for label in variants:
            kd = VARIANTS[label]
            over = {**LOW, "seed": seed, **extra}
            if kd is not None:
                over["train.kd"] = {**KD, **kd}
            cfg = config.load(model, over)
            ds = data.load(cfg.data, cfg.seed)
            t0 = time.time()
            _, hist = train_model(cfg, ds, progress=False)
            res[label].append(hist["accuracy_quantized"])
            print(f"seed {seed} {label:18s} accuracy {hist['accuracy_quantized']:.4f} ({time.time() - t0:.0f} s)",
                  flush=True)
    return res


def render(model: str, seeds: list[int], res: dict[str, list[float]], command: str) -> str:
    base = statistics.mean(res["no KD"]) if "no KD" in res else None
    lines = [f"| {model}, po2 2-bit code weights, 3-bit activations | mean | std | mean - no KD (points) | "
             "per seed |", "|---|---|---|---|---|"]
    verdicts = []
    for k, v in res.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        d = 100 * (statistics.mean(v) - base) if base is not None else None
        lines.append(f"| {k} | {statistics.mean(v):.4f} | {sd:.4f} | {'' if d is None else f'{d:+.2f}'} | "
                     f"{', '.join(f'{x:.4f}' for x in v)} |")
        if d is not None and k != "no KD":
            wins = sum(a > b for a, b in zip(v, res["no KD"], strict=True))
            sd0 = statistics.stdev(res["no KD"]) if len(v) > 1 else 0.0
            noise = max(sd, sd0)
            word = ("within the seed-to-seed spread: no reliable gain" if abs(d) <= 100 * noise else
                    "a gain beyond the spread" if d > 0 else "a loss beyond the spread")
            verdicts.append(f"{k}: {d:+.2f} points, better than no KD on {wins} of {len(v)} seeds ({word}).")
    head = (f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}). Student: "
            f"`{model}` at a lower precision (power-of-two weights with a 2-bit code, i.e. {{0, ±2^e}}; 3-bit "
            "activations); teacher: a float 64-128-10 MLP trained in the same run (3 teachers: 64-128-10, 64-96-10 and "
            "64-64-10, their softened outputs averaged); Hinton KD with T = 4, "
            "alpha = 0.7; feature losses on the penultimate features with weight 1 (`codesign/distill.py`). "
            f"Seeds {', '.join(map(str, seeds))}; each seed also changes the data split.")
    return head + "\n\n" + "\n".join(lines) + "\n\n" + " ".join(verdicts) + (
        "\n\nThe verdicts are computed from the table: a mean difference within the larger of the two standard "
        "deviations counts as no reliable gain.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits_mlp_pot")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    a = ap.parse_args()
    extra = dict(config.parse_override(s) for s in a.set)
    res = run(a.model, a.seeds, extra, a.variants)
    text = render(a.model, a.seeds, res, "python -m bench.kd " + " ".join(shlex.quote(x) for x in sys.argv[1:]))
    print("\n" + text)
    if not a.no_doc:
        write_section("kd", text)


if __name__ == "__main__":
    main()
