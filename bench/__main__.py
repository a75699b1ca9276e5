"""``python -m bench {all,rtl,verify,golden,flow,accuracy,da4ml} [--quick]``.

Each sub-benchmark prints its table and rewrites its own section of docs/benchmarks.md (between
``<!-- bench:NAME -->`` markers). ``--quick`` (what CI can run): few training epochs, few vectors, no
place and route. Run directories live in runs/bench (full) or runs/bench-quick and are reused.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from bench.common import Ctx, log

BENCHES = ("accuracy", "golden", "rtl", "verify", "da4ml", "flow")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all", choices=("all", *BENCHES))
    ap.add_argument("--quick", action="store_true", help="CI mode: tiny epochs, few vectors, no place and route")
    ap.add_argument("--runs", type=Path, default=None, help="run directories (default runs/bench[-quick])")
    ap.add_argument("--no-pnr", action="store_true", help="da4ml: skip nextpnr (fmax) in full mode")
    ap.add_argument("--targets", default="ecp5,xilinx", help="yosys targets of the rtl/da4ml benches (full mode)")
    ap.add_argument("--models", default="", help="da4ml: only these models (comma separated)")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    ctx = Ctx(quick=args.quick, runs=args.runs, write_doc=not args.no_doc)
    ctx.pnr = not args.no_pnr
    ctx.targets = tuple(t for t in args.targets.split(",") if t)
    ctx.models = tuple(m for m in args.models.split(",") if m)
    ctx.runs.mkdir(parents=True, exist_ok=True)
    todo = BENCHES if args.which == "all" else (args.which,)
    failed = []
    t0 = time.perf_counter()
    for name in todo:
        t1 = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").run(ctx)
        except Exception:  # noqa: BLE001 - one failing bench must not hide the others
            traceback.print_exc()
            failed.append(name)
        log(f"{name}: {time.perf_counter() - t1:.0f} s")
    log(f"done in {time.perf_counter() - t0:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
