"""Reports: the figures of a run (``report.json``) as tables on the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from codesign.run import RunDir

console = Console()

#: (section, key, label, format)
SUMMARY_ROWS: list[tuple[str, str, str, str]] = [
    ("train", "accuracy_float", "float accuracy", "{:.4f}"),
    ("train", "accuracy_quantized", "quantized accuracy (PyTorch)", "{:.4f}"),
    ("train", "seconds", "training time (s)", "{:.1f}"),
    ("prune", "granularity", "pruning granularity (unit: neurons/filters removed; weight: weights zeroed)", "{}"),
    ("prune", "sparsity", "sparsity (fraction of units or weights pruned)", "{:.2f}"),
    ("prune", "accuracy_after", "accuracy after pruning", "{:.4f}"),
    ("export", "torch_vs_qonnx_mismatches", "PyTorch vs QONNX mismatches", "{}"),
    ("golden", "accuracy", "golden-model accuracy", "{:.4f}"),
    ("golden", "qonnx_mismatches", "golden vs execute_onnx mismatches", "{}"),
    ("golden", "qonnx_compare", "golden vs execute_onnx comparison", "{}"),
    ("golden", "qonnx_tail_max_abs_diff", "float tail: largest difference from execute_onnx", "{:.3g}"),
    ("rtl", "strategy", "RTL architecture", "{}"),
    ("rtl", "latency_cycles", "latency (cycles)", "{}"),
    ("rtl", "ii", "initiation interval (cycles)", "{}"),
    ("verify", "simulator", "simulator", "{}"),
    ("verify", "vectors", "vectors simulated", "{:,}"),
    ("verify", "mismatches", "RTL vs golden mismatches", "{}"),
    ("verify", "vectors_per_s", "simulation speed (vectors/s)", "{:,.0f}"),
    ("fpga", "target", "FPGA target", "{}"),
    ("fpga", "luts", "LUTs", "{:,}"),
    ("fpga", "ffs", "FFs", "{:,}"),
    ("fpga", "dsps", "DSPs", "{}"),
    ("fpga", "fmax_mhz", "fmax (MHz)", "{:.1f}"),
    ("fpga", "timing_met", "timing met", "{}"),
    ("fpga", "bitstream", "bitstream", "{}"),
    ("fpga", "board_timing_met", "board top: timing met", "{}"),
    ("fpga", "program", "load it", "{}"),
    ("fpga", "ooc_report", "out-of-context report (resources, fmax)", "{}"),
    ("energy", "pj_per_inference", "energy per inference (pJ)", "{:,.1f}"),
]

#: the style sheet of a study's report.html
_REPORT_CSS = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}\n"
               "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}tr.pareto{background:#fde2e2}"
               "img{max-width:48%;margin:4px}")


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for section, key, label, fmt in SUMMARY_ROWS:
        v = report.get(section, {}).get(key) if isinstance(report.get(section), dict) else None
        if v is None:
            continue
        try:
            rows.append((label, fmt.format(v)))
        except (ValueError, TypeError):
            rows.append((label, str(v)))
    return rows


def print_summary(rd: RunDir) -> None:
    r = rd.report()
    t = Table(title=f"{r.get('model', '?')}  ({rd.root})", show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    for label, value in summary_rows(r):
        t.add_row(label, value)
    secs = r.get("flow", {}).get("seconds", {})
    if secs:
        t.add_row("stage times (s)", ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
    console.print(t)


# ---------------------------------------------------------------------------------------------
# studies
# ---------------------------------------------------------------------------------------------
def _csv(path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    from codesign.run import atomic_write_text

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _save_figure(fig, path) -> None:
    """Write a matplotlib figure atomically and release it."""
    import matplotlib.pyplot as plt

    from codesign.run import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _scatter(rows, x: str, y: str, path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    pts = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4))
    other = [r for r in pts if not r["pareto"]]
    front = sorted([r for r in pts if r["pareto"]], key=lambda r: r[x])
    ax.scatter([r[x] for r in other], [r[y] for r in other], c="0.6", s=18, label="trials")
    ax.plot([r[x] for r in front], [r[y] for r in front], "o-", c="C3", label="Pareto front")
    for r in front:
        ax.annotate(str(r["number"]), (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, path)
    return True


def _layer_energy_plot(study_dir, rows, path) -> bool:
    """Per-layer energy of the most accurate unpruned trial vs the lowest-energy Pareto trial."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np


    done = [r for r in rows if r.get("energy_pj") is not None]
    base = [r for r in done if not r.get("param:prune.sparsity")] or done
    front = [r for r in done if r["pareto"]]
    if not done or not front:
        return False
    a = max(base, key=lambda r: (r["accuracy"], -r["energy_pj"]))
    b = min(front, key=lambda r: r["energy_pj"])
    loads = []
    for r in (a, b):
        p = study_dir / "trials" / f"{r['number']:04d}" / "energy" / "energy.json"
        if not p.exists():
            return False
        loads.append(json.loads(p.read_text())["per_layer"])
    names = list(dict.fromkeys([*loads[0], *loads[1]]))
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, len(names) * 1.3 + 2), 3.5))
    ax.bar(xs - 0.2, [loads[0].get(n, 0) for n in names], 0.4, label=f"trial {a['number']} ({a['energy_pj']:.0f} pJ)")
    ax.bar(xs + 0.2, [loads[1].get(n, 0) for n in names], 0.4, label=f"trial {b['number']} ({b['energy_pj']:.0f} pJ)")
    ax.set_xticks(xs, names)
    ax.set_ylabel("pJ per inference")
    ax.set_title("per-layer energy: best unpruned vs lowest-energy Pareto design")
    ax.legend(fontsize=8)
    _save_figure(fig, path)
    return True


def study_report(study_dir) -> dict[str, Any]:
    """Write trials.csv, pareto.csv, plots and a self-contained report.html for a study folder."""
    import base64
    import html
    from pathlib import Path

    from codesign.run import atomic_write_text
    from codesign.study import trials_table

    study_dir = Path(study_dir)
    rows = trials_table(study_dir)
    _csv(study_dir / "trials.csv", rows)
    pareto = [r for r in rows if r["pareto"]]
    _csv(study_dir / "pareto.csv", pareto)
    plots = []
    if _scatter(rows, "energy_pj", "accuracy", study_dir / "accuracy_vs_energy.png",
                "accuracy vs energy per inference"):
        plots.append("accuracy_vs_energy.png")
    if _scatter(rows, "luts", "accuracy", study_dir / "accuracy_vs_luts.png", "accuracy vs LUTs"):
        plots.append("accuracy_vs_luts.png")
    if _layer_energy_plot(study_dir, rows, study_dir / "layer_energy.png"):
        plots.append("layer_energy.png")
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and k not in ("worker_pid",)]

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    def tr(r):
        cells = "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in cols)
        return f"<tr class='{'pareto' if r['pareto'] else ''}'>{cells}</tr>"

    table = ("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
             + "".join(tr(r) for r in rows) + "</table>")
    imgs = "".join(
        f"<img alt='{p}' src='data:image/png;base64,{base64.b64encode((study_dir / p).read_bytes()).decode()}'>"
        for p in plots)
    name = html.escape(study_dir.name)
    n_done = sum(r['state'] == 'COMPLETE' for r in rows)
    budget = ""
    if any("feasible" in r for r in rows):
        ok = [r for r in rows if r.get("feasible") and r["state"] == "COMPLETE"]
        best = max(ok, key=lambda r: r.get("accuracy", 0.0), default=None)
        budget = (f"; {len(ok)} within the budget" + (f", the most accurate: trial {best['number']} "
                  f"(accuracy {best.get('accuracy', 0.0):.4g}, {best.get('energy_pj', 0.0):.4g} pJ)" if best else "")
                  + "; the front holds only trials within the budget")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>codesign study {name}</title>
<style>{_REPORT_CSS}</style>
</head><body><h1>Study {name}</h1>
<p>{n_done} complete trials, {len(pareto)} on the Pareto front (highlighted){budget}.</p>
{imgs}<h2>Trials</h2>{table}</body></html>"""
    atomic_write_text(study_dir / "report.html", doc)
    return {"trials": len(rows), "pareto": len(pareto), "plots": plots}
