"""``python -m bench flow``: wall time per stage of the whole flow, cold (fresh run dir) and warm
(a second run into the same dir), on digits_mlp (the default config) and jet_mlp."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from bench.common import Ctx, log, section, table

STAGES = ("train", "prune", "export", "golden", "rtl", "verify", "fpga", "energy")


def _cache_notes(rd: Path) -> dict[str, str]:
    notes = {}
    v = rd / "verify" / "verify.json"
    if v.exists():
        s = json.loads(v.read_text()).get("seconds", {})
        notes["verify"] = "Verilator build cached" if s.get("build_cached") else "Verilator build"
    for fj in rd.glob("fpga/*/fpga.json"):
        steps = json.loads(fj.read_text()).get("steps", {})
        c = [k for k, st in steps.items() if isinstance(st, dict) and st.get("cached")]
        if c:
            notes["fpga"] = "cached: " + ", ".join(c)
    return notes


def one(ctx: Ctx, name: str, skip: tuple[str, ...]) -> dict:
    import torch

    from codesign import config
    from codesign.flow import run_flow

    torch.set_num_threads(1)
    ov = ctx.overrides(name)
    if ctx.quick:
        ov["verify.random_vectors"] = 2000
    cfg = config.load(name, ov)
    out = ctx.runs / "flow" / name
    if out.exists():
        shutil.rmtree(out)
    res = {}
    for phase in ("cold", "warm"):
        log(f"flow: {name} {phase}")
        t0 = time.perf_counter()
        rd = run_flow(cfg, out, skip=skip)
        total = time.perf_counter() - t0
        rep = json.loads((out / "report.json").read_text())
        res[phase] = {"seconds": dict(rep.get("flow", {}).get("seconds", {})), "total": total,
                      "notes": _cache_notes(Path(rd.root))}
    return res


def run(ctx: Ctx) -> dict:
    plan = [("digits_mlp", ("fpga",) if ctx.quick else ()), ("jet_mlp", ("fpga",))]
    res = {name: one(ctx, name, skip) for name, skip in plan}
    rows = []
    for name, r in res.items():
        for st in STAGES:
            c, w = r["cold"]["seconds"].get(st), r["warm"]["seconds"].get(st)
            if c is None and w is None:
                continue
            rows.append([name, st, c, w, r["warm"]["notes"].get(st, "")])
        rows.append([name, "**total (incl. Python start of stages)**", r["cold"]["total"], r["warm"]["total"], ""])
    body = table(["model", "stage", "cold s", "warm s", "warm run: what was reused"], rows)
    body += ("\n\n`run_flow` re-runs every stage on a warm run directory: only the Verilator build (content-"
             "hashed build folder) and the FPGA steps (yosys/nextpnr cache in fpga/) are reused; train, "
             "export, golden and rtl are recomputed.")
    skipped = [f"{n}: {', '.join(s)}" for n, s in plan if s]
    if skipped:
        body += " Stages skipped: " + "; ".join(skipped) + \
            (" (quick mode: no place and route)" if ctx.quick else
             " (jet_mlp fully parallel is too large for nextpnr on 2 cores in a benchmark run)") + "."
    if ctx.quick:
        body += " Quick mode: 3 training epochs, 2,000 random verification vectors."
    section(ctx, "flow", "Flow wall time per stage", body)
    (ctx.runs / "bench_flow.json").write_text(json.dumps(res, indent=1))
    return res
