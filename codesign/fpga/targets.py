"""FPGA targets: devices, capacities, how each is synthesised, placed, routed and packed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    name: str
    family: str                      # ecp5 | ice40 | xilinx
    device: str                      # human-readable part
    short: str                       # "85F", "UP5K", ...
    capacity: dict[str, int]         # normalised resource -> available
    bitstream_ext: str | None = None
    nextpnr_args: tuple[str, ...] = ()
    synth_cmd: str = ""
    nodsp_flag: str = "-nodsp"
    unit_names: dict[str, str] = field(default_factory=dict)


TARGETS: dict[str, Target] = {
    "ecp5-85f": Target(
        name="ecp5-85f", family="ecp5", device="Lattice ECP5 LFE5U-85F CABGA381", short="ECP5-85F",
        capacity={"luts": 83_640, "ffs": 83_640, "dsps": 156, "brams": 208, "ios": 365},
        bitstream_ext="bit", nextpnr_args=("--85k", "--package", "CABGA381"), synth_cmd="synth_ecp5",
        unit_names={"luts": "LUT4s", "ffs": "FFs", "dsps": "MULT18X18D DSPs", "brams": "DP16KD BRAMs",
                    "ios": "I/O pins"},
    ),
    "ice40-up5k": Target(
        name="ice40-up5k", family="ice40", device="Lattice iCE40 UP5K SG48", short="UP5K",
        capacity={"luts": 5_280, "ffs": 5_280, "dsps": 8, "brams": 30, "ios": 39},
        bitstream_ext="bin", nextpnr_args=("--up5k", "--package", "sg48"), synth_cmd="synth_ice40 -dsp",
        unit_names={"luts": "LCs", "ffs": "FFs", "dsps": "SB_MAC16 DSPs", "brams": "SB_RAM40_4K BRAMs",
                    "ios": "I/O pins"},
    ),
    # resource estimate only (no bitstream); utilisation is shown against an Artix-7 100T
    "xilinx-estimate": Target(
        name="xilinx-estimate", family="xilinx", device="Xilinx 7-series estimate (yosys synth_xilinx; vs XC7A100T)",
        short="XC7A100T", capacity={"luts": 63_400, "ffs": 126_800, "dsps": 240, "brams": 135},
        synth_cmd="synth_xilinx -family xc7", nodsp_flag="-nodsp",
        unit_names={"luts": "LUTs", "ffs": "FFs", "dsps": "DSP48E1s", "brams": "RAMB36E1s"},
    ),
}

BOARD_TARGET = {"ulx3s": "ecp5-85f", "icebreaker": "ice40-up5k"}
BOARD_CONSTRAINTS = {"ulx3s": "ulx3s.lpf", "icebreaker": "icebreaker.pcf"}

# nextpnr BEL type -> normalised resource
NEXTPNR_BELS = {
    "ecp5": {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "MULT18X18D": "dsps", "DP16KD": "brams", "TRELLIS_IO": "ios"},
    "ice40": {"ICESTORM_LC": "luts", "ICESTORM_DSP": "dsps", "ICESTORM_RAM": "brams", "SB_IO": "ios"},
}
