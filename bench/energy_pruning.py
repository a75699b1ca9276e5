"""Energy-aware pruning (Yang et al. 2017 style, ``codesign.prune.energy_aware_prune``) vs magnitude (L1)
structured pruning, compared at equal accuracy with the analytic energy model.

    .venv/bin/python -m bench.energy_pruning [digits_mlp digits_cnn ...] [--ratio 2.5] [--json out.json]

For each model: train once (the zoo config), then
  * energy-aware: prune the most energy-hungry layer step by step until the estimate is ``ratio`` x lower
    (local fine-tuning, local accuracy guard), then global fine-tuning;
  * L1: one-shot per-layer L1 pruning at a sweep of sparsities with the same fine-tuning budget;
and print one table: energy (pJ/inference), ratio, test accuracy and its drop, plus the L1 point of equal
(or higher) accuracy with the lowest energy.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def _pj(model, strategy: str = "latency") -> float:
    from codesign import energy

    ops, io = energy.from_model(model)
    return float(energy.estimate(ops, strategy=strategy, io_bits=io)["pj_per_inference"])


def run_model(name: str, ratio: float, sparsities: list[float], epochs: int | None, ft: int, local_epochs: int,
              local_drop: float, step_fraction: float) -> dict:
    from codesign import config, data, prune
    from codesign.train import accuracy, train_model

    # the fully parallel architecture (the zoo may fold a model to fit a device: rtl.strategy resource)
    over: dict = {"rtl.strategy": "latency", "rtl.reuse": 1}
    if epochs:
        over["train.epochs"] = epochs
    cfg = config.load(name, over)
    ds = data.load(cfg.data, cfg.seed)
    t0 = time.time()
    model, _ = train_model(cfg, ds, progress=False)
    base_acc = accuracy(model, ds.x_test, ds.y_test)
    e0 = _pj(model, cfg.rtl.strategy)
    rows = [{"method": "unpruned", "setting": "-", "energy_pj": e0, "accuracy": base_acc, "units": _units(model)}]
    print(f"[{name}] trained in {time.time() - t0:.0f} s: acc {base_acc:.4f}, {e0:.1f} pJ", flush=True)

    t0 = time.time()
    m_e, _, rep = prune.energy_aware_prune(copy.deepcopy(model), cfg, ds, target_ratio=ratio, max_drop=0.01,
                                           local_drop=local_drop, step_fraction=step_fraction, local_epochs=local_epochs,
                                           finetune_epochs=ft, progress=lambda s: print(f"  {s}", flush=True))
    rows.append({"method": "energy-aware", "setting": f"target {ratio}x", "energy_pj": rep["energy_after_pj"],
                 "accuracy": rep["accuracy_after"], "units": _units(m_e), "seconds": rep["seconds"]})
    print(f"[{name}] energy-aware in {time.time() - t0:.0f} s", flush=True)

    for s in sparsities:
        t0 = time.time()
        m_l, _, r = prune.prune_model(copy.deepcopy(model), cfg, ds, criterion="l1", sparsity=s, schedule="oneshot",
                                      finetune_epochs=ft, scope="layer")
        rows.append({"method": "l1", "setting": f"sparsity {s:.2f}", "energy_pj": _pj(m_l, cfg.rtl.strategy),
                     "accuracy": r["accuracy_after"], "units": _units(m_l), "seconds": round(time.time() - t0, 1)})
        print(f"  l1 {s:.2f}: {rows[-1]['energy_pj']:.1f} pJ acc {r['accuracy_after']:.4f}", flush=True)
    ea = rows[1]
    eq = [r for r in rows[2:] if r["accuracy"] >= ea["accuracy"] - 1e-9]
    best_l1 = min(eq, key=lambda r: r["energy_pj"]) if eq else None
    for r in rows:
        r["ratio"] = e0 / r["energy_pj"]
        r["drop_points"] = 100 * (base_acc - r["accuracy"])
    return {"model": name, "rows": rows, "l1_at_equal_accuracy": best_l1,
            "energy_aware_vs_l1": (best_l1["energy_pj"] / ea["energy_pj"]) if best_l1 else None}


def _units(model) -> str:
    from codesign.prune import layer_stats

    return "-".join(str(s.units) for s in layer_stats(model))


def print_table(res: dict) -> None:
    print(f"\n### {res['model']}\n")
    print("| method | setting | units | energy pJ/inf | x lower | test acc | drop (points) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in res["rows"]:
        mark = " **(L1 at equal accuracy)**" if r is res["l1_at_equal_accuracy"] else ""
        print(f"| {r['method']}{mark} | {r['setting']} | {r['units']} | {r['energy_pj']:.1f} | {r['ratio']:.2f} | "
              f"{100 * r['accuracy']:.2f} | {r['drop_points']:+.2f} |")
    if res["energy_aware_vs_l1"]:
        print(f"\nenergy-aware uses {res['energy_aware_vs_l1']:.2f}x less energy than the best L1 point of equal accuracy")
    else:
        print("\nno L1 point reaches the energy-aware accuracy")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=["digits_mlp"])
    ap.add_argument("--ratio", type=float, default=2.5)
    ap.add_argument("--sparsities", default="0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--finetune", type=int, default=20, help="global fine-tuning epochs (both methods)")
    ap.add_argument("--local-drop", type=float, default=0.03)
    ap.add_argument("--local-epochs", type=int, default=5)
    ap.add_argument("--step-fraction", type=float, default=0.15)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    out = []
    for m in a.models:
        res = run_model(m, a.ratio, [float(s) for s in a.sparsities.split(",")], a.epochs, a.finetune, a.local_epochs,
                        a.local_drop, a.step_fraction)
        print_table(res)
        out.append(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
