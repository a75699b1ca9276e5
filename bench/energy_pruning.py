"""Energy-aware pruning (Yang et al. 2017 style, ``codesign.prune.energy_aware_prune``) vs magnitude (L1)
pruning at the same granularity, compared at equal accuracy with the analytic energy model.

    .venv/bin/python -m bench.energy_pruning [digits_mlp digits_cnn ...] [--granularity weight|unit]
        [--ratios 2.5,4] [--seeds 0 1 2] [--json out.json]

For each model and seed: train once (the zoo config, fully parallel architecture), then
  * energy-aware: prune the most energy-hungry layer step by step (local fine-tuning, validation guard,
    half-step retries) until the estimate is ``ratio`` x lower or every layer is frozen, then global
    fine-tuning; one run per target ratio;
  * L1: magnitude pruning at the same granularity (``prune_model(criterion='l1')``, AGP schedule) at a
    sweep of sparsities, per-layer and/or global scope, with the same number of fine-tuning epochs as the
    energy-aware run used (``--l1-epochs`` overrides);
and print one table: energy (pJ/inference), ratio, test accuracy and its drop, and for each energy-aware
row the L1 point of equal (or higher) accuracy with the lowest energy.
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


def _shape(model, granularity: str) -> str:
    """Units per layer (unit granularity) or non-zero weight codes per layer (weight granularity)."""
    from codesign.prune import layer_stats, weight_codes

    if granularity == "weight":
        return "nz " + "-".join(str(int((weight_codes(model, n) != 0).sum())) for n in model.weight_layers())
    return "-".join(str(s.units) for s in layer_stats(model))


def run_model(name: str, seed: int, a: argparse.Namespace) -> dict:
    from codesign import config, data, prune
    from codesign.train import accuracy, train_model

    # the fully parallel architecture (the zoo may fold a model to fit a device: rtl.strategy resource)
    over: dict = {"rtl.strategy": "latency", "rtl.reuse": 1, "seed": seed}
    if a.epochs:
        over["train.epochs"] = a.epochs
    cfg = config.load(name, over)
    ds = data.load(cfg.data, cfg.seed)
    t0 = time.time()
    model, _ = train_model(cfg, ds, progress=False)
    base_acc = accuracy(model, ds.x_test, ds.y_test)
    e0 = _pj(model, cfg.rtl.strategy)
    g = a.granularity
    rows = [{"method": "unpruned", "setting": "-", "energy_pj": e0, "accuracy": base_acc, "shape": _shape(model, g),
             "epochs": 0}]
    print(f"[{name} seed {seed}] trained in {time.time() - t0:.0f} s: acc {base_acc:.4f}, {e0:.1f} pJ", flush=True)

    ea_rows = []
    for ratio in a.ratios:
        t0 = time.time()
        m_e, _, rep = prune.energy_aware_prune(
            copy.deepcopy(model), cfg, ds, target_ratio=ratio, granularity=g, guard=a.guard, local_drop=a.local_drop,
            local_loss=a.local_loss, step_fraction=a.step_fraction, local_epochs=a.local_epochs,
            finetune_epochs=a.finetune, rounds=a.rounds,
            progress=(lambda s: print(f"  {s}", flush=True)) if a.verbose else None)
        guard = f"loss +{a.local_loss:g}" if a.guard == "loss" else f"acc -{a.local_drop:g}"
        row = {"method": "energy-aware", "setting": f"target {ratio:g}x, guard {guard}",
               "energy_pj": rep["energy_after_pj"], "accuracy": rep["accuracy_after"], "shape": _shape(m_e, g),
               "epochs": rep["epochs"],
               "seconds": rep["seconds"], "masked_nonzero_codes": rep.get("masked_nonzero_codes", 0),
               "mismatches": rep["masked_vs_removed_mismatches"]}
        rows.append(row)
        ea_rows.append(row)
        print(f"  energy-aware {ratio:g}x: {row['energy_pj']:.1f} pJ ({e0 / row['energy_pj']:.2f}x) "
              f"acc {row['accuracy']:.4f} {row['shape']} ({row['epochs']} epochs, {time.time() - t0:.0f} s)",
              flush=True)

    l1_epochs = a.l1_epochs or max(r["epochs"] for r in ea_rows)
    for scope in a.l1_scopes:
        for s in a.sparsities:
            t0 = time.time()
            m_l, _, r = prune.prune_model(copy.deepcopy(model), cfg, ds, criterion="l1", sparsity=s,
                                          schedule=a.l1_schedule, steps=a.l1_steps, finetune_epochs=l1_epochs,
                                          scope=scope, granularity=g)
            rows.append({"method": "l1", "setting": f"{scope}, sparsity {s:.2f}",
                         "energy_pj": _pj(m_l, cfg.rtl.strategy),
                         "accuracy": r["accuracy_after"], "shape": _shape(m_l, g), "epochs": l1_epochs,
                         "seconds": round(time.time() - t0, 1),
                         "masked_nonzero_codes": r.get("masked_nonzero_codes", 0),
                         "mismatches": r["masked_vs_removed_mismatches"]})
            print(f"  l1 {scope} {s:.2f}: {rows[-1]['energy_pj']:.1f} pJ ({e0 / rows[-1]['energy_pj']:.2f}x) "
                  f"acc {r['accuracy_after']:.4f} {rows[-1]['shape']}", flush=True)
    for r in rows:
        r["ratio"] = e0 / r["energy_pj"]
        r["drop_points"] = 100 * (base_acc - r["accuracy"])
    l1 = [r for r in rows if r["method"] == "l1"]
    pairs = [pair(ea, l1) for ea in ea_rows]
    return {"model": name, "seed": seed, "granularity": g, "base_accuracy": base_acc, "base_pj": e0, "rows": rows,
            "pairs": pairs, "l1_epochs": l1_epochs}


def pair(ea: dict, l1: list[dict]) -> dict:
    """The L1 point of equal (or higher) accuracy with the lowest energy, and the L1 point of equal (or
    lower) energy with the highest accuracy."""
    eq = [r for r in l1 if r["accuracy"] >= ea["accuracy"] - 1e-9]
    best = min(eq, key=lambda r: (r["energy_pj"], -r["accuracy"])) if eq else None
    le = [r for r in l1 if r["energy_pj"] <= ea["energy_pj"] * (1 + 1e-9)]
    at_e = max(le, key=lambda r: (r["accuracy"], -r["energy_pj"])) if le else None
    return {"energy_aware": ea, "l1_at_equal_accuracy": best,
            "l1_over_energy_aware": best["energy_pj"] / ea["energy_pj"] if best else None,
            "l1_at_equal_energy": at_e}


def print_table(res: dict) -> None:
    eq = {id(p["l1_at_equal_accuracy"]): p for p in res["pairs"] if p["l1_at_equal_accuracy"]}
    print(f"\n### {res['model']} (seed {res['seed']}, granularity {res['granularity']})\n")
    print("| method | setting | shape | fine-tune epochs | energy pJ/inf | x lower | test acc | drop (points) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in res["rows"]:
        mark = " **(equal accuracy)**" if id(r) in eq else ""
        print(f"| {r['method']}{mark} | {r['setting']} | {r['shape']} | {r['epochs']} | {r['energy_pj']:.1f} | "
              f"{r['ratio']:.2f} | {100 * r['accuracy']:.2f} | {r['drop_points']:+.2f} |")
    print()
    for p in res["pairs"]:
        ea, l1 = p["energy_aware"], p["l1_at_equal_accuracy"]
        if p["l1_at_equal_energy"]:
            e = p["l1_at_equal_energy"]
            print(f"- {ea['setting']}: best L1 at <= its energy: {e['setting']}, "
                  f"{e['ratio']:.2f}x at {100 * e['accuracy']:.2f}%")
        if l1:
            print(f"- {ea['setting']}: {ea['ratio']:.2f}x at {100 * ea['accuracy']:.2f}%; best L1 at >= that accuracy: "
                  f"{l1['setting']}, {l1['ratio']:.2f}x ({p['l1_over_energy_aware']:.2f}x the energy-aware energy)")
        else:
            print(f"- {ea['setting']}: {ea['ratio']:.2f}x at {100 * ea['accuracy']:.2f}%; "
                  "no L1 point reaches that accuracy")


def print_summary(results: list[dict]) -> None:
    """One line per model, seed and energy-aware target: energy-aware vs the L1 point of equal accuracy
    (lowest energy at >= its accuracy) and of equal energy (best accuracy at <= its energy); then the
    mean over seeds."""
    print("\n| model | seed | unpruned pJ / acc | energy-aware | EA x lower | EA drop | L1 at equal accuracy: setting, "
          "x lower, drop | L1 energy / EA energy | L1 at equal energy: setting, x lower, drop |")
    print("|---|---:|---|---|---:|---:|---|---:|---|")
    groups: dict = {}
    for res in results:
        for p in res["pairs"]:
            ea, l1, l1e = p["energy_aware"], p["l1_at_equal_accuracy"], p["l1_at_equal_energy"]
            groups.setdefault((res["model"], ea["setting"]), []).append(p)
            a = f"{l1['setting']}, {l1['ratio']:.2f}x, {l1['drop_points']:+.2f}" if l1 else "none"
            b = f"{l1e['setting']}, {l1e['ratio']:.2f}x, {l1e['drop_points']:+.2f}" if l1e else "none"
            print(f"| {res['model']} | {res['seed']} | {res['base_pj']:.1f} / {100 * res['base_accuracy']:.2f} | "
                  f"{ea['setting']} | {ea['ratio']:.2f} | {ea['drop_points']:+.2f} | {a} | "
                  f"{p['l1_over_energy_aware']:.2f} | {b} |" if l1 else
                  f"| {res['model']} | {res['seed']} | {res['base_pj']:.1f} / {100 * res['base_accuracy']:.2f} | "
                  f"{ea['setting']} | {ea['ratio']:.2f} | {ea['drop_points']:+.2f} | {a} | - | {b} |")
    print_means(results)


def print_means(results: list[dict]) -> None:
    """Mean over seeds of every setting (x lower, drop): picking the best of many noisy L1 points per seed
    favours the sweep (1 test image = 0.28 points), so the means compare the methods on equal footing.
    For each energy-aware setting, the L1 setting whose mean drop is no larger, with the lowest energy."""
    import numpy as np

    by: dict = {}
    for res in results:
        for r in res["rows"]:
            by.setdefault(res["model"], {}).setdefault((r["method"], r["setting"]), []).append(r)
    for model, settings in by.items():
        n = max(len(v) for v in settings.values())
        if n < 2:
            continue
        mean = {k: (float(np.mean([r["ratio"] for r in v])), float(np.mean([r["drop_points"] for r in v])),
                    float(np.mean([r["energy_pj"] for r in v])), len(v)) for k, v in settings.items()}
        print(f"\n#### {model}: mean over {n} seeds\n")
        print("| method | setting | mean x lower | mean drop (points) | L1 at equal mean accuracy (x lower, drop) |")
        print("|---|---|---:|---:|---|")
        l1 = {k: v for k, v in mean.items() if k[0] == "l1"}
        for (method, setting), (ratio, drop, _, _n) in mean.items():
            tail = ""
            if method == "energy-aware":
                ok = [(v[0], k, v[1]) for k, v in l1.items() if v[1] <= drop + 1e-9]
                if ok:
                    r, k, d = max(ok)
                    tail = f"{k[1]}: {r:.2f}x, {d:+.2f}"
                else:
                    tail = "none"
            print(f"| {method} | {setting} | {ratio:.2f} | {drop:+.2f} | {tail} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=["digits_mlp"])
    ap.add_argument("--granularity", choices=["weight", "unit"], default="weight")
    ap.add_argument("--ratios", default="2.5,4", help="energy-aware target ratios (one run each)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--sparsities", default=None, help="L1 sweep (default: 0.5..0.9 for weight, 0.3..0.7 for unit)")
    ap.add_argument("--l1-scopes", default="layer,global")
    ap.add_argument("--l1-schedule", default="agp", choices=["oneshot", "iterative", "agp"])
    ap.add_argument("--l1-steps", type=int, default=5)
    ap.add_argument("--l1-epochs", type=int, default=None,
                    help="L1 fine-tuning epochs (default: what energy-aware used)")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--finetune", type=int, default=30, help="energy-aware global fine-tuning epochs per pass")
    ap.add_argument("--guard", choices=["accuracy", "loss"], default="loss")
    ap.add_argument("--local-drop", type=float, default=0.012)
    ap.add_argument("--local-loss", type=float, default=0.03)
    ap.add_argument("--local-epochs", type=int, default=10)
    ap.add_argument("--step-fraction", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--verbose", action="store_true", help="print every energy-aware step")
    ap.add_argument("--json", default=None)
    ap.add_argument("--tables", nargs="*", default=None, metavar="JSON",
                    help="print the tables of earlier --json outputs (no training) and exit")
    a = ap.parse_args(argv)
    if a.tables is not None:
        out = []
        for path in a.tables:
            with open(path) as f:
                for res in json.load(f):
                    l1 = [r for r in res["rows"] if r["method"] == "l1"]
                    res["pairs"] = [pair(r, l1) for r in res["rows"] if r["method"] == "energy-aware"]
                    print_table(res)
                    out.append(res)
        print_summary(out)
        return
    a.ratios = [float(r) for r in a.ratios.split(",")]
    a.l1_scopes = a.l1_scopes.split(",")
    default_sp = "0.5,0.6,0.7,0.75,0.8,0.85,0.9" if a.granularity == "weight" else "0.3,0.4,0.5,0.6,0.7"
    a.sparsities = [float(s) for s in (a.sparsities or default_sp).split(",")]
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    out = []
    for m in a.models:
        for seed in a.seeds:
            res = run_model(m, seed, a)
            print_table(res)
            out.append(res)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(out, f, indent=1, default=str)
    print_summary(out)


if __name__ == "__main__":
    main()
