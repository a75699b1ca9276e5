"""Shared helpers of the benchmark suite: machine description, run directories, tables, doc sections."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
DIGITS = ("digits_mlp", "digits_mlp_pot", "digits_mlp_pot_pruned")

# --quick: tiny training so that a whole `python -m bench all --quick` fits in a few minutes
QUICK_OVERRIDES: dict[str, Any] = {"train.epochs": 3, "train.float_epochs": 0, "train.patience": 0,
                                   "prune.finetune_epochs": 1}


class Ctx:
    """Options shared by the sub-benchmarks."""

    def __init__(self, quick: bool = False, runs: Path | None = None, write_doc: bool = True,
                 command: str | None = None):
        self.quick = quick
        self.runs = (runs or ROOT / "runs" / ("bench-quick" if quick else "bench")).resolve()
        self.write_doc = write_doc
        self.pnr = True
        self.targets: tuple[str, ...] = ("ecp5", "xilinx")
        self.models: tuple[str, ...] = ()
        self.reuse = True  # reuse measurements of unchanged designs (Verilator builds, synthesis, place and route)
        self.resume = False  # real: keep the steps an earlier run recorded
        self.render_only = False  # real: rewrite the section from the recorded steps, measure nothing
        self.configs = ""  # pipeline: flow_control:depth pairs
        self.seeds: tuple[int, ...] = (1,)  # pipeline: nextpnr seeds
        self.clock_mhz = 200.0  # pipeline: nextpnr target clock
        self.command = command or "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        self.problems: list[str] = []  # mismatches and failed checks found by the benches: exit status 1

    def expect_zero(self, what: str, mismatches: Any) -> None:
        """Record a bit-exactness check: anything but 0 (a count, or None where the check did not run) is a
        problem that makes the bench exit non-zero after its tables are printed and written."""
        if mismatches != 0:
            self.problems.append(f"{what}: {mismatches if mismatches is not None else 'not checked'} mismatches")

    def overrides(self, name: str) -> dict[str, Any]:
        return dict(QUICK_OVERRIDES) if self.quick else {}


def same_files(new: Path, old: Path) -> bool:
    """Every file under ``new`` exists under ``old`` with the same bytes (``old`` may hold more: synthesis
    outputs such as stat_*.txt, pnr_in.json, nextpnr logs)."""
    files = [p.relative_to(new) for p in new.rglob("*") if p.is_file()]
    return all((old / f).is_file() and (old / f).read_bytes() == (new / f).read_bytes() for f in files)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def timer() -> Iterable[dict[str, float]]:
    d: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield d
    finally:
        d["s"] = time.perf_counter() - t0


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if m:
            ram = f"{int(m.group(1)) / 1024 ** 2:.1f} GiB RAM"
    except OSError:
        pass
    try:
        load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = ""
    return (f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu}, {ram}, "
            f"Python {platform.python_version()}, {load}")


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def section(ctx: Ctx, key: str, title: str, body: str) -> str:
    """Print a section and rewrite it between ``<!-- bench:key -->`` markers in docs/benchmarks.md."""
    mode = "quick" if ctx.quick else "full"
    text = (f"### {title}\n\n"
            f"_Measured {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} ({mode} mode) with "
            f"`{ctx.command}` on {machine()}._\n\n{body.strip()}\n")
    print("\n" + text, flush=True)
    if ctx.write_doc:
        write_section(key, text)
    return text


def write_section(key: str, text: str, doc: Path = DOC) -> None:
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    cur = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in cur and end in cur:
        i, j = cur.index(start), cur.index(end) + len(end)
        cur = cur[:i] + block + cur[j:]
    else:
        cur = cur.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(cur)
    tmp.replace(doc)


def run_dir(ctx: Ctx, name: str, until: str = "golden") -> Path:
    """Train + export (+ golden) ``name`` once into ``ctx.runs/name``; reused when already there."""
    import json

    out = ctx.runs / name
    rep = out / "report.json"
    need = {"export": "export/model.onnx", "golden": "golden/test_out.npy"}.get(until, f"{until}")
    if (out / need).exists() and rep.exists():
        return out
    import torch

    torch.set_num_threads(1)
    from codesign import config
    from codesign.flow import run_flow

    cfg = config.load(name, ctx.overrides(name))
    log(f"training {name} into {out} ({'quick' if ctx.quick else 'full'} epochs)")
    start = None
    if (out / "export" / "model.onnx").exists() and until == "golden":
        start = "golden"
    run_flow(cfg, out, until=until, start=start)
    json.loads(rep.read_text())
    return out


def report(path: Path) -> dict[str, Any]:
    import json

    p = path / "report.json"
    return json.loads(p.read_text()) if p.exists() else {}


def tool_ok(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
