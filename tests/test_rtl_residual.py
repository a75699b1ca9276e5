"""RTL backend: residual Add of two activations (forks, joins, skip FIFOs), in both architectures.

Every generated design is linted (``verilator --lint-only -Wall``) and verified with cocotb + Verilator
(:func:`codesign.verify.verify`) against the golden model: random and corner vectors, random input gaps
and output backpressure, measured latency and II equal to interface.json.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from onnx import helper
from rtl_helpers import (
    assert_ir_matches_golden,
    const,
    lint,
    make_model,
    needs_iverilog,
    needs_verilator,
    quant_node,
    verify_ok,
)

from codesign.errors import UnsupportedError
from codesign.rtl import generate, lower
from codesign.rtl.ir import Linear


@pytest.fixture(scope="module")
def res_models(tmp_path_factory):
    from codesign.rtl.fixtures import rescnn_qonnx, resmlp_qonnx

    d = tmp_path_factory.mktemp("res")
    cache = {}

    def get(name: str):
        if name not in cache:
            p = d / f"{name}.onnx"
            if name == "res1":
                cache[name] = resmlp_qonnx(p, width=8, blocks=1)
            elif name == "res2p_pc":  # two blocks, projection shortcuts, per-channel weight scales
                cache[name] = resmlp_qonnx(p, width=8, blocks=2, projection=True, per_channel=True, seed=1)
            elif name == "rescnn":  # conv residual block + TruncAvgPool2d
                cache[name] = rescnn_qonnx(p, in_shape=(1, 4, 4), channels=4)
            elif name == "rescnn2":  # 2 input channels (input transpose), no pooling
                cache[name] = rescnn_qonnx(p, in_shape=(2, 4, 4), channels=2, avgpool=False, seed=2)
        return cache[name]

    return get


# ---- lowering ----------------------------------------------------------------------------------
def test_lower_residual_mlp(res_models):
    p = res_models("res1")
    m = lower(p)
    assert [ly.kind for ly in m.layers] == ["dense", "dense", "add", "dense"]
    fc1, fc2, add, fc3 = m.layers
    assert not m.is_chain
    assert add.inputs == ("fc2", "")  # the branch output and the network input (the fork)
    assert fc2.requant is None and add.in_fmt == fc2.out_fmt and add.in_fmt2 == m.input_fmt
    # exact alignment onto the finer scale, then the Quant after the Add is fused into it
    assert add.acc_fmt.scale_exp == min(fc2.out_fmt.scale_exp, m.input_fmt.scale_exp)
    assert add.add_shifts() == (0, m.input_fmt.scale_exp - add.acc_fmt.scale_exp)
    assert add.requant is not None and add.out_fmt.bits == 8 and add.out_fmt.signed
    g, x = assert_ir_matches_golden(p, m)
    tr = g.trace((x[:64] * 2.0 ** m.input_fmt.scale_exp).reshape(64, *m.input_shape))
    ours = m.run(x[:64], trace=True)
    for ly in m.layers:
        c, e = tr[ly.onnx_output]
        assert int(np.max(e)) == ly.out_fmt.scale_exp, ly.name
        assert np.array_equal(np.asarray(c).reshape(64, -1), ours[ly.name]), ly.name


@pytest.mark.parametrize("name", ["res2p_pc", "rescnn", "rescnn2"])
def test_lower_residual_matches_golden(res_models, name):
    p = res_models(name)
    m = lower(p)
    adds = [ly for ly in m.layers if ly.kind == "add"]
    assert len(adds) == (2 if name == "res2p_pc" else 1)
    assert_ir_matches_golden(p, m)


# ---- generated designs ------------------------------------------------------------------------
@needs_verilator
@pytest.mark.parametrize("name,kw", [
    ("res1", {}),
    ("res1", {"strategy": "resource", "reuse": 4, "pipeline": 2}),
    ("res1", {"strategy": "resource", "reuse": 32, "pipeline": 3}),          # input-serial folding
    ("res2p_pc", {"pipeline": 2, "debug_taps": True}),
    ("res2p_pc", {"strategy": "resource", "reuse": 4, "pipeline": 1, "axis_slice": True}),
    ("rescnn", {"multiplier": "dsp"}),
    ("rescnn", {"strategy": "resource", "reuse": 16, "pipeline": 2}),
    ("rescnn2", {"pipeline": 0, "axis_slice": True}),
])
def test_residual_rtl_verifies(res_models, tmp_path, name, kw):
    p = res_models(name)
    d = tmp_path / "rtl"
    iface = generate(p, d, **kw)
    assert "cs_fifo.v" in iface["files"]
    lint(d, iface)
    verify_ok(d, p)


def test_skip_fifo_and_latency_of_longest_path(res_models, tmp_path):
    m = lower(res_models("res1"))
    it = generate(m, tmp_path / "lat", pipeline=1)
    lat = {ly["name"]: ly["latency_cycles"] for ly in it["layers"]}
    branch = lat["fc1"] + lat["fc2"]
    assert it["latency_cycles"] == branch + lat["add1"] + lat["fc3"]  # the skip path is shorter
    add = next(ly for ly in it["layers"] if ly["name"] == "add1")
    # the skip (input port 1) waits `branch` cycles: one FIFO entry per vector issued meanwhile (+1)
    assert add["skip_fifo"] == {"input": 1, "depth": branch + 1, "wait_cycles": branch}
    assert add["inputs"] == ["fc2", "input"]
    top = (tmp_path / "lat" / "codesign_top.v").read_text()
    assert f"cs_fifo #(.W(64), .DEPTH({branch + 1}))" in top
    assert "assign s_axis_tready = (fc1_in_ready) && (add1_skip1_s_ready);" in top  # lazy fork
    it = generate(m, tmp_path / "res", strategy="resource", reuse=4, pipeline=2)
    add = next(ly for ly in it["layers"] if ly["name"] == "add1")
    assert it["ii"] == 4 and add["skip_fifo"]["depth"] == -(-add["skip_fifo"]["wait_cycles"] // 4) + 1


def _skip_graph(kind: str):
    """x -> Quant; kind 'same': Add(xq, xq); 'requant': Add(xq, Quant(xq)) (golden test graph); then Quant."""
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    other = "xq"
    if kind == "requant":
        nodes.append(quant_node("xq", "xr", 2.0**-1, 0, 4, 1, 0, "FLOOR", inits, name="requant"))
        other = "xr"
    nodes.append(helper.make_node("Add", ["xq", other], ["s"], name="res"))
    nodes.append(quant_node("s", "y", 2.0**-2, 0, 5, 1, 1, "HALF_UP", inits, name="outq"))
    return make_model(nodes, inits, (1, 6), (1, 6))


@needs_verilator
@pytest.mark.parametrize("kind", ["same", "requant"])
def test_skip_without_layers(tmp_path, kind):
    """Both Add operands straight from the fork (or one through a requant layer): still a FIFO."""
    import onnx

    p = tmp_path / f"{kind}.onnx"
    onnx.save(_skip_graph(kind), str(p))
    m = lower(p)
    assert m.layers[-1].kind == "add" and m.layers[-1].requant is not None
    assert_ir_matches_golden(p, m, n=500)
    d = tmp_path / "rtl"
    iface = generate(m, d)
    lint(d, iface)
    verify_ok(d, p, vectors=2000)


def test_residual_errors(tmp_path):
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-3, 0, 6, 1, 0, "ROUND", inits))
    inits.append(const("W", np.ones((6, 3)) / 8))
    nodes.append(quant_node("W", "Wq", 2.0**-3, 0, 6, 1, 1, "ROUND", inits, name="wq"))
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["h"], name="mm"))
    nodes.append(helper.make_node("Add", ["h", "xq"], ["y"], name="bad_add"))  # (3,) + (6,): broadcast
    with pytest.raises(UnsupportedError, match="bad_add.*shapes"):
        lower(make_model(nodes, inits, (1, 6), (1, 6)))
    # a branch whose result is never used
    nodes[-1] = helper.make_node("Relu", ["xq"], ["y"], name="relu")
    with pytest.raises(UnsupportedError, match="fc1.*not used"):
        lower(make_model(nodes, inits, (1, 6), (1, 6)))


FIFO_TB = """module tb;
    reg clk = 0, rst = 1;
    reg [7:0] sd = 0; reg sv = 0; wire sr; wire [7:0] md; wire mv; reg mr = 0;
    integer seed = 3, cyc = 0, f;
    cs_fifo #(.W(8), .DEPTH({depth})) dut (.clk(clk), .rst(rst), .s_tdata(sd), .s_tvalid(sv), .s_tready(sr),
        .m_tdata(md), .m_tvalid(mv), .m_tready(mr));
    always #5 clk = ~clk;
    initial f = $fopen("fifo.txt", "w");
    always @(posedge clk) begin
        cyc = cyc + 1;
        if (cyc == 3) rst <= 0;
        if (!rst) begin
            if (mv && mr) $fwrite(f, "%0d\\n", md);
            if (sv && sr) sd <= sd + 1;
            if (!sv || sr) sv <= (sd < 250) && (($random(seed) & 3) != 0);
            mr <= ($random(seed) & 1) != 0;
            if (cyc == 3000) begin $fclose(f); $finish; end
        end
    end
endmodule
"""


@needs_iverilog
@pytest.mark.parametrize("depth", [2, 3, 5])
def test_cs_fifo_preserves_order(tmp_path, depth):
    from codesign.resources import hw_dir

    (tmp_path / "tb.v").write_text(FIFO_TB.replace("{depth}", str(depth)))
    subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "tb.v", str(hw_dir() / "cs_fifo.v")], cwd=tmp_path, check=True)
    subprocess.run(["vvp", "-n", "t.vvp"], cwd=tmp_path, check=True, capture_output=True)
    got = [int(v) for v in (tmp_path / "fifo.txt").read_text().split()]
    assert got == list(range(len(got))) and len(got) >= 240


@pytest.mark.needs("yosys")
def test_residual_yosys_parses_fifo_as_memory(res_models, tmp_path):
    from codesign.rtl.synth import cell_counts, yosys_cmd

    d = tmp_path / "rtl"
    iface = generate(res_models("res1"), d, strategy="resource", reuse=4, pipeline=2)
    p = subprocess.run([yosys_cmd(), "-q", "-p", f"read_verilog -sv {' '.join(iface['files'])}; "
                        "hierarchy -check -top codesign_top"], cwd=d, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cells = cell_counts(d, "coarse")
    assert cells.get("$memwr_v2", 0) == 1 and cells.get("$memrd", 0) == 1  # the skip FIFO is one memory


@needs_iverilog
def test_broken_skip_path_is_caught_and_localized(res_models, tmp_path):
    """Flip the LSB of every word leaving the skip FIFO: verify fails and names the join layer."""
    from codesign.verify import verify

    p = res_models("res1")
    d = tmp_path / "rtl"
    generate(p, d, debug_taps=True)
    f = d / "cs_fifo.v"
    text = f.read_text()
    assert "assign m_tdata  = mem[rp];" in text
    f.write_text(text.replace("assign m_tdata  = mem[rp];", "assign m_tdata  = mem[rp] ^ {{(W-1){1'b0}}, 1'b1};"))
    res = verify(d, p, vectors=300, simulator="icarus")
    assert res["mismatches"] > 0
    assert res["localization"]["first_bad_layer"] == "add1"


def test_energy_counts_residual_and_per_channel_layers(res_models):
    """The analytic energy model sees the add (one addition per field) and avgpool layers of a lowered
    graph, and counts per-channel weights on their own (unaligned) codes."""
    from codesign.energy import estimate, from_ir

    for name, kinds in (("res2p_pc", {"add"}), ("rescnn", {"add", "avgpool"})):
        m = lower(res_models(name))
        ops, io_bits = from_ir(m)
        got = {op.kind for op in ops}
        assert kinds <= got, (name, got)
        est = estimate(ops, io_bits=io_bits)
        adds = [le for le in est["layers"] if le["kind"] == "add"]
        assert adds and all(le["adds"] == ly.n_out for le, ly in zip(adds, [ly for ly in m.layers if ly.kind == "add"],
                                                                     strict=True))
        for op, ly in zip([o for o in ops if o.weights is not None], [ly for ly in m.layers if isinstance(ly, Linear)],
                          strict=True):
            if ly.field_shift is not None and np.any(ly.field_shift):
                assert np.abs(op.weights).max() < np.abs(ly.weights).max()  # unaligned codes are narrower
