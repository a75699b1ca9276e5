"""Structured-pruning criterion comparison: the same budget (``--sparsity`` of the hidden
neurons / filters physically removed, one-shot, same fine-tuning) for every criterion.

    .venv/bin/python -m bench.prune_criteria --model digits_mlp --seeds 0 1 --sparsity 0.5

For each seed a quantized model is trained (``train.epochs`` of the zoo config), then pruned with each
criterion from the same starting point; prints a Markdown table of test accuracies (mean +- std over
seeds) and the masked-vs-removed mismatch count (must be 0).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

CRITERIA = ["l1", "l2", "bn_gamma", "taylor", "fpgm", "random"]


def main(argv: list[str] | None = None) -> list[dict]:
    from codesign import config, data, prune
    from codesign.train import train_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="digits_mlp")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--finetune-epochs", type=int, default=None)
    ap.add_argument("--criteria", nargs="+", default=CRITERIA)
    ap.add_argument("--set", "-s", action="append", default=[], help="config override section.key=value")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    overrides = dict(config.parse_override(s) for s in a.set)
    rows: dict[str, list[tuple[float, float, int, float]]] = {c: [] for c in a.criteria}
    base = []
    for seed in a.seeds:
        cfg = config.load(a.model, {**overrides, "seed": seed})
        ds = data.load(cfg.data, seed)
        t0 = time.time()
        model, hist = train_model(cfg, ds, progress=False)
        base.append(hist["accuracy_quantized"])
        print(f"seed {seed}: unpruned quantized {base[-1]:.4f} ({time.time() - t0:.0f} s)", flush=True)
        for c in a.criteria:
            t0 = time.time()
            _, _, rep = prune.prune_model(copy.deepcopy(model), cfg, ds, criterion=c, sparsity=a.sparsity,
                                          schedule="oneshot", finetune_epochs=a.finetune_epochs)
            rows[c].append((rep["accuracy_pruned_no_finetune"], rep["accuracy_after"],
                            rep["masked_vs_removed_mismatches"], rep["params_after"] / rep["params_before"]))
            print(f"  {c:8s} no-ft {rep['accuracy_pruned_no_finetune']:.4f} after {rep['accuracy_after']:.4f} "
                  f"mism {rep['masked_vs_removed_mismatches']} ({time.time() - t0:.0f} s)", flush=True)
    b = np.array(base)
    print(f"\n{a.model}, {a.sparsity:.0%} of hidden units/filters removed (one-shot), {len(a.seeds)} seed(s) "
          f"{a.seeds}; unpruned quantized accuracy {b.mean():.4f} +- {b.std():.4f}\n")
    print("| criterion | acc. before fine-tune | acc. after fine-tune | drop vs unpruned (points) "
          "| params kept | mismatches |")
    print("|---|---|---|---|---|---|")
    out = []
    for c, r in rows.items():
        r = np.array(r, dtype=float)
        drop = (b - r[:, 1]) * 100
        print(f"| {c} | {r[:, 0].mean():.4f} +- {r[:, 0].std():.4f} | {r[:, 1].mean():.4f} +- {r[:, 1].std():.4f} | "
              f"{drop.mean():.2f} | {r[:, 3].mean():.1%} | {int(r[:, 2].sum())} |")
        out.append({"criterion": c, "before_ft": r[:, 0].mean(), "after_ft": r[:, 1].mean(), "drop": drop.mean()})
    return out


if __name__ == "__main__":
    main()
