"""cocotb test module: the Python clock-loop testbench (one falling edge per cycle).

Drives the DUT's AXI-Stream ports directly from Python. Each cycle: at the falling edge drive the
next input beat / tready, then wait for ReadOnly and sample the settled handshake signals, which
decide what transfers at the next rising edge. This is race-free on Verilator and Icarus even when
``s_tready`` depends combinationally on ``m_tready``. Writes the same logs as the HDL wrapper, so
the comparison code is shared.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly


class _Ports:
    """The DUT's clock, reset, AXI-Stream ports and debug taps, by the names in the testbench config."""

    def __init__(self, dut, cfg: dict) -> None:
        self.clk = getattr(dut, cfg["clock"])
        names = ("tdata", "tvalid", "tready")
        self.s_tdata, self.s_tvalid, self.s_tready = (getattr(dut, cfg["in"][k]) for k in names)
        self.m_tdata, self.m_tvalid, self.m_tready = (getattr(dut, cfg["out"][k]) for k in names)
        self.taps = [(getattr(dut, t["tdata"]), getattr(dut, t["tvalid"]), t["hex_digits"], []) for t in cfg["taps"]]
        self.rst = getattr(dut, cfg["reset"]) if cfg.get("reset") else None


def _hex(v, nd: int) -> str:
    try:
        return format(v.to_unsigned(), f"0{nd}x")
    except ValueError:  # x/z on a 4-state simulator
        return "x" * nd


async def _start(p: _Ports, cfg: dict) -> None:
    """Idle inputs, start the clock and hold reset (when there is one) for 8 cycles."""
    p.s_tvalid.value = 0
    p.s_tdata.value = 0
    p.m_tready.value = 1
    if p.rst is not None:
        active = 0 if cfg.get("reset_active_low") else 1
        p.rst.value = active
    Clock(p.clk, 10, unit="ns").start()
    if p.rst is not None:
        for _ in range(8):
            await FallingEdge(p.clk)
        p.rst.value = 1 - active


async def _run(p: _Ports, cfg: dict, vecs: list[int]) -> tuple[list[int], list[str], str]:
    """Drive every input beat and collect the outputs, one falling edge per cycle, until the last expected
    output (plus ``drain`` cycles) or ``idle_limit`` idle cycles. Returns (input log, output log, status)."""
    nd_out = cfg["out_hex_digits"]
    n = len(vecs)  # input beats
    n_out = cfg.get("n_out", n)  # output vectors (io=stream: fewer than input beats)
    stall_from = cfg["stall_from"]
    stalls = stall_from < n  # random gaps / backpressure only in a stall phase
    gap_p, bp_p = cfg["gap"] / 256.0, cfg["bp"] / 256.0
    idle_limit = cfg["idle_limit"]
    rng = random.Random(cfg["seed"])
    s_tdata, s_tvalid, s_tready = p.s_tdata, p.s_tvalid, p.s_tready
    m_tdata, m_tvalid, m_tready = p.m_tdata, p.m_tvalid, p.m_tready
    taps = p.taps

    in_log: list[int] = []
    out_log: list[str] = []
    in_idx = out_idx = idle = 0
    cycle = 0
    valid = 0
    proto_err = 0
    held = None  # tdata of a stalled output beat
    fe = FallingEdge(p.clk)
    ro = ReadOnly()

    drain = cfg.get("drain", 64)
    extra = drained = 0
    while (out_idx < n_out or drained <= drain) and idle <= idle_limit:
        await fe
        # drive the beat for the next rising edge (hold an unaccepted beat)
        if not valid and in_idx < n and not (stalls and in_idx >= stall_from and rng.random() < gap_p):
            valid = 1
            s_tdata.value = vecs[in_idx]
            s_tvalid.value = 1
        elif not valid:
            s_tvalid.value = 0
        ready = 0 if (stalls and in_idx >= stall_from and rng.random() < bp_p) else 1
        m_tready.value = ready
        await ro
        in_fire = valid and str(s_tready.value) == "1"
        out_valid = str(m_tvalid.value) == "1"
        if held is not None and (not out_valid or _hex(m_tdata.value, nd_out) != held):
            proto_err += 1
        if out_valid and ready:
            out_log.append(f"{_hex(m_tdata.value, nd_out)} {cycle:016x}\n")
            extra += out_idx >= n_out  # a beat after the last expected vector
            out_idx += 1
            idle = 0
            held = None
        else:
            idle += 1
            held = _hex(m_tdata.value, nd_out) if out_valid else None
        for td, tv, nd, log in taps:
            if str(tv.value) == "1":
                log.append(_hex(td.value, nd) + "\n")
        drained += out_idx >= n_out  # keep watching the output after the last expected vector
        if in_fire:
            in_log.append(cycle)
            in_idx += 1
            valid = 0
        cycle += 1

    status = (f"in {in_idx}\nout {out_idx}\ncycles {cycle}\nproto_err {proto_err}\nfirst_proto_err -1\n"
              f"timeout {int(out_idx < n_out)}\nextra {extra}\nfinished 1\n")
    return in_log, out_log, status


@cocotb.test()
async def loop(dut) -> None:
    # internal transport from codesign.verify.sim.run into the simulator process (see tb_stream.py)
    cfg = json.loads(Path(os.environ["CODESIGN_TB_CONFIG"]).read_text())
    work = Path(cfg["work"])
    t0 = time.perf_counter()
    vecs = [int(line, 16) for line in Path(cfg["in_file"]).read_text().split()]
    p = _Ports(dut, cfg)
    await _start(p, cfg)
    in_log, out_log, status = await _run(p, cfg, vecs)

    run_s = time.perf_counter() - t0
    (work / "out.txt").write_text("".join(out_log))
    (work / "inlog.txt").write_text("".join(f"{c:016x}\n" for c in in_log))
    for k, (_, _, _, log) in enumerate(p.taps):
        (work / f"tap{k}.txt").write_text("".join(log))
    (work / "status.txt").write_text(status)
    (work / "tb_result.json").write_text(json.dumps({"run_s": run_s}))
