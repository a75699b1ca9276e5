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
    ("train", "seconds", "training time [s]", "{:.1f}"),
    ("prune", "sparsity", "structured sparsity", "{:.2f}"),
    ("prune", "accuracy_after", "accuracy after pruning", "{:.4f}"),
    ("export", "torch_vs_qonnx_mismatches", "PyTorch vs QONNX mismatches", "{}"),
    ("golden", "accuracy", "golden-model accuracy", "{:.4f}"),
    ("golden", "qonnx_mismatches", "golden vs execute_onnx mismatches", "{}"),
    ("rtl", "strategy", "RTL architecture", "{}"),
    ("rtl", "latency_cycles", "latency [cycles]", "{}"),
    ("rtl", "ii", "initiation interval [cycles]", "{}"),
    ("verify", "simulator", "simulator", "{}"),
    ("verify", "vectors", "vectors simulated", "{:,}"),
    ("verify", "mismatches", "RTL vs golden mismatches", "{}"),
    ("verify", "vectors_per_s", "simulation speed [vectors/s]", "{:,.0f}"),
    ("fpga", "target", "FPGA target", "{}"),
    ("fpga", "luts", "LUTs", "{:,}"),
    ("fpga", "ffs", "FFs", "{:,}"),
    ("fpga", "dsps", "DSPs", "{}"),
    ("fpga", "fmax_mhz", "fmax [MHz]", "{:.1f}"),
    ("fpga", "timing_met", "timing met", "{}"),
    ("fpga", "bitstream", "bitstream", "{}"),
    ("energy", "pj_per_inference", "energy per inference [pJ]", "{:,.1f}"),
]


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
        t.add_row("stage times [s]", ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
    console.print(t)
