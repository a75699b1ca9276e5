"""``python -m bench {all,rtl,verify,golden,flow,accuracy,da4ml,real,pipeline,zoo_seeds,peers,pnr_seeds} [--quick]``.

Each sub-benchmark prints its table and rewrites its own section of docs/benchmarks.md (between
``<!-- bench:NAME -->`` markers). ``--quick`` (what CI can run, < 5 min on 2 idle cores): few training
epochs, few vectors, fewer models, no place and route; it prints its tables and leaves the doc alone
unless ``--doc`` is given. Run directories live in runs/bench (full) or runs/bench-quick and are reused.
``all`` runs every bench but ``real`` (QONNX models made elsewhere: Verilator builds of BNN-PYNQ nets take
minutes each, even in quick mode), ``pipeline`` (routed builds of deeply pipelined designs, minutes per
seed) and ``peers`` (alkaid 0.8.2 at matched latency: a settings sweep, synthesis and placement of both
generators' designs, about an hour per large model) and ``pnr_seeds`` (router1 time over 7 placement seeds of
the default design, minutes); run them on their own.

Exit status 1 when a bench fails, or when any bit-exactness check a bench makes (RTL vs golden model, golden
model vs ``execute_onnx``, da4ml's netlist vs the golden model) finds a mismatch or could not run; each is
named at the end of the output, after the tables.
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

BENCHES = ("accuracy", "golden", "rtl", "verify", "da4ml", "flow", "real", "pipeline", "zoo_seeds", "peers",
           "pnr_seeds")
# `all` leaves out the benches too slow for the quick CI run
ALL = tuple(b for b in BENCHES if b not in ("real", "pipeline", "zoo_seeds", "peers", "pnr_seeds"))


def _cpu() -> float:
    """User + system CPU seconds of this process and of its waited-for subprocesses."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all", choices=("all", *BENCHES))
    ap.add_argument("--quick", action="store_true", help="CI mode: tiny epochs, few vectors, no place and route")
    ap.add_argument("--runs", type=Path, default=None, help="run directories (default runs/bench[-quick])")
    ap.add_argument("--no-pnr", action="store_true", help="da4ml: skip nextpnr (fmax) in full mode")
    ap.add_argument("--targets", default="ecp5,xilinx", help="yosys targets of the rtl/da4ml benches (full mode)")
    ap.add_argument("--models", default="",
                    help="da4ml, flow, real, peers, pnr_seeds: only these models (comma separated)")
    ap.add_argument("--no-reuse", action="store_true",
                    help="da4ml: re-measure Verilator builds of unchanged designs "
                         "(synthesis/PnR caches: delete stat_*.txt, nextpnr.log)")
    ap.add_argument("--resume", action="store_true",
                    help="real: keep the steps an earlier run recorded in <runs>/bench_real.json, run the others")
    ap.add_argument("--render", action="store_true",
                    help="real, peers: rewrite the section from the stored results (<runs>/bench_real.json, "
                         "<runs>/bench_peers/), measure nothing")
    ap.add_argument("--configs", default="",
                    help="pipeline: flow_control:depth pairs, depthxC for C register copies (rtl.copies), "
                         "e.g. credit:10x4 (default stall:5,credit:5,credit:8)")
    ap.add_argument("--seeds", default="1",
                    help="pipeline, peers, pnr_seeds: nextpnr seeds (comma separated; the median is reported; "
                         "peers: 1,2,3 and pnr_seeds: 1-7 unless given)")
    ap.add_argument("--clock-mhz", type=float, default=200.0, help="pipeline: nextpnr target clock")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--doc", action="store_true",
                    help="with --quick: also write the quick results into docs/benchmarks.md (default: print only)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    # quick (CI) results must not replace the full-mode tables of the doc unless asked to
    ctx = Ctx(quick=args.quick, runs=args.runs, write_doc=not args.no_doc and (not args.quick or args.doc))
    ctx.pnr = not args.no_pnr
    ctx.reuse = not args.no_reuse
    ctx.resume = args.resume
    ctx.render_only = args.render
    ctx.targets = tuple(t for t in args.targets.split(",") if t)
    ctx.models = tuple(m for m in args.models.split(",") if m)
    ctx.configs = args.configs
    ctx.seeds = tuple(int(v) for v in args.seeds.split(",") if v)
    ctx.clock_mhz = args.clock_mhz
    ctx.runs.mkdir(parents=True, exist_ok=True)
    todo = ALL if args.which == "all" else (args.which,)
    failed = []
    t0, c0 = time.perf_counter(), _cpu()
    for name in todo:
        t1, c1 = time.perf_counter(), _cpu()
        try:
            importlib.import_module(f"bench.{name}").run(ctx)
        except Exception:  # noqa: BLE001 - one failing bench must not hide the others
            traceback.print_exc()
            failed.append(name)
        log(f"{name}: {time.perf_counter() - t1:.0f} s wall, {_cpu() - c1:.0f} CPU s")
    for problem in ctx.problems:
        log(f"MISMATCH: {problem}")
    log(f"done in {time.perf_counter() - t0:.0f} s wall, {_cpu() - c0:.0f} CPU s (this process and its finished "
        f"subprocesses), load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
        + (f"; {len(ctx.problems)} bit-exactness check(s) failed" if ctx.problems else ""))
    return 1 if failed or ctx.problems else 0


if __name__ == "__main__":
    sys.exit(main())
