"""``python -m codesign.fpga RTL_DIR OUT_DIR [--target ...] [--board ...] [--clock-mhz ...] [--seed ...]``.

Stand-alone build of any folder holding interface.json (the ``codesign fpga RUN_DIR`` command runs
the same through the stage contract). ``--target xilinx-vivado`` writes a Vivado Tcl script only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codesign.errors import CodesignError
from codesign.fpga.builder import PLACEMENTS, PLACERS, ROUTERS, build
from codesign.fpga.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m codesign.fpga", description=__doc__.split("\n\n")[0])
    ap.add_argument("rtl_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--target", default="ecp5-85f", choices=[*TARGETS, "xilinx-vivado"])
    ap.add_argument("--board", default="none", choices=["none", "ulx3s", "icebreaker"])
    ap.add_argument("--clock-mhz", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--router", default="router1", choices=ROUTERS,
                    help="nextpnr router (router2 for large congested designs)")
    ap.add_argument("--reseed", type=int, default=2,
                    help="place again with the next seed when router1 makes no headway, up to N times (0: off)")
    ap.add_argument("--placement", default="auto", choices=PLACEMENTS,
                    help="nextpnr placement (auto: board tops wirelength-driven first, out-of-context timing-driven)")
    ap.add_argument("--placer", default="heap", choices=PLACERS,
                    help="nextpnr placer (static: spreads large designs the router cannot finish on heap)")
    ap.add_argument("--force", action="store_true", help="ignore the step cache")
    a = ap.parse_args(argv)
    try:
        r = build(a.rtl_dir, a.out_dir, target=a.target, board=a.board, clock_mhz=a.clock_mhz, seed=a.seed,
                  force=a.force, router=a.router, reseed=a.reseed, placement_mode=a.placement,
                  placer=a.placer)
    except CodesignError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if a.target == "xilinx-vivado":
        print("\n".join(r["scripts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
