"""``python -m bench verify``: cocotb verification speed of digits_mlp.

Rows (full mode; quick mode uses fewer vectors):

- Verilator, ``stream`` testbench (HDL-side $readmemh wrapper), the fully parallel digits_mlp, test set +
  100k random + corner vectors, from a cold build (fresh build folder, no ccache): the target
  "whole verification under 90 s on 2 cores"; then the same run on the cached build: bulk vectors/s
  (target >= 50,000 vectors/s).
- Verilator ``loop`` testbench (Python drives every cycle) for reference.
- The folded digits_mlp of the model's default config (``models/digits_mlp.yaml``: reuse 32,
  pipeline 4) on Verilator and on Icarus with the full stimulus (Icarus: HDL clock).
- Gate level (full mode only): the ECP5 netlist (``synth_ecp5``, DSPs kept) of the folded design with
  the vendor cell models, 10k random vectors + test set + corners, on Verilator.

Every row records wall and CPU seconds (``RUSAGE_CHILDREN`` of the simulator and compiler
processes) and the load average before and after it: on a shared machine the CPU time is the
load-independent figure.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.common import Ctx, log, run_dir, section, table


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _verify(rtl: Path, onnx: Path, test_x: Path | None, vectors: int, simulator: str, style: str, cold: bool,
            gate: str | None = None) -> dict:
    from codesign.verify import verify

    saved = os.environ.get("OBJCACHE")
    if cold:
        os.environ["OBJCACHE"] = ""
    broot = Path(tempfile.mkdtemp(prefix="bench-verify-")) if cold else None
    try:
        return verify(rtl, onnx, vectors=vectors, simulator=simulator, style=style, build_root=broot,
                      localize=False, test_x=test_x, gate_level=gate or False)
    finally:
        if broot:
            shutil.rmtree(broot, ignore_errors=True)
        if cold:
            if saved is None:
                os.environ.pop("OBJCACHE", None)
            else:
                os.environ["OBJCACHE"] = saved


def folded(run: Path) -> tuple[Path, dict]:
    """The digits_mlp RTL with the model's default (folded) rtl config."""
    from bench.rtl import generate
    from codesign import config

    r = config.load("digits_mlp").rtl
    out, iface, _ = generate(run, r.strategy, r.reuse, folder=f"{r.strategy}{r.reuse}p{r.pipeline}",
                             multiplier=r.multiplier, pipeline=r.pipeline)
    return out, iface


def run(ctx: Ctx) -> dict:
    from bench.rtl import generate
    from codesign.verify import available

    run = run_dir(ctx, "digits_mlp", until="export")
    onnx = run / "export" / "model.onnx"
    tx = run / "export" / "test_x.npy"
    test_x = tx if tx.exists() else None
    par, _, _ = generate(run, "latency", 1)
    fold, fi = folded(run)
    fold_name = f"folded (reuse {fi.get('reuse')}, II {fi.get('ii')})"
    q = ctx.quick
    n_full = 20_000 if q else 100_000
    plan: list[dict[str, Any]] = [
        {"design": "parallel (II 1)", "rtl": par, "sim": "verilator", "style": "stream", "n": n_full, "cold": True},
        {"design": "parallel (II 1)", "rtl": par, "sim": "verilator", "style": "stream", "n": n_full, "cold": False},
        {"design": "parallel (II 1)", "rtl": par, "sim": "verilator", "style": "loop", "n": 1_000 if q else 5_000,
         "cold": False},
        {"design": fold_name, "rtl": fold, "sim": "verilator", "style": "stream", "n": n_full, "cold": False},
    ]
    try:
        ok_icarus = available("icarus")
    except Exception:  # noqa: BLE001
        ok_icarus = shutil.which("iverilog") is not None
    if ok_icarus:
        plan += [{"design": fold_name, "rtl": fold, "sim": "icarus", "style": "stream", "n": 300 if q else 100_000,
                  "cold": False},
                 {"design": fold_name, "rtl": fold, "sim": "icarus", "style": "loop", "n": 100 if q else 500,
                  "cold": False}]
    if not q:  # synth_ecp5 + a ~40 CPU s Verilator build of the netlist: full mode only
        plan.append({"design": fold_name, "rtl": fold, "sim": "verilator", "style": "stream", "n": 10_000,
                     "cold": False, "gate": "ecp5"})
    out, errors = [], []
    for p in plan:
        what = f"{p['sim']}/{p['style']} {p['design']}{' ECP5 netlist' if p.get('gate') else ''} {p['n']} vectors"
        log(f"verify: {what}{' (cold build)' if p['cold'] else ''}")
        load0 = _load()
        try:
            r = _verify(p["rtl"], onnx, test_x, p["n"], p["sim"], p["style"], p["cold"], p.get("gate"))
        except Exception as e:  # noqa: BLE001
            errors.append(f"{what}: {str(e)[:300]}")
            continue
        out.append({"design": p["design"], "level": r["level"], "gate": (r.get("gate") or {}).get("target"),
                    "cells": (r.get("gate") or {}).get("cells"), "simulator": p["sim"], "style": p["style"],
                    "hdl_clock": r.get("hdl_clock"), "vectors": r["vectors"], "vectors_by_kind": r["vectors_by_kind"],
                    "mismatches": r["mismatches"], "ok": r["ok"], "cycles": r["backpressure"]["cycles"],
                    "vectors_per_s": r["vectors_per_s"], "seconds": r["seconds"], "cold": p["cold"],
                    "load_before": load0, "load_after": _load()})
    for r in out:
        ctx.expect_zero(f"verify: {r['design']} ({r['simulator']}, {r['style']})", r["mismatches"])
    ctx.problems += [f"verify: {e}" for e in errors]
    (ctx.runs / "bench_verify.json").write_text(json.dumps(out, indent=1))
    render(ctx, out, errors, ok_icarus)
    return {"runs": out}


def _cpu_total(s: dict) -> float:
    return sum(float(s.get(k) or 0) for k in ("build_cpu", "sim_cpu", "synth_cpu", "golden", "compare"))


def render(ctx: Ctx, out: list[dict], errors: list[str], ok_icarus: bool = True) -> None:
    rows = []
    for r in out:
        s = r["seconds"]
        cpu = s.get("sim_cpu")
        level = f"gate ({r['gate']})" if r.get("gate") else "RTL"
        note = []
        if r.get("cold"):
            note.append("cold build, no ccache")
        if r.get("hdl_clock"):
            note.append("HDL clock")
        if s.get("synth") is not None:
            note.append(f"yosys {s['synth']:.0f} s wall")
        loads = [v for v in (*(r.get("load_before") or [])[:1], *(r.get("load_after") or [])[:1])]
        rows.append([r.get("design", "parallel (II 1)"), level, r["simulator"], r["style"], r["vectors"],
                     r["mismatches"], r["vectors_per_s"], round(r["vectors"] / cpu) if cpu else None,
                     f"{s['build']:.1f}{' (cached)' if s['build_cached'] else ''}", s.get("build_cpu"), s["sim"],
                     cpu, s["total"], round(_cpu_total(s), 1),
                     "-".join(f"{v:.1f}" for v in loads) if loads else None, "; ".join(note)])
    body = table(["design", "level", "simulator", "testbench", "vectors", "mismatches", "vectors/s (wall)",
                  "vectors per CPU s", "build s (wall)", "build CPU s", "sim s (wall)", "sim CPU s",
                  "total s (wall)", "total CPU s", "load avg (1 min) before-after", "note"], rows)
    cold = next((r for r in out if r.get("cold") and r["simulator"] == "verilator"), None)
    if cold:
        s = cold["seconds"]
        tot, cpu = s["total"], _cpu_total(s)
        body += (f"\n\nWhole verification of the fully parallel digits_mlp (cold Verilator build + "
                 f"{cold['vectors']:,} vectors + golden + compare): **{tot:.1f} s wall, {cpu:.0f} CPU s** "
                 f"(target < 90 s for 100k vectors on 2 cores: {'met' if tot < 90 else 'not met'} in wall "
                 f"time on this machine at load {cold['load_before'][0] if cold.get('load_before') else '?'}; "
                 f"{'met' if cpu < 90 else 'not met'} in CPU time, which is what an idle 2-core machine needs at "
                 "most: the build is a parallel make).")
    warm = next((r for r in out if not r.get("cold") and r["simulator"] == "verilator" and r["style"] == "stream"
                 and r.get("design", "").startswith("parallel")), None)
    if warm:
        s = warm["seconds"]
        vps_cpu = warm["vectors"] / s["sim_cpu"] if s.get("sim_cpu") else None
        core = warm["vectors"] / s["sim_core"] if s.get("sim_core") else None
        body += (f"\n\nBulk mode (second run of the same design, `stream` testbench; its build is "
                 f"{'cached' if s['build_cached'] else 'a ccache-warm rebuild'}): "
                 f"{warm['vectors_per_s'] or 0:,.0f} vectors/s wall "
                 f"(simulator start-up included), {vps_cpu or 0:,.0f} vectors per CPU second, "
                 f"{core or 0:,.0f} vectors/s in the run loop alone (target >= 50,000 vectors/s: "
                 f"{'met' if (vps_cpu or 0) >= 50_000 else 'not met'} per CPU second).")
    body += ("\n\nvectors/s (wall) counts the simulator run only (vectors / sim s, start-up included); vectors per "
             "CPU s uses the simulator's CPU time, which the load does not inflate. total CPU s = build + simulation + "
             "yosys + golden model + comparison. Every run uses the full stimulus: corner vectors, the test set "
             "and the random vectors, input gaps and output backpressure in the second half; mismatches must be 0.")
    ica = next((r for r in out if r["simulator"] == "icarus" and r["style"] == "stream" and r.get("cycles")), None)
    if ica:
        ms = 1e3 * ica["seconds"]["sim_cpu"] / ica["cycles"]
        body += (f"\n\nIcarus is DUT-bound, not testbench-bound: the folded MLP took {ica['cycles']:,} clock cycles, "
                 f"{ms:.2f} ms of vvp CPU time per cycle (64 multipliers, operand muxes and an adder tree re-evaluated "
                 "every step, II 32), against ~0.05 ms for an idle cycle of the same testbench (measured with "
                 "vvp alone); `perf` shows vvp's generic vector arithmetic and event dispatch, no single hot spot, "
                 "and replacing the weight case ROMs by arrays changed nothing. The HDL-side clock (default for "
                 "Icarus) saves the VPI callback per edge (~10% CPU here). On the fully parallel digits_mlp "
                 "Icarus manages ~6 vectors/s (a 0.8 MB flat netlist of shift-add trees): use Verilator for bulk "
                 "runs there.")
    gate = next((r for r in out if r.get("gate")), None)
    if gate and gate.get("cells"):
        cells = ", ".join(f"{n:,} {c}" for c, n in sorted(gate["cells"].items(), key=lambda kv: -kv[1]))
        body += (f"\n\nGate level: `synth_ecp5 -flatten` netlist of the folded design ({cells}) simulated with the "
                 "ECP5 cell models yosys ships (`share/ecp5/cells_sim.v`) plus codesign's MULT18X18D model.")
    if not ok_icarus:
        body += "\n\nIcarus Verilog not installed: Icarus rows skipped."
    if ctx.quick:
        body += "\n\nQuick mode uses fewer vectors."
    if errors:
        body += "\n\nErrors: " + "; ".join(errors)
    section(ctx, "verify", "Verification speed (digits_mlp)", body)
