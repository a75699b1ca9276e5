"""Per-layer width search under an energy budget (``codesign.width``, MetaPruning-style weight sharing)
against the hand-chosen-ratio baseline (every layer shrunk by the same ratio) and global L1 structured
pruning, at the same budget, over seeds.

    python -m bench.width_search [digits_mlp digits_cnn] [--seeds 0 1 2] [--trials 20] [--no-doc]

Per model and seed: train the full-width model once (the supernet: the zoo config, fully parallel, fewer
epochs); for each budget (a fraction of the supernet's analytic energy), every method picks widths and
its widths are sliced from the same supernet (top-L1 units, :func:`codesign.width.slice_model`) and
fine-tuned the same number of epochs (``--final-epochs``); the test accuracy and energy of that model are
reported:

* search: ``codesign.width.search`` (Optuna ``TPESampler``, constraint = budget): each trial slices and
  fine-tunes ``--epochs`` epochs and is scored on the validation split (the test split is not used to
  choose);
* uniform: the largest uniform ratio within budget (``codesign.width.uniform_under_budget``);
* global L1: ``codesign.prune.select_units(criterion='l1', scope='global')`` at the lowest sparsity within
  budget (``codesign.width.global_l1_under_budget``).

digits_mlp is searched as a 64-64-32-10 MLP (``model.hidden: [64, 32]``: the zoo's single hidden layer
leaves nothing to distribute, a search over one width is the uniform ratio). Writes the
``<!-- bench:width-search -->`` section of docs/benchmarks.md and docs/width_search.png (accuracy vs
energy: every search trial and a uniform-ratio sweep, after the short fine-tuning).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs" / "width_search.png"
OVERRIDES = {
    "digits_mlp": {"model.hidden": [64, 32]},
    "digits_cnn": {},
}
SWEEP = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)


def run_seed(name: str, seed: int, a: argparse.Namespace) -> dict:
    from codesign import config, data, width
    from codesign.train import accuracy, train_model

    over = {"rtl.strategy": "latency", "rtl.reuse": 1, "seed": seed, "train.epochs": a.train_epochs,
            **OVERRIDES.get(name, {})}
    cfg = config.load(name, over)
    ds = data.load(cfg.data, seed)
    t0 = time.time()
    supernet, _ = train_model(cfg, ds, progress=False)
    full = width.cost(supernet, cfg.rtl.strategy)
    res = {"model": name, "seed": seed, "full_widths": width.full_widths(cfg), "full_energy_pj": full["energy_pj"],
           "full_test_acc": accuracy(supernet, ds.x_test, ds.y_test), "budgets": [], "sweep": [], "trials": []}
    for frac in a.budgets:
        budget = {"energy_pj": frac * full["energy_pj"]}
        u = width.uniform_under_budget(supernet, cfg, budget)
        g = width.global_l1_under_budget(supernet, cfg, budget)
        s = width.search(supernet, cfg, ds, budget=budget, trials=a.trials, epochs=a.epochs, seed=seed,
                         start=[u[1]] if u and a.start_uniform else None)
        res["trials"] += [dict(t, budget=frac) for t in s["trials"]]
        # each method's candidates in its order of preference: the final fine-tuning can move the energy
        # (zero weight codes are free), so the first candidate within budget *after* it is the pick
        feas = sorted((t for t in s["trials"] if t["feasible"]), key=lambda t: (-t["val_acc"], t["energy_pj"]))
        cands = {"search": list(dict.fromkeys(width.widths_str(t["widths"]) for t in feas)),
                 "uniform": [] if u is None else [k / 64 for k in range(round(u[0] * 64), 0, -1)],
                 "global L1": [] if g is None else [k / 64 for k in range(round(g[0] * 64), 64)]}
        by_str = {width.widths_str(t["widths"]): t["widths"] for t in feas}
        row = {"budget_frac": frac, "budget_pj": budget["energy_pj"], "uniform_ratio": u[0] if u else None,
               "global_sparsity": g[0] if g else None}
        for method, cl in cands.items():
            row[method] = None
            for tries, c in enumerate(cl[:6]):
                w = (by_str[c] if method == "search" else width.uniform_widths(cfg, c) if method == "uniform"
                     else width.global_l1_widths(supernet, cfg, c))
                r = width.evaluate(supernet, cfg, ds, w, epochs=a.final_epochs, seed=seed)
                if r["energy_pj"] <= budget["energy_pj"] or tries == min(len(cl), 6) - 1:
                    row[method] = {k: r[k] for k in ("widths", "val_acc", "test_acc", "energy_pj", "params")}
                    row[method]["within_budget"] = r["energy_pj"] <= budget["energy_pj"]
                    row[method]["fallbacks"] = tries
                    break
        res["budgets"].append(row)
        print(f"[width] {name} seed {seed} budget {frac:.0%} ({budget['energy_pj']:.0f} pJ): " + "; ".join(
            f"{m} {width.widths_str(row[m]['widths'])} {100 * row[m]['test_acc']:.1f}% {row[m]['energy_pj']:.0f} pJ"
            for m in cands if row[m]), flush=True)
    for r in SWEEP:
        e = width.evaluate(supernet, cfg, ds, width.uniform_widths(cfg, r), epochs=a.epochs, seed=seed)
        res["sweep"].append({"ratio": r, "test_acc": e["test_acc"], "val_acc": e["val_acc"],
                             "energy_pj": e["energy_pj"]})
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _ms(v: list[float]) -> str:
    if not v:
        return "-"
    m = 100 * statistics.mean(v)
    return f"{m:.1f} ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else f"{m:.1f}"


def verdict(search: list[float], other: list[float]) -> str:
    """From paired per-seed test accuracies: wins, mean difference, and whether it exceeds the spread."""
    n = len(search)
    d = [s - o for s, o in zip(search, other, strict=True)]
    k = sum(x > 1e-9 for x in d)
    ties = sum(abs(x) <= 1e-9 for x in d)
    mean = 100 * statistics.mean(d)
    spread = 100 * max(statistics.stdev(search) if n > 1 else 0.0, statistics.stdev(other) if n > 1 else 0.0)
    where = "within spread" if abs(mean) <= spread else ("better" if mean > 0 else "worse") + ", beyond spread"
    return f"search higher on {k}/{n} seeds{f' ({ties} tied)' if ties else ''}, mean {mean:+.1f} pts, {where}"


def render(results: list[dict], a: argparse.Namespace, command: str) -> str:
    from bench.common import machine, table

    methods = ("search", "uniform", "global L1")
    lines = []
    for name in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == name]
        fw = rs[0]["full_widths"]
        lines.append(f"#### {name} (searched widths: {', '.join(f'{k} ≤ {v}' for k, v in fw.items())})\n")
        lines.append(f"Full-width supernet: {_ms([r['full_test_acc'] for r in rs])} % test accuracy, "
                     f"{statistics.mean(r['full_energy_pj'] for r in rs):,.0f} pJ/inference (mean of "
                     f"{len(rs)} seeds).\n")
        rows = []
        summary = []
        for bi, frac in enumerate(a.budgets):
            per = [r["budgets"][bi] for r in rs]
            for r, b in zip(rs, per, strict=True):
                cells = [f"{frac:.0%} ({b['budget_pj']:,.0f})", r["seed"]]
                for m in methods:
                    x = b[m]
                    cells += ["-", "-", "-"] if x is None else [
                        _widths(x["widths"]), f"{100 * x['test_acc']:.1f}",
                        f"{x['energy_pj']:,.0f}{'' if x['within_budget'] else ' (over)'}"]
                rows.append(cells)
            acc = {m: [b[m]["test_acc"] for b in per if b[m]] for m in methods}
            rows.append([f"{frac:.0%}", "mean ± std"] + sum(
                [["", _ms(acc[m]), f"{statistics.mean(b[m]['energy_pj'] for b in per if b[m]):,.0f}"
                  if acc[m] else "-"] for m in methods], []))
            if len(acc["search"]) == len(acc["uniform"]) == len(per):
                summary.append(f"* budget {frac:.0%}: vs uniform: {verdict(acc['search'], acc['uniform'])}"
                               + (f"; vs global L1: {verdict(acc['search'], acc['global L1'])}"
                                  if len(acc["global L1"]) == len(per) else ""))
        lines.append(table(["budget (pJ)", "seed"] + sum(
            [[f"{m} widths", f"{m} acc %", f"{m} pJ"] for m in methods], []), rows))
        lines.append("\nVerdict (paired by seed, test accuracy after the same final fine-tuning):\n")
        lines += summary
        lines.append("")
    secs = sum(r["seconds"] for r in results)
    head = (f"### Width search under an energy budget\n\n_Measured "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}` on {machine()}; "
            f"{secs / 60:.1f} min of training and search._\n\n"
            f"Per seed: one full-width supernet ({a.train_epochs} QAT epochs after a float twin); per budget (a "
            f"fraction of the supernet's analytic energy, `codesign.energy`), **search** = "
            f"`codesign.width.search` ({a.trials} TPE trials, each an L1 slice of the supernet fine-tuned "
            f"{a.epochs} epochs, chosen on the validation split"
            f"{'; its first trial is the uniform pick' if a.start_uniform else ''}), **uniform** = the largest "
            f"same-for-every-layer ratio within budget, **global L1** = `select_units(l1, scope=global)` at "
            f"the lowest sparsity within budget. Every method's widths are then sliced from the same "
            f"supernet and fine-tuned {a.final_epochs} epochs; fine-tuning moves the energy a little (zero "
            f"weight codes are free), so a pick that ends over budget falls back to the method's next "
            f"candidate (next-best feasible trial, next smaller ratio, next higher sparsity). The table gives "
            f"that model's test accuracy and energy (a few epochs, few trials: a quick bench, not a converged "
            f"search). Plot: [width_search.png](width_search.png) (accuracy after the {a.epochs}-epoch "
            f"fine-tuning vs energy, every search trial and a uniform-ratio "
            f"sweep).\n\n")
    return head + "\n".join(lines)


def _widths(w: dict[str, int]) -> str:
    from codesign.width import widths_str

    return widths_str(w)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        rs = [r for r in results if r["model"] == name]
        for i, r in enumerate(rs):
            t = [x for x in r["trials"] if x.get("fine_tuned")]
            ax.scatter([x["energy_pj"] for x in t], [100 * x["test_acc"] for x in t], s=14, alpha=0.5, color="C0",
                       label="search trials" if i == 0 else None)
            sw = sorted(r["sweep"], key=lambda x: x["energy_pj"])
            ax.plot([x["energy_pj"] for x in sw], [100 * x["test_acc"] for x in sw], "s--", color="C1", ms=4,
                    alpha=0.8, label="uniform ratio" if i == 0 else None)
            for b in r["budgets"]:
                ax.axvline(b["budget_pj"], color="grey", lw=0.6, ls=":")
        ax.set_xlabel("energy (pJ / inference, analytic)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{name}: {len(rs)} seeds")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=["digits_mlp", "digits_cnn"])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=20, help="search trials per budget")
    ap.add_argument("--budgets", type=float, nargs="*", default=[0.5, 0.25], help="fractions of the full energy")
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per search trial")
    ap.add_argument("--final-epochs", type=int, default=10, help="fine-tuning epochs of every method's pick")
    ap.add_argument("--train-epochs", type=int, default=20, help="supernet QAT epochs")
    ap.add_argument("--no-start-uniform", dest="start_uniform", action="store_false",
                    help="do not enqueue the uniform pick as the search's first trial")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not write docs/")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    command = "python -m bench.width_search " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    results = []
    for name in a.models:
        for seed in a.seeds:
            results.append(run_seed(name, seed, a))
            if a.json:
                Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    text = render(results, a, command.strip())
    print("\n" + text)
    if not a.no_doc:
        from bench.common import write_section

        plot(results, PLOT)
        write_section("width-search", text)


if __name__ == "__main__":
    main()
