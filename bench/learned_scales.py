"""Learned activation scales against scales that follow the statistics, at low precision, over seeds.

    python -m bench.learned_scales [--seeds 0 1 2] [--model digits_mlp_pot] [--bits 3] [--no-doc]

For each activation scale kind (``quant.act.scale``: ``po2``, the power-of-two scale the RTL needs, and
``float``) the same student is trained twice: ``learned: false`` (the scale follows the running maximum of
the activations, Brevitas ``STATS``: plain fixed-range QAT) and ``learned: true`` (after 50 steps of
statistics the scale becomes a parameter trained by backpropagation, Brevitas ``PARAMETER_FROM_STATS``: a
log2 parameter with straight-through rounding for po2, i.e. LSQ with a power-of-two step; a learned clipping
range for float, as PACT). Weights: power-of-two with a 2-bit code. Prints test accuracy per seed, the mean
difference and a verdict computed from the spread, and rewrites its section of docs/benchmarks.md
(``<!-- bench:learned_scales -->``) unless ``--no-doc``.
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


def run(model: str, seeds: list[int], bits: int) -> dict[tuple[str, bool], list[float]]:
    torch.set_num_threads(1)
    res: dict[tuple[str, bool], list[float]] = {}
    for seed in seeds:
        for scale in ("po2", "float"):
            for learned in (False, True):
                over = {"seed": seed, "quant.weight": {"scheme": "pot", "bits": 2},
                        "quant.act": {"bits": bits, "scale": scale, "learned": learned}}
                cfg = config.load(model, over)
                ds = data.load(cfg.data, cfg.seed)
                t0 = time.time()
                _, hist = train_model(cfg, ds, progress=False)
                res.setdefault((scale, learned), []).append(hist["accuracy_quantized"])
                print(f"seed {seed} scale {scale:5s} learned {learned!s:5s} accuracy "
                      f"{hist['accuracy_quantized']:.4f} ({time.time() - t0:.0f} s)", flush=True)
    return res


def render(model: str, seeds: list[int], bits: int, res: dict[tuple[str, bool], list[float]], command: str) -> str:
    lines = [f"| {model}, po2 2-bit code weights, {bits}-bit activations | scale | mean | std | per seed |",
             "|---|---|---|---|---|"]
    verdicts = []
    for scale in ("po2", "float"):
        for learned in (False, True):
            v = res[(scale, learned)]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            what = "learned (LSQ-style, po2 step)" if learned and scale == "po2" else (
                "learned clipping (PACT-style)" if learned else "running statistics, not learned")
            lines.append(f"| {what} | {scale} | {statistics.mean(v):.4f} | {sd:.4f} | "
                         f"{', '.join(f'{x:.4f}' for x in v)} |")
        a, b = res[(scale, False)], res[(scale, True)]
        d = 100 * (statistics.mean(b) - statistics.mean(a))
        noise = 100 * max(statistics.stdev(a), statistics.stdev(b)) if len(a) > 1 else 0.0
        wins = sum(y > x for x, y in zip(a, b, strict=True))
        ties = sum(y == x for x, y in zip(a, b, strict=True))
        word = ("within the seed-to-seed spread: no reliable difference" if abs(d) <= noise else
                "a gain beyond the spread" if d > 0 else "a loss beyond the spread")
        verdicts.append(f"{scale} scale, learned - statistics: {d:+.2f} points; learned better on {wins}, equal on "
                        f"{ties} of {len(a)} seeds ({word}).")
    head = (f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}). The same student "
            "(power-of-two weights with a 2-bit code) with activation scales that follow the running statistics "
            "(`quant.act.learned: false`) or are learned (`true`, the default), for the power-of-two scale the "
            "RTL uses and for a float scale. Seeds " + ", ".join(map(str, seeds)) + "; each seed also changes "
            "the data split.")
    return head + "\n\n" + "\n".join(lines) + "\n\n" + " ".join(verdicts) + (
        "\n\nThe verdicts are computed from the table (a mean difference within the larger standard deviation "
        "is no reliable difference). Equal accuracies are expected where a learned power-of-two scale never "
        "crosses a rounding boundary of its log2 parameter: the effective scale, and so the whole training, is "
        "then the same as with statistics.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits_mlp_pot")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bits", type=int, default=3, help="activation bits")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    a = ap.parse_args()
    res = run(a.model, a.seeds, a.bits)
    text = render(a.model, a.seeds, a.bits, res,
                  "python -m bench.learned_scales " + " ".join(shlex.quote(x) for x in sys.argv[1:]))
    print("\n" + text)
    if not a.no_doc:
        write_section("learned_scales", text)


if __name__ == "__main__":
    main()
