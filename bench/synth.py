"""Cell-count summaries of yosys ``stat`` output (ECP5 and Xilinx), shared by the rtl and da4ml benches."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

SCRIPTS = {
    "ecp5": "synth_ecp5 -top {top}",
    "xilinx": "synth_xilinx -flatten -top {top}",
}


def summarize(counts: dict[str, int], target: str) -> dict[str, int]:
    def s(pred) -> int:
        return sum(v for k, v in counts.items() if pred(k.lstrip("\\$")))

    if target == "ecp5":
        lut, ccu = s(lambda k: k == "LUT4"), s(lambda k: k.startswith("CCU2"))
        return {"LUT4": lut, "CCU2": ccu, "LUT4eq": lut + 2 * ccu,
                "FF": s(lambda k: k.startswith("TRELLIS_FF")), "MULT18": s(lambda k: k.startswith("MULT18"))}
    # INV cells are LUT1s after Vivado-style mapping: counted as LUTs
    return {"LUT": s(lambda k: re.fullmatch(r"LUT\d", k) is not None or k == "INV"),
            "FF": s(lambda k: re.fullmatch(r"FD[A-Z]{2}", k) is not None),
            "CARRY4": s(lambda k: k.startswith("CARRY")), "DSP": s(lambda k: k.startswith("DSP48"))}


def synth_files(folder: Path, files: list[str], top: str, target: str, timeout: int = 3600,
                reuse: bool = False, cached_only: bool = False) -> dict[str, Any] | None:
    """yosys on ``files`` (relative to ``folder``; YoWASP needs relative paths) -> summary + seconds.
    ``reuse``: take ``stat_<target>.txt`` of an earlier run when it is newer than every source file."""
    from codesign.rtl.synth import parse_stat, yosys_cmd

    stat = folder / f"stat_{target}.txt"
    if reuse and stat.exists() and all(stat.stat().st_mtime > (folder / f).stat().st_mtime for f in files):
        return {**summarize(parse_stat(stat.read_text()), target), "seconds": None, "reused": True}
    if cached_only:
        return None

    script = f"read_verilog -sv {' '.join(files)}; {SCRIPTS[target].format(top=top)}; tee -q -o stat_{target}.txt stat"
    t0 = time.perf_counter()
    p = subprocess.run([yosys_cmd(), "-q", "-p", script], cwd=folder, capture_output=True, text=True,
                       timeout=timeout)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"yosys failed in {folder}: {(p.stdout + p.stderr)[-1500:]}")
    counts = parse_stat((folder / f"stat_{target}.txt").read_text())
    return {**summarize(counts, target), "seconds": dt}
