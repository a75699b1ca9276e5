"""Parse yosys ``stat -json`` and nextpnr reports (``--report`` JSON, log as fallback)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_FMAX_RE = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")
_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def yosys_cells(stat_json: Path) -> dict[str, int]:
    """Cell counts by type for the whole (flattened) design."""
    d = json.loads(Path(stat_json).read_text())
    design = d.get("design")
    if design is None:  # older yosys: only per-module stats; take the top (the one with ports)
        mods = d.get("modules", {})
        design = max(mods.values(), key=lambda m: m.get("num_cells", 0)) if mods else {}
    cells = design.get("num_cells_by_type", {})
    return {k: int(v) for k, v in cells.items() if not k.startswith("$scopeinfo")}


def _sum(cells: dict[str, int], prefix: str | tuple[str, ...]) -> int:
    return sum(v for k, v in cells.items() if k.startswith(prefix))


def resources_from_cells(family: str, cells: dict[str, int]) -> dict[str, Any]:
    """Normalised counts (``luts`` ``ffs`` ``dsps`` ``brams``) plus the family's own cell names."""
    if family == "ecp5":
        lut4, ccu2 = cells.get("LUT4", 0), cells.get("CCU2C", 0)
        detail = {"LUT4": lut4, "CCU2": ccu2, "TRELLIS_FF": cells.get("TRELLIS_FF", 0),
                  "MULT18X18D": cells.get("MULT18X18D", 0), "ALU54B": cells.get("ALU54B", 0),
                  "DP16KD": cells.get("DP16KD", 0), "PFUMX": cells.get("PFUMX", 0),
                  "L6MUX21": cells.get("L6MUX21", 0), "TRELLIS_DPR16X4": cells.get("TRELLIS_DPR16X4", 0)}
        return {"luts": lut4 + 2 * ccu2, "ffs": detail["TRELLIS_FF"], "dsps": detail["MULT18X18D"],
                "brams": detail["DP16KD"], "cells": detail}
    if family == "ice40":
        ffs = _sum(cells, "SB_DFF")
        detail = {"SB_LUT4": cells.get("SB_LUT4", 0), "SB_CARRY": cells.get("SB_CARRY", 0), "FF": ffs,
                  "SB_MAC16": cells.get("SB_MAC16", 0), "SB_RAM40_4K": cells.get("SB_RAM40_4K", 0),
                  "SB_SPRAM256KA": cells.get("SB_SPRAM256KA", 0)}
        # an LC holds one LUT4 + one FF (+ carry): max() is a lower bound on LCs before packing
        return {"luts": max(detail["SB_LUT4"], ffs), "ffs": ffs, "dsps": detail["SB_MAC16"],
                "brams": detail["SB_RAM40_4K"], "cells": detail}
    if family == "xilinx":
        luts = _sum(cells, ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"))
        srl = _sum(cells, ("SRL16", "SRLC16", "SRLC32"))
        lutram = _sum(cells, ("RAM16", "RAM32", "RAM64", "RAM128", "RAM256"))
        ffs = _sum(cells, ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"))
        detail = {"LUT": luts, "SRL": srl, "LUTRAM": lutram, "FF": ffs, "CARRY4": cells.get("CARRY4", 0),
                  "MUXF7": cells.get("MUXF7", 0), "MUXF8": cells.get("MUXF8", 0),
                  "DSP48E1": cells.get("DSP48E1", 0), "RAMB18E1": cells.get("RAMB18E1", 0),
                  "RAMB36E1": cells.get("RAMB36E1", 0)}
        return {"luts": luts + srl + lutram, "ffs": ffs, "dsps": detail["DSP48E1"],
                "brams": detail["RAMB36E1"] + (detail["RAMB18E1"] + 1) // 2, "cells": detail}
    raise ValueError(f"unknown family {family!r}")


def clock_name(net: str) -> str:
    """``$glbnet$clk$TRELLIS_IO_IN`` / ``clk$SB_IO_IN_$glb_clk`` -> ``clk``."""
    net = net.removeprefix("$glbnet$")
    return net.split("$")[0] or net


def nextpnr_report(report_json: Path | None, log: Path | None) -> dict[str, Any]:
    """``{"utilisation": {bel: {"used", "available"}}, "fmax": {clock: {"achieved", "target"}}}``."""
    util: dict[str, dict[str, int]] = {}
    fmax: dict[str, dict[str, float]] = {}
    paths: list[dict[str, Any]] = []
    source = None
    if report_json and Path(report_json).exists():
        d = json.loads(Path(report_json).read_text())
        for bel, u in d.get("utilization", {}).items():
            util[bel] = {"used": int(u["used"]), "available": int(u["available"])}
        for net, f in d.get("fmax", {}).items():
            fmax[clock_name(net)] = {"achieved": round(float(f["achieved"]), 2), "target": float(f["constraint"])}
        paths = [_path_summary(cp) for cp in d.get("critical_paths", [])]
        source = "report"
    if log and Path(log).exists() and (not util or not fmax):
        text = Path(log).read_text(errors="replace")
        if not util:
            util = parse_log_utilisation(text)
        if not fmax:
            for net, ach, _, tgt in _FMAX_RE.findall(text):  # the last figure per clock wins (after routing)
                fmax[clock_name(net)] = {"achieved": float(ach), "target": float(tgt)}
        source = source or "log"
    return {"utilisation": util, "fmax": fmax, "critical_paths": paths, "source": source}


def _path_summary(cp: dict[str, Any]) -> dict[str, Any]:
    """One nextpnr critical path -> total/logic/routing delay (ns), start and end cells, logic levels."""
    segs = cp.get("path", [])
    logic = sum(float(s.get("delay", 0)) for s in segs if s.get("type") != "routing")
    routing = sum(float(s.get("delay", 0)) for s in segs if s.get("type") == "routing")
    return {
        "from": clock_name(str(cp.get("from", "")).split(" ")[-1]),
        "to": clock_name(str(cp.get("to", "")).split(" ")[-1]),
        "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3), "routing_ns": round(routing, 3),
        "levels": sum(1 for s in segs if s.get("type") == "logic"),
        "start": segs[0]["from"]["cell"] if segs else None,
        "end": segs[-1]["to"]["cell"] if segs else None,
    }


def parse_log_utilisation(text: str) -> dict[str, dict[str, int]]:
    """The last ``Device utilisation`` block of a nextpnr log."""
    idx = text.rfind("Device utilisation")
    if idx < 0:
        return {}
    block = text[idx:]
    end = block.find("\n\n")
    block = block if end < 0 else block[:end]
    return {b: {"used": int(u), "available": int(a)} for b, u, a in _UTIL_RE.findall(block)}


# ---- router1 headway -------------------------------------------------------------------------
# nextpnr's router1 logs a row every 1,000 iterations: ``IterCnt | w/ripup wo/ripup | ... | remaining arcs``.
# On some placements it spends its first iterations ripping up arcs it has just routed: the default
# flow's out-of-context build on seed 1 had routed 410 of 25,487 arcs after 10,000 iterations and took about
# twice as long to route as the other seeds of the same netlist, at no better fmax (``python -m bench
# pnr_seeds``, docs/benchmarks.md). A placement whose router made less headway than ROUTER1_STALL_HEADWAY
# arcs per iteration over the first ROUTER1_STALL_ITERS iterations is placed again with the next seed
# (``fpga.reseed``).
ROUTER1_STALL_ITERS = 10_000
ROUTER1_STALL_HEADWAY = 0.10
_ROUTE_ARCS_RE = re.compile(r"^Info: Routing (\d+) arcs\.", re.M)
_ROUTE_ROW_RE = re.compile(r"^Info:\s+(\d+) \|\s*\d+\s+\d+ \|\s*\d+\s+\d+ \|\s*(\d+)\|", re.M)


def router1_headway(log_text: str) -> tuple[int, int, int] | None:
    """(arcs to route, iterations, arcs left) at router1's first log row from ROUTER1_STALL_ITERS
    iterations on, in its last routing pass; None before that row (or for other routers' logs)."""
    starts = list(_ROUTE_ARCS_RE.finditer(log_text))
    if not starts:
        return None
    total = int(starts[-1].group(1))
    for it, left in _ROUTE_ROW_RE.findall(log_text, starts[-1].end()):
        if int(it) >= ROUTER1_STALL_ITERS:
            return total, int(it), int(left)
    return None


def router1_stalled(log_text: str) -> str | None:
    """Why router1 is making no headway on this placement (see above), or None (also while it is too
    early to tell, and for logs of other routers)."""
    h = router1_headway(log_text)
    if h is None:
        return None
    total, it, left = h
    if left > 0 and (total - left) / it < ROUTER1_STALL_HEADWAY:
        return (f"router1 routed {total - left:,} of {total:,} arcs in {it:,} iterations "
                f"(under {ROUTER1_STALL_HEADWAY:.0%} headway: ripping up what it routes)")
    return None
