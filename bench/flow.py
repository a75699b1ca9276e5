"""``python -m bench flow``: wall time per stage of the whole flow, cold (fresh run dir) and warm
(a second run into the same dir), on digits_mlp (the default config) and jet_mlp (``--quick``: digits_mlp
only unless ``--models`` says otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Ctx, log, section, table, write_section

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
    # cold = first run on this machine: an empty Verilator build cache and no ccache, unless this is a CI
    # smoke run whose numbers nobody reads (quick without --doc: `bench verify` has just built the same RTL)
    cold_cache = ctx.write_doc or not ctx.quick
    saved = {k: os.environ.get(k) for k in ("CODESIGN_SIM_CACHE", "OBJCACHE")}
    cache = Path(tempfile.mkdtemp(prefix="bench-flow-simcache-")) if cold_cache else None
    if cache is not None:
        os.environ["CODESIGN_SIM_CACHE"], os.environ["OBJCACHE"] = str(cache), ""
    try:
        for phase in ("cold", "warm"):
            log(f"flow: {name} {phase}")
            t0 = time.perf_counter()
            rd = run_flow(cfg, out, skip=skip, resume=False)  # warm: every stage again
            total = time.perf_counter() - t0
            rep = json.loads((out / "report.json").read_text())
            res[phase] = {"seconds": dict(rep.get("flow", {}).get("seconds", {})), "total": total,
                          "notes": _cache_notes(Path(rd.root))}
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    res["cold_cache"] = cold_cache
    return res


def run(ctx: Ctx) -> dict:
    plan = [("digits_mlp", ("fpga",) if ctx.quick else ()), ("jet_mlp", ("fpga",))]
    if ctx.models:  # --models digits_mlp,jet_mlp
        plan = [p for p in plan if p[0] in ctx.models]
    elif ctx.quick:  # CI budget: the default model only (jet_mlp: `--quick --models digits_mlp,jet_mlp`)
        plan = plan[:1]
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
    body += ("\n\n`run_flow(resume=False)` re-runs every stage on a warm run directory (`codesign flow` would "
             "reuse finished stages: README, resume): only the Verilator build (content-hashed build folder) "
             "and the FPGA steps (yosys/nextpnr cache in fpga/) are reused; train, "
             "export, golden and rtl are recomputed.")
    skipped = [f"{n}: {', '.join(s)}" for n, s in plan if s]
    if skipped:
        body += " Stages skipped: " + "; ".join(skipped) + \
            (" (quick mode: no place and route)" if ctx.quick else
             " (jet_mlp fully parallel is too large for nextpnr on 2 cores in a benchmark run)") + "."
    if ctx.quick:
        body += " Quick mode: 3 training epochs, 2,000 random verification vectors."
    if all(r.get("cold_cache") for r in res.values()):
        body += " Cold: fresh run directory, empty Verilator build cache (`CODESIGN_SIM_CACHE`), ccache off."
    else:
        body += (" Cold here means a fresh run directory only: the Verilator build cache was not emptied (CI smoke "
                 "run), so the cold verify stage may have reused a build of the same RTL.")
    section(ctx, "flow", "Flow wall time per stage", body)
    (ctx.runs / "bench_flow.json").write_text(json.dumps(res, indent=1))
    if "digits_mlp" in res and not ctx.quick and "fpga" not in dict(plan)["digits_mlp"]:
        rd = ctx.runs / "flow" / "digits_mlp"
        text = demo_section(rd, res["digits_mlp"], ctx.command)
        print("\n" + text, flush=True)
        if ctx.write_doc:
            from bench.results import save

            save("digits_mlp", rd, f"{ctx.command} (the default flow, models/digits_mlp.yaml, as make demo runs it)")
            write_section("demo", text, doc=ROOT / "README.md")
    return res


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def demo_section(rd: Path, times: dict, command: str) -> str:
    """README's ``make demo`` table, from the default flow's report.json and fpga.json files."""
    import datetime as dt

    r = json.loads((rd / "report.json").read_text())
    tr, ex, gd, rt, ve, fp, en = (r.get(k, {}) for k in ("train", "export", "golden", "rtl", "verify", "fpga",
                                                          "energy"))
    n_test = gd.get("vectors")
    arch = ("fully parallel" if rt.get("strategy") == "latency" else f"folded, reuse {rt.get('reuse')}")
    ooc = json.loads((rd / fp["ooc_report"]).read_text()) if fp.get("ooc_report") else {}
    board = json.loads((rd / "fpga" / fp["board"] / "fpga.json").read_text()) \
        if fp.get("board") not in (None, "none") else {}
    rows = [
        [f"train (QAT, test set, {n_test} images)",
         f"float {_pct(tr.get('accuracy_float'))}, quantized {_pct(tr.get('accuracy_quantized'))}"],
        ["export", f"PyTorch vs QONNX `execute_onnx`: **{ex.get('torch_vs_qonnx_mismatches')} mismatches** on the test "
                   f"set ({ex.get('torch_vs_qonnx_tolerance')})"],
        ["golden", f"integer golden model {_pct(gd.get('accuracy'))}; vs `execute_onnx`: "
                   f"**{gd.get('qonnx_mismatches')} mismatches** ({gd.get('qonnx_compare')})"],
        ["rtl", f"{arch}, {fp.get('dsps', '-')} multipliers, latency {rt.get('latency_cycles')} cycles, "
                f"II {rt.get('ii')}"],
        ["verify (cocotb + Verilator)", f"{ve.get('vectors'):,} vectors (test set + random + corners, half with "
                                        f"gaps/backpressure): **{ve.get('mismatches')} mismatches**"],
    ]
    for what, f in (("out of context", ooc), (f"{fp.get('board')} board top (UART, LEDs)", board)):
        if not f:
            continue
        res, fmax = f.get("resources", {}), next(iter(f.get("fmax", {}).values()), {})
        bit = (rd / "fpga" / Path(f["bitstream"]).parent.name / Path(f["bitstream"]).name) if f.get("bitstream") \
            else None
        size = f", {bit.stat().st_size:,}-byte `{bit.name}`" if bit is not None and bit.exists() else ""
        rows.append([f"fpga, {what} ({f.get('target')})",
                     f"{res.get('luts', 0):,} LUT4, {res.get('ffs', 0):,} FF, {res.get('dsps', 0)} MULT18X18D; "
                     f"**fmax {fmax.get('achieved', 0):.1f} MHz, timing {'met' if f.get('timing_met') else 'NOT met'} "
                     f"at {f.get('clock_mhz'):g} MHz**{size}"])
    if en:
        rows.append([f"energy ({en.get('model')})", f"{en.get('pj_per_inference'):,.0f} pJ per inference"])
    cold, warm = times["cold"], times["warm"]
    cs = cold["seconds"]
    when = dt.datetime.fromtimestamp((rd / "report.json").stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"_Generated by `{command}` (run finished {when}; machine and load in docs/benchmarks.md, flow section) "
            "from the default flow's run directory (`report.json`, `fpga/*/fpga.json`; kept as "
            "docs/results/digits_mlp.json)._\n\n"
            f"Wall time, cold (fresh run directory, empty Verilator build cache): **{cold['total']:.0f} s**, of "
            f"which fpga {cs.get('fpga', 0):.0f} s, verify {cs.get('verify', 0):.0f} s, "
            f"train {cs.get('train', 0):.0f} s; "
            f"the same command again with the build caches: {warm['total']:.0f} s.\n\n")
    return head + table(["stage", "figure"], rows)
