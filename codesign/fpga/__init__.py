"""FPGA stage: open-source bitstreams (ECP5 / iCE40 via YoWASP yosys + nextpnr) and a Xilinx estimate.

Public API::

    build(rtl_dir, out_dir, target="ecp5-85f", board="none", clock_mhz=50, seed=1, progress=True) -> dict
    run_stage(rd, cfg)               # stage contract: rd/rtl -> rd/fpga/<target>/, report fpga.*
    print_table(result)              # rich table of a build result
    simulate_board(rtl_dir, vectors) # cocotb simulation of the UART board top (codesign.fpga.boardsim)

Targets: ``ecp5-85f`` (ULX3S), ``ice40-up5k`` (iCEBreaker), ``xilinx-estimate`` (synth_xilinx counts),
``xilinx-vivado`` (writes a Vivado Tcl script only). Boards: ``none`` (out-of-context), ``ulx3s``,
``icebreaker`` (UART board top, framing in :mod:`codesign.fpga.wrappers`, host side in
:mod:`codesign.fpga.host`).
"""

from codesign.fpga.builder import FitError, build, print_table, run_stage
from codesign.fpga.interface import Interface, load_interface
from codesign.fpga.targets import TARGETS

__all__ = ["FitError", "Interface", "TARGETS", "build", "load_interface", "print_table", "run_stage"]


def __getattr__(name: str):
    if name == "simulate_board":
        from codesign.fpga.boardsim import simulate_board

        return simulate_board
    raise AttributeError(name)
