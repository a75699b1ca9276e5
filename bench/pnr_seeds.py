"""``python -m bench pnr_seeds``: how nextpnr's router1 time depends on the placement seed, and what the
re-seeding rule (``fpga.reseed``, ``codesign.fpga.reports.router1_stalled``) flags.

For each model (``--models``, default digits_mlp: the default flow's design) the default flow up to ``rtl``,
then the out-of-context ECP5 build at the config's clock for each seed of ``--seeds`` (default 1-7) with
re-seeding off (``reseed=0``: every seed routed to the end), two builds at a time (one core each, as the
flow's fpga stage runs its two builds). Per seed: router1's headway at 10,000 iterations (arcs routed for
good per iteration), whether the rule flags it, router1's own time, the place-and-route step, routed fmax.
Builds are cached in ``<runs>/pnr_seeds/<model>/s<seed>`` (the builder's step cache). Not part of ``all``
(minutes per seed); ``--quick`` measures nothing.
"""

from __future__ import annotations

import re
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Ctx, log, run_dir, section, table

SEEDS = (1, 2, 3, 4, 5, 6, 7)
_ROUTER1_S = re.compile(r"Router1 time ([\d.]+)s")


def measure(rtl: Path, out: Path, seed: int, clock_mhz: float) -> dict[str, Any]:
    from codesign.fpga.builder import build
    from codesign.fpga.reports import router1_headway, router1_stalled

    r = build(rtl, out, target="ecp5-85f", clock_mhz=clock_mhz, seed=seed, progress=False, reseed=0)
    text = (out / "pnr.log").read_text(errors="replace")
    h = router1_headway(text)
    m = _ROUTER1_S.search(text)
    pnr = r["steps"]["pnr"]
    return {"seed": seed, "arcs": h[0] if h else None, "headway": (h[0] - h[2]) / h[1] if h else None,
            "flagged": router1_stalled(text) is not None, "router1_s": float(m.group(1)) if m else None,
            "pnr_s": pnr["original_seconds"] if pnr["cached"] else pnr["seconds"], "fmax_mhz": r["fmax_mhz"]}


def run(ctx: Ctx) -> None:
    from codesign import config as config_mod

    if ctx.quick:
        log("pnr_seeds: nothing in quick mode (routed builds only)")
        return
    models = ctx.models or ("digits_mlp",)
    seeds = list(SEEDS) if tuple(ctx.seeds) == (1,) else list(ctx.seeds)  # --seeds left at its default: 1-7
    parts = []
    for model in models:
        rd = run_dir(ctx, model, until="rtl")
        clock = config_mod.load(model).fpga.clock_mhz
        base = ctx.runs / "pnr_seeds" / model
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = [pool.submit(measure, rd / "rtl", base / f"s{s}", s, clock) for s in seeds]
            rows = [j.result() for j in jobs]
        parts.append(_render(model, clock, rows))
    section(ctx, "pnr-seeds", "nextpnr router1 time by placement seed (re-seeding off)", "\n\n".join(parts))


def _render(model: str, clock: float, rows: list[dict[str, Any]]) -> str:
    body = table(["seed", "arcs", "headway at 10,000 iterations", "flagged (re-placed by fpga.reseed)",
                  "router1 s", "place & route s", "fmax MHz"],
                 [[r["seed"], r["arcs"], f"{r['headway']:.1%}" if r["headway"] is not None else "finished before",
                   "yes" if r["flagged"] else "no", r["router1_s"], r["pnr_s"], r["fmax_mhz"]] for r in rows])
    flagged = [r for r in rows if r["flagged"]]
    others = [r for r in rows if not r["flagged"]]
    lines = [f"**{model}**, out of context, ECP5-85F at {clock:g} MHz:", "", body, ""]
    if others:
        rt = [r["router1_s"] for r in others if r["router1_s"] is not None]
        fm = [r["fmax_mhz"] for r in others if r["fmax_mhz"] is not None]
        lines.append(f"- seeds not flagged ({len(others)}): router1 {min(rt):.1f}-{max(rt):.1f} s (median "
                     f"{statistics.median(rt):.1f} s), fmax {min(fm):.2f}-{max(fm):.2f} MHz")
    for r in flagged:
        lines.append(f"- seed {r['seed']} flagged: headway {r['headway']:.1%} at 10,000 iterations, router1 "
                     f"{r['router1_s']:.1f} s, fmax {r['fmax_mhz']:.2f} MHz")
    if not flagged:
        lines.append("- no seed flagged: re-seeding changes nothing on this design")
    return "\n".join(lines)
