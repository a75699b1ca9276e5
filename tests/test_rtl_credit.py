"""RTL flow_control 'credit': valid-only pipeline of fully parallel layers, output FIFO, credit ready.

The generated design is linted and verified (cocotb + Verilator, random input gaps and output
backpressure, latency and II as declared); the default ('stall') RTL is byte-identical to what the
emitter wrote before the option existed; ``hw/cs_credit_fifo.v`` is checked on its own (Icarus): a FIFO
of LATENCY + 2 entries keeps II 1 behind a LATENCY-cycle pipeline and never overflows.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from rtl_helpers import lint, needs_iverilog, needs_verilator, verify_ok

from codesign.config import RTLConfig
from codesign.errors import UnsupportedError
from codesign.rtl import generate

# SHA-256 of the default RTL (every .v file and interface.json, in file order) of mlp_qonnx((16, 8, 4),
# "pot", seed 0) at pipeline 2, as the emitter wrote it before flow_control existed (commit d8fa6da).
STALL_SHA256 = "61d31410bf87833d208b5bd570afe42e0d39a8dfe238007f456b2d8c9cd58dcd"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> Path:
    from codesign.rtl.fixtures import mlp_qonnx

    return mlp_qonnx(tmp_path_factory.mktemp("credit") / "mlp.onnx", (16, 8, 4), "pot", seed=0)


def _digest(d: Path, iface: dict) -> str:
    h = hashlib.sha256()
    for f in [*iface["files"], "interface.json"]:
        h.update(f.encode() + b"\0" + (d / f).read_bytes() + b"\0")
    return h.hexdigest()


def test_default_stall_rtl_unchanged(mlp, tmp_path):
    it = generate(mlp, tmp_path / "a", pipeline=2, onnx_rel="model.onnx")
    assert _digest(tmp_path / "a", it) == STALL_SHA256
    it2 = generate(mlp, tmp_path / "b", pipeline=2, flow_control="stall", onnx_rel="model.onnx")
    assert _digest(tmp_path / "b", it2) == STALL_SHA256 and "flow_control" not in it2


def test_credit_structure(mlp, tmp_path):
    stall = generate(mlp, tmp_path / "s", pipeline=2)
    it = generate(mlp, tmp_path / "c", pipeline=2, flow_control="credit")
    pipe = sum(la["latency_cycles"] for la in it["layers"])
    assert pipe == stall["latency_cycles"] and it["latency_cycles"] == pipe + 1  # + the output FIFO
    assert it["ii"] == 1 and it["flow_control"] == "credit"
    assert it["files"][0] == "cs_credit_fifo.v" and "cs_fifo.v" not in it["files"]
    top = (tmp_path / "c" / "codesign_top.v").read_text()
    assert "cs_credit_fifo #(.W(" in top and f".LATENCY({pipe}))" in top
    for la in it["layers"]:  # no register of a layer has an enable
        text = (tmp_path / "c" / f"{la['name']}.v").read_text()
        assert "if (en)" not in text and "wire en" not in text and "assign in_ready = 1'b1;" in text


@needs_verilator
@pytest.mark.parametrize("pipeline", [0, 3])
def test_credit_verifies_under_backpressure(mlp, tmp_path, pipeline):
    d = tmp_path / "rtl"
    it = generate(mlp, d, pipeline=pipeline, flow_control="credit")
    lint(d, it)
    res = verify_ok(d, mlp, vectors=1500)  # the second half: input gaps and output backpressure
    assert res["backpressure"]["enabled"] and res["latency_cycles"]["measured_max"] == it["latency_cycles"]


@needs_verilator
@pytest.mark.parametrize("flow", ["stall", "credit"])
def test_deep_pipeline_requant_stages_and_register_copies(mlp, tmp_path, flow):
    """``pipeline`` beyond one register per adder level goes into the requantizers (hw/cs_requant_piped.v,
    up to 2 stages); ``copies`` registers every signal that several outputs read once per group of
    outputs ((* keep *): synthesis would merge the twins). Lint-clean, 0 mismatches under backpressure,
    latency as declared."""
    base = generate(mlp, tmp_path / "p", pipeline=20, flow_control=flow)  # deeper than any tree here
    one = generate(mlp, tmp_path / "q", pipeline=1, flow_control=flow)
    fc1 = (tmp_path / "p" / "fc1.v").read_text()
    assert "cs_requant_piped" in fc1 and ".STAGES(2)" in fc1 and "cs_requant_piped.v" in base["files"]
    assert base["layers"][0]["latency_cycles"] > one["layers"][0]["latency_cycles"] + 2
    d = tmp_path / "c"
    it = generate(mlp, d, pipeline=20, copies=3, flow_control=flow)
    assert it["latency_cycles"] == base["latency_cycles"]
    text = (d / "fc1.v").read_text()
    assert "(* keep *) always" in text and "_d0g2 <=" in text and "_d0g1 <=" in text
    assert text.count("always") > fc1.count("always")
    lint(d, it)
    res = verify_ok(d, mlp, vectors=1500)
    assert res["latency_cycles"]["measured_max"] == it["latency_cycles"]


def test_credit_needs_fully_parallel_chain():
    with pytest.raises(ValidationError, match="credit"):
        RTLConfig(strategy="resource", reuse=2, flow_control="credit")
    with pytest.raises(ValidationError, match="credit"):
        RTLConfig(io="stream", flow_control="credit")
    assert RTLConfig().flow_control == "stall"
    assert issubclass(UnsupportedError, Exception)  # forks/joins are refused by build_vector (see docs)


CREDIT_TB = """
`timescale 1ns/1ps
module tb;
    localparam integer L = %(lat)d;
    reg clk = 0, rst = 1;
    always #1 clk = ~clk;
    reg  [15:0] next_in = 0;
    reg         in_valid = 0;
    wire        s_tready;
    wire        take = in_valid && s_tready;
    reg  [15:0] pd [0:L];   // a LATENCY-cycle delay line stands for the valid-only pipeline
    reg  [L:0]  pv;
    integer i;
    always @(posedge clk) begin
        pd[0] <= next_in; pv[0] <= take && !rst;
        for (i = 1; i <= L; i = i + 1) begin pd[i] <= pd[i-1]; pv[i] <= pv[i-1]; end
    end
    wire [15:0] p_tdata = (L == 0) ? next_in : pd[L-1];
    wire        p_tvalid = (L == 0) ? (take && !rst) : pv[L-1];
    wire [15:0] m_tdata;
    wire        m_tvalid;
    reg         m_tready = 1;
    cs_credit_fifo #(.W(16), .LATENCY(L)) dut (.clk(clk), .rst(rst), .s_tready(s_tready), .p_take(take),
        .p_tdata(p_tdata), .p_tvalid(p_tvalid), .m_tdata(m_tdata), .m_tvalid(m_tvalid), .m_tready(m_tready));
    integer cyc = 0, taken = 0, stalls = 0, nout = 0, errors = 0, f;
    always @(posedge clk) if (!rst) begin
        cyc <= cyc + 1;
        if (take) begin next_in <= next_in + 1; taken <= taken + 1; end
        if (in_valid && !s_tready && cyc >= 4 && cyc < 200) stalls <= stalls + 1;
        if (m_tvalid && m_tready) begin
            if (m_tdata != nout[15:0]) errors <= errors + 1;
            nout <= nout + 1;
        end
    end
    initial begin
        f = $fopen("credit.txt", "w");
        repeat (3) @(posedge clk);
        rst <= 0; in_valid <= 1;
        repeat (200) @(posedge clk);          // phase 1: consumer always ready
        $fwrite(f, "%%0d ", stalls);
        m_tready <= 0;                         // phase 2: consumer stops
        repeat (60) @(posedge clk);
        $fwrite(f, "%%0d ", taken - nout);   // beats held (in flight + stored) = credits
        m_tready <= 1;                         // phase 3: random backpressure, all beats come out in order
        repeat (400) begin @(posedge clk); m_tready <= $random; in_valid <= $random; end
        in_valid <= 0; m_tready <= 1;
        repeat (L + 10) @(posedge clk);
        $fwrite(f, "%%0d %%0d %%0d\\n", errors, taken, nout);
        $fclose(f);
        $finish;
    end
endmodule
"""


@needs_iverilog
@pytest.mark.parametrize("lat", [0, 1, 5, 12, 21])
def test_credit_fifo_depth_is_latency_plus_two(tmp_path, lat):
    """Behind a LATENCY-cycle pipeline: II 1 while the consumer is ready (no stall after the first
    cycles), exactly DEPTH = LATENCY + 2 beats taken while it is not, and every beat out in order."""
    from codesign.resources import hw_dir

    (tmp_path / "tb.v").write_text(CREDIT_TB % {"lat": lat})
    subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "tb.v", str(hw_dir() / "cs_credit_fifo.v")],
                   cwd=tmp_path, check=True)
    subprocess.run(["vvp", "-n", "t.vvp"], cwd=tmp_path, check=True, capture_output=True)
    stalls, held, errors, taken, out = (int(v) for v in (tmp_path / "credit.txt").read_text().split())
    assert stalls == 0 and held == lat + 2 and errors == 0 and taken == out > 250


def test_bench_pipeline_configs_and_table(capsys, tmp_path):
    from bench.common import Ctx
    from bench.pipeline import configs, render

    assert configs("stall:5,credit:8,credit:10x4") == [("stall", 5, 1), ("credit", 8, 1), ("credit", 10, 4)]
    with pytest.raises(ValueError, match="skid"):
        configs("skid:3")
    ctx = Ctx(runs=tmp_path, write_doc=False, command="python -m bench pipeline")
    render(ctx, [{"model": "m", "flow_control": "credit", "pipeline": 8, "luts": 10, "ffs": 20, "latency": 18,
                  "mismatches": 0, "fmax": {"1": 120.0, "2": 130.0, "3": 125.0}}])
    out = capsys.readouterr().out
    assert "| m | credit | 8 | 1 | 10 | 20 | 120.0 / 130.0 / 125.0 | 125 | 18 | 0 |" in out
