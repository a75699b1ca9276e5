"""Measure testbench styles and simulators on one design (the numbers in sim/README.md).

    .venv/bin/python sim/bench_tb.py                       # the tiny test DUT, all styles/simulators
    .venv/bin/python sim/bench_tb.py RTL_DIR MODEL.onnx    # a generated design + its golden model
    options: --vectors N (100000) --sims verilator,icarus --styles stream,loop --json out.json

Every run is a full verify() (stimulus, golden model, build, simulation, comparison); the table
shows build time (cached or not), simulation wall time, vectors/s over the whole simulator run and
over the run loop alone (without simulator start-up), and the mismatch count.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codesign.verify import Reference, available, verify  # noqa: E402

TINY = ROOT / "tests" / "data" / "verify_dut"


def _tiny_reference() -> Reference:
    spec = importlib.util.spec_from_file_location("verify_dut_reference", TINY / "reference.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return Reference(run_codes=lambda x: (mod.run_codes(x), mod.OUT_SCALE_EXP), trace_codes=mod.trace_codes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rtl_dir", nargs="?", default=str(TINY))
    ap.add_argument("onnx", nargs="?", default=None)
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--loop-vectors", type=int, default=None, help="vectors for the (slow) loop style")
    ap.add_argument("--sims", default="verilator,icarus")
    ap.add_argument("--styles", default="stream,loop")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    ref = a.onnx if a.onnx else _tiny_reference()
    rows = []
    for simulator in a.sims.split(","):
        if not available(simulator):
            print(f"skip {simulator}: not installed")
            continue
        for style in a.styles.split(","):
            n = a.vectors
            if style == "loop" or simulator == "icarus":
                n = a.loop_vectors or max(1000, a.vectors // 10)
            res = verify(a.rtl_dir, ref, vectors=n, simulator=simulator, style=style)
            s = res["seconds"]
            row = {"simulator": simulator, "style": style, "vectors": res["vectors"], "mismatches": res["mismatches"],
                   "build_s": s["build"], "build_cached": s["build_cached"], "sim_s": s["sim"],
                   "vectors_per_s": res["vectors_per_s"], "vectors_per_s_core": res["vectors_per_s_core"],
                   "total_s": s["total"]}
            rows.append(row)
            print(f"{simulator:9s} {style:6s} {row['vectors']:>8,} vec  build {row['build_s']:7.1f} s"
                  f"{' (cached)' if row['build_cached'] else '         '}  sim {row['sim_s']:6.2f} s  "
                  f"{row['vectors_per_s']:>9,.0f} vec/s  core {row['vectors_per_s_core']:>9,.0f} vec/s  "
                  f"mismatches {row['mismatches']}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
