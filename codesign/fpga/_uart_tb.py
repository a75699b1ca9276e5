"""cocotb testbench for the UART board top (driven by :func:`codesign.fpga.boardsim.simulate_board`).

Reads its job from the JSON file named by ``CODESIGN_UART_JOB``: pin names, clocks per bit, the
request frames; writes the reply frames to ``<job>.replies.json``. ``CODESIGN_UART_JOB`` is internal:
:func:`codesign.fpga.boardsim.simulate_board` sets it for the simulator process it starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge


async def _send_byte(clk, line, value: int, cpb: int) -> None:
    for bit in [0] + [(value >> k) & 1 for k in range(8)] + [1]:
        line.value = bit
        await ClockCycles(clk, cpb)


async def _recv_byte(clk, line, cpb: int, max_wait: int) -> int:
    for _ in range(max_wait):
        await RisingEdge(clk)
        if int(line.value) == 0:
            break
    else:
        raise TimeoutError(f"no start bit within {max_wait} clocks")
    await ClockCycles(clk, cpb // 2)           # middle of the start bit
    assert int(line.value) == 0, "start bit glitch"
    value = 0
    for k in range(8):
        await ClockCycles(clk, cpb)
        value |= int(line.value) << k
    await ClockCycles(clk, cpb)
    assert int(line.value) == 1, "missing stop bit"
    return value


@cocotb.test()
async def uart_board(dut):
    job_path = Path(os.environ["CODESIGN_UART_JOB"])
    job = json.loads(job_path.read_text())
    clk, rx, tx = (getattr(dut, job[k]) for k in ("clk", "rx", "tx"))
    cpb = int(job["clks_per_bit"])
    rx.value = 1
    Clock(clk, 10, unit="ns").start()
    await ClockCycles(clk, 50)
    max_wait = cpb * 10 * 64 + 10_000
    if job.get("junk"):                         # stray bytes / a partial frame: must be dropped
        for b in job["junk"]:
            await _send_byte(clk, rx, b, cpb)
        await ClockCycles(clk, cpb * 10 * 256 + 100)   # past the frame timeout
    replies = []
    for req in job["requests"]:
        for b in req:
            await _send_byte(clk, rx, b, cpb)
        reply = [await _recv_byte(clk, tx, cpb, max_wait)]
        for _ in range(job["reply_len"] - 1):
            reply.append(await _recv_byte(clk, tx, cpb, cpb * 40))
        replies.append(reply)
    job_path.with_suffix(".replies.json").write_text(json.dumps(replies))
