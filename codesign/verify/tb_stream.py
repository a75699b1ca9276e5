"""cocotb test module for the HDL streaming wrapper (``codesign.verify.wrapper``).

Everything per cycle happens in the simulator; Python starts the clock (unless the wrapper makes
its own), waits for ``done`` and records the wall time of the run. Settings come from the JSON file
named by the ``CODESIGN_TB_CONFIG`` environment variable; results go to ``<work>/tb_result.json``.
``CODESIGN_TB_CONFIG`` is internal: :func:`codesign.verify.sim.run` sets it for the simulator process it
starts (cocotb imports this module inside the simulator, so a file path in the environment is the
way in); users set ``verify:`` config keys instead.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


@cocotb.test()
async def stream(dut) -> None:
    cfg = json.loads(Path(os.environ["CODESIGN_TB_CONFIG"]).read_text())
    t0 = time.perf_counter()
    if not cfg.get("hdl_clock"):
        Clock(dut.clk, 10, unit="ns").start()
    if not int(dut.done.value):
        await RisingEdge(dut.done)
    run_s = time.perf_counter() - t0
    sim_time_ns = int(cocotb.sim_time_ns()) if hasattr(cocotb, "sim_time_ns") else None
    res = {"run_s": run_s, "sim_time_ns": sim_time_ns}
    Path(cfg["work"], "tb_result.json").write_text(json.dumps(res))
