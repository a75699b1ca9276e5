"""RTL stage: IR lowering, Verilog emitter (latency/resource, dense/conv/pool), library modules.

Fast tests use Icarus (HDL-side streaming testbench) and Verilator lint; synthesis checks use yosys
word-level (``coarse``) statistics; the full ECP5 synthesis comparisons are marked slow.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from codesign.errors import UnsupportedError
from codesign.rtl import generate, lower
from codesign.rtl.emit.netlist import csd
from codesign.rtl.ir import ROUNDING_MODES, FixedFormat, Requant, shift_round
from codesign.verify import run_codes, tool_env

needs_iverilog = pytest.mark.needs("iverilog")
needs_verilator = pytest.mark.needs("verilator")
needs_yosys = pytest.mark.needs("yosys")


# ---- fixtures: tiny Brevitas models exported to cleaned QONNX (session-scoped, ~4 s each) -----------
@pytest.fixture(scope="session")
def models(tmp_path_factory):
    from codesign.rtl.fixtures import cnn_qonnx, mlp_qonnx

    d = tmp_path_factory.mktemp("qonnx")
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            p = d / f"{name}.onnx"
            if name == "mlp":
                cache[name] = mlp_qonnx(p, (64, 32, 10), "fixed")
            elif name == "mlp_pot":
                cache[name] = mlp_qonnx(p, (64, 32, 10), "pot")
            elif name == "mlp_pot_sparse":
                cache[name] = mlp_qonnx(p, (64, 32, 10), "pot", zero_frac=0.5)
            elif name == "cnn2d":
                cache[name] = cnn_qonnx(p, in_shape=(1, 6, 6), channels=4)
            elif name == "cnn1d":
                cache[name] = cnn_qonnx(p, in_shape=(2, 12), channels=3, dims=1, stride=2)
        return cache[name]

    return get


def _codes(m, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(m.input_fmt.lo, m.input_fmt.hi + 1, size=(n, int(np.prod(m.input_shape))))


def _lint(d, iface):
    p = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", iface["top"], *iface["files"]],
                       cwd=d, env=tool_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]


# ---- integer reference ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_shift_round_matches_qonnx_rounding(mode):
    from codesign.rtl.frontend.consts import ROUND_FNS as _ROUND_FNS

    a = np.arange(-600, 600, dtype=np.int64)
    for sh in range(0, 6):
        got = shift_round(a, sh, mode)
        want = _ROUND_FNS[mode](a / 2.0**sh).astype(np.int64)
        assert np.array_equal(got, want), (mode, sh)


def test_csd_digits():
    for w in range(-300, 301):
        d = csd(w)
        assert sum(s << k for s, k in d) == w
        ks = [k for _, k in d]
        assert all(b - a >= 2 for a, b in zip(ks, ks[1:], strict=False))  # non-adjacent form


def test_lower_mlp_formats_and_qonnx_agreement(models):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    p = models("mlp")
    m = lower(p)
    assert [ly.kind for ly in m.layers] == ["dense", "dense"]
    fc1, fc2 = m.layers
    assert m.input_fmt == FixedFormat(8, True, -7, False)
    assert fc1.requant is not None and fc1.requant.relu and fc1.requant.rounding == "ROUND"
    assert fc1.out_fmt.bits == 8 and not fc1.out_fmt.signed
    assert fc2.requant is None and fc2.out_fmt == fc2.acc_fmt
    assert fc2.acc_fmt.scale_exp == fc1.out_fmt.scale_exp + fc2.w_scale_exp
    assert not fc1.pot
    mw = ModelWrapper(str(p))
    x = _codes(m, 10, seed=3)
    ref = m.run(x)
    for k in range(len(x)):
        real = (x[k:k + 1] * 2.0**m.input_fmt.scale_exp).astype(np.float32)
        o = execute_onnx(mw, {m.input_name: real})[m.output_name]
        np.testing.assert_allclose(o.ravel(), ref[k] * 2.0**m.output_fmt.scale_exp, rtol=0, atol=1e-6)


def test_pot_flag_checked_on_values(models):
    m = lower(models("mlp_pot"))
    assert all(ly.pot for ly in m.layers)
    w = m.layers[0].weights.copy()
    w[0, 0] = 3  # not a power of two any more
    assert not m.layers[0].replace(weights=w).pot


def test_unsupported_op_names_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("s", 2**-7), ("z", 0.0), ("b", 8.0))]
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], domain="qonnx.custom_op.general", name="in_q",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Softmax", ["q"], ["sm"], name="my_softmax"),
             helper.make_node("Quant", ["sm", "s", "z", "b"], ["y"], domain="qonnx.custom_op.general", name="out_q",
                              signed=1, narrow=0, rounding_mode="ROUND")]
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    with pytest.raises(UnsupportedError, match="my_softmax.*Softmax"):  # not elementwise: no thresholds
        lower(helper.make_model(g))
    # a float op at the end is host post-processing; a non power-of-two input scale a float-scaled input
    inits[0] = helper.make_tensor("s", TensorProto.FLOAT, [], [0.3])
    nodes[1:] = [helper.make_node("Sigmoid", ["q"], ["y"], name="sig")]
    m = lower(helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits)))
    assert m.host_post and not m.layers and m.input_fmt.scale == pytest.approx(0.3)


# ---- library modules ------------------------------------------------------------------------------
REQ_TB = """module tb;
    reg signed [{w}-1:0] a;
    wire [{ow}-1:0] q;
    integer i, f;
    cs_requant #(.IN_W({w}), .OUT_W({ow}), .OUT_SIGNED({sg}), .NARROW({nw}), .SHIFT({sh}), .MODE({md}), .RELU({rl}))
        dut (.acc(a), .q(q));
    initial begin
        f = $fopen("req.txt", "w");
        for (i = -(1 << ({w} - 1)); i < (1 << ({w} - 1)); i = i + 1) begin
            a = i; #1; $fwrite(f, "%0d\\n", q);
        end
        $fclose(f); $finish;
    end
endmodule
"""


@needs_iverilog
def test_cs_requant_exhaustive(tmp_path):
    from codesign.resources import hw_dir
    from codesign.rtl.emit.module import MODE_CODES

    cases = [(10, 4, s, n, sh, mode, r) for mode in ROUNDING_MODES for (s, n, sh, r) in
             ((0, 0, 3, 1), (1, 1, 2, 0), (1, 0, 1, 1), (0, 1, 4, 0))]
    cases += [(6, 8, 1, 0, -2, "ROUND", 0), (6, 3, 1, 0, 0, "FLOOR", 0), (5, 3, 0, 0, 7, "ROUND", 0)]
    for k, (w, ow, sg, nw, sh, mode, rl) in enumerate(cases):
        d = tmp_path / f"c{k}"
        d.mkdir()
        (d / "tb.v").write_text(REQ_TB.format(w=w, ow=ow, sg=sg, nw=nw, sh=sh, md=MODE_CODES[mode], rl=rl))
        subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "tb.v", str(hw_dir() / "cs_requant.v")], cwd=d, check=True)
        subprocess.run(["vvp", "-n", "t.vvp"], cwd=d, check=True, capture_output=True)
        got = np.array([int(v) for v in (d / "req.txt").read_text().split()])
        if sg:
            got = np.where(got >= 1 << (ow - 1), got - (1 << ow), got)
        rq = Requant(sh, mode, bool(rl), FixedFormat(ow, bool(sg), 0, bool(nw)))
        want = rq.apply(np.arange(-(1 << (w - 1)), 1 << (w - 1)))
        assert np.array_equal(got, want), (w, ow, sg, nw, sh, mode, rl)


REQ_PIPED_TB = """module tb;
    reg clk = 0, en = 0;
    reg signed [{w}-1:0] a = 0;
    wire [{ow}-1:0] q;
    integer i, f, seed = 3;
    cs_requant_piped #(.IN_W({w}), .OUT_W({ow}), .OUT_SIGNED({sg}), .NARROW({nw}), .SHIFT({sh}), .MODE({md}),
        .RELU({rl}), .STAGES({st})) dut (.clk(clk), .en(en), .acc(a), .q(q));
    initial begin
        f = $fopen("req.txt", "w");
        for (i = -(1 << ({w} - 1)); i < (1 << ({w} - 1)) + 8; i = i + 1) begin
            a = i; en = ($random(seed) & 3) != 0; #1 clk = 1; #1 clk = 0;
            $fwrite(f, "%0d %0d %0d\\n", i, en, q);
        end
        $fclose(f); $finish;
    end
endmodule
"""


@needs_iverilog
def test_cs_requant_piped_matches_the_combinational_one(tmp_path):
    """hw/cs_requant_piped.v (requantizer cut by 1 or 2 registers for deep pipelines) = Requant.apply on every
    accumulator value, with the enable low on random cycles (the registers hold)."""
    from codesign.resources import hw_dir
    from codesign.rtl.emit.module import MODE_CODES

    cases = [(10, 4, 0, 0, 3, "ROUND", 1, 1), (10, 4, 1, 1, 2, "HALF_UP", 0, 2), (10, 4, 1, 0, 1, "FLOOR", 1, 2),
             (9, 4, 0, 1, 4, "CEIL", 0, 1), (6, 8, 1, 0, -2, "ROUND", 0, 2), (5, 3, 0, 0, 7, "ROUND", 0, 2),
             (10, 5, 1, 0, 4, "ROUND_TO_ZERO", 0, 2)]
    for k, (w, ow, sg, nw, sh, mode, rl, st) in enumerate(cases):
        d = tmp_path / f"c{k}"
        d.mkdir()
        (d / "tb.v").write_text(REQ_PIPED_TB.format(w=w, ow=ow, sg=sg, nw=nw, sh=sh, md=MODE_CODES[mode], rl=rl,
                                                    st=st))
        subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "tb.v", str(hw_dir() / "cs_requant_piped.v"),
                        str(hw_dir() / "cs_requant.v")], cwd=d, check=True)
        subprocess.run(["vvp", "-n", "t.vvp"], cwd=d, check=True, capture_output=True)
        rq = Requant(sh, mode, bool(rl), FixedFormat(ow, bool(sg), 0, bool(nw)))
        pipe: list[int | None] = [None] * st  # the values in the registers, newest first
        checked = 0
        for line in (d / "req.txt").read_text().split("\n"):
            if not line:
                continue
            a, en, qs = line.split()
            if int(en):  # (the last cycles' values wrap around)
                pipe = [(int(a) + (1 << (w - 1))) % (1 << w) - (1 << (w - 1))] + pipe[:-1]
            if pipe[-1] is None:  # not filled yet (q is x)
                continue
            q = int(qs)
            if sg and q >= 1 << (ow - 1):
                q -= 1 << ow
            assert q == int(rq.apply(np.array([pipe[-1]]))[0]), (k, pipe[-1], q)
            checked += 1
        assert checked >= (1 << w) * 3 // 4, checked  # (the enable is high 3 cycles in 4)


SKID_TB = """module tb;
    reg clk = 0, rst = 1;
    reg [7:0] sd = 0; reg sv = 0; wire sr; wire [7:0] md; wire mv; reg mr = 0;
    integer seed = 5, cyc = 0, f;
    cs_skid_buffer #(.W(8)) dut (.clk(clk), .rst(rst), .s_tdata(sd), .s_tvalid(sv), .s_tready(sr),
        .m_tdata(md), .m_tvalid(mv), .m_tready(mr));
    always #5 clk = ~clk;
    initial f = $fopen("skid.txt", "w");
    always @(posedge clk) begin
        cyc = cyc + 1;
        if (cyc == 3) rst <= 0;
        if (!rst) begin
            if (mv && mr) $fwrite(f, "%0d\\n", md);
            if (sv && sr) sd <= sd + 1;
            if (!sv || sr) sv <= (sd < 200) && (($random(seed) & 1) != 0);
            mr <= ($random(seed) & 3) != 0;
            if (cyc == 2000) begin $fclose(f); $finish; end
        end
    end
endmodule
"""


@needs_iverilog
def test_skid_buffer_preserves_order(tmp_path):
    from codesign.resources import hw_dir

    (tmp_path / "tb.v").write_text(SKID_TB)
    subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "tb.v", str(hw_dir() / "cs_skid_buffer.v")], cwd=tmp_path,
                   check=True)
    subprocess.run(["vvp", "-n", "t.vvp"], cwd=tmp_path, check=True, capture_output=True)
    got = [int(v) for v in (tmp_path / "skid.txt").read_text().split()]
    assert got == list(range(len(got))) and len(got) > 150


# ---- generated designs ----------------------------------------------------------------------------
def test_interface_json_schema(models, tmp_path):
    iface = generate(models("mlp"), tmp_path / "rtl", debug_taps=True)
    on_disk = json.loads((tmp_path / "rtl" / "interface.json").read_text())
    assert on_disk == iface
    for key in ("top", "files", "clock", "reset", "reset_active_low", "input", "output", "latency_cycles", "ii",
                "strategy", "reuse", "onnx", "layers"):
        assert key in iface
    assert iface["top"] == "codesign_top" and iface["clock"] == "clk" and iface["reset"] == "rst"
    assert iface["input"] == {"tdata": "s_axis_tdata", "tvalid": "s_axis_tvalid", "tready": "s_axis_tready",
                              "fields": 64, "bits": 8, "signed": True, "scale_exp": -7, "shape": [64]}
    assert iface["output"]["fields"] == 10 and iface["output"]["signed"]
    assert iface["files"][-1] == "codesign_top.v"
    for f in iface["files"]:
        assert (tmp_path / "rtl" / f).exists()
    assert [ly["name"] for ly in iface["layers"]] == ["fc1", "fc2"]
    assert iface["layers"][0]["tap"] == {"tdata": "dbg_fc1_tdata", "tvalid": "dbg_fc1_tvalid"}
    assert iface["layers"][0]["bits"] == 8 and iface["layers"][0]["signed"] is False
    text = (tmp_path / "rtl" / "fc1.v").read_text()
    assert text.startswith("// fc1: dense layer") and "arch" in text.split("module")[0]


@needs_verilator
@pytest.mark.parametrize("name,kw", [("mlp", {}), ("mlp", {"strategy": "resource", "reuse": 5, "multiplier": "dsp"}),
                                     ("mlp_pot", {"multiplier": "dsp", "pipeline": 2, "axis_slice": True}),
                                     ("cnn2d", {"debug_taps": True}), ("cnn1d", {"strategy": "resource", "reuse": 4})])
def test_lint_clean(models, tmp_path, name, kw):
    d = tmp_path / "rtl"
    iface = generate(models(name), d, **kw)
    _lint(d, iface)


@needs_yosys
def test_yosys_parses(models, tmp_path):
    from codesign.rtl.synth import yosys_cmd

    d = tmp_path / "rtl"
    iface = generate(models("cnn2d"), d, strategy="resource", reuse=4, debug_taps=True)
    script = f"read_verilog -sv {' '.join(iface['files'])}; hierarchy -check -top codesign_top"
    p = subprocess.run([yosys_cmd(), "-q", "-p", script], cwd=d, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@needs_iverilog
def test_sim_digits_mlp_latency(models, tmp_path):
    m = lower(models("mlp"))
    x = _codes(m, 300)
    iface = generate(m, tmp_path / "rtl", pipeline=1)
    out, st = run_codes(tmp_path / "rtl", x, backpressure=True)
    assert np.array_equal(out, m.run(x))
    out, st = run_codes(tmp_path / "rtl", x[:20], backpressure=False, work=tmp_path / "nobp")
    assert np.array_equal(out, m.run(x[:20]))
    assert st["latency"] == iface["latency_cycles"] and st["ii"] == iface["ii"] == 1


@needs_iverilog
@pytest.mark.parametrize("name,kw", [("mlp_pot_sparse", {"strategy": "resource", "reuse": 6}),
                                     ("mlp", {"multiplier": "dsp", "pipeline": 0}),
                                     ("cnn2d", {"pipeline": 2, "axis_slice": True}),
                                     ("cnn1d", {"strategy": "resource", "reuse": 3, "multiplier": "dsp"})])
def test_sim_architectures(models, tmp_path, name, kw):
    m = lower(models(name))
    x = _codes(m, 120, seed=7)
    iface = generate(m, tmp_path / "rtl", **kw)
    out, _ = run_codes(tmp_path / "rtl", x, backpressure=True)
    assert np.array_equal(out, m.run(x))
    out, st = run_codes(tmp_path / "rtl", x[:24], backpressure=False, work=tmp_path / "nobp")
    assert np.array_equal(out, m.run(x[:24]))
    assert st["latency"] == iface["latency_cycles"]
    assert st["ii"] == iface["ii"]


@needs_iverilog
def test_debug_taps_match_layer_outputs(models, tmp_path):
    m = lower(models("cnn2d"))
    x = _codes(m, 40, seed=11)
    generate(m, tmp_path / "rtl", debug_taps=True, strategy="resource", reuse=4)
    out, st = run_codes(tmp_path / "rtl", x, backpressure=True)
    trace = m.run(x, trace=True)
    assert set(st["taps"]) == {"conv1", "pool1", "fc1"}
    for name, got in st["taps"].items():
        assert len(got) >= len(x) - 2
        assert np.array_equal(got, trace[name][:len(got)]), name


def test_zero_weights_generate_no_terms(models, tmp_path):
    m = lower(models("mlp_pot"))
    d1 = tmp_path / "full"
    generate(m, d1, share=False)  # one tree per output: every term is named after its input and output
    ly = m.layers[0]
    zeroed = [(0, 0), (5, 3), (63, 31)]
    for i, j in zeroed:
        ly.weights[i, j] = 0
    d2 = tmp_path / "sparse"
    generate(m, d2, share=False)
    t1, t2 = ((d / "fc1.v").read_text() for d in (d1, d2))
    for i, j in zeroed:
        assert f"n{j}_t{i}p" in t1 or f"n{j}_t{i}n" in t1
        assert f"n{j}_t{i}p" not in t2 and f"n{j}_t{i}n" not in t2


@needs_yosys
def test_pot_no_multipliers_and_zero_weights_fewer_cells(models, tmp_path):
    from codesign.rtl.synth import cell_counts

    m = lower(models("mlp_pot"))
    d1 = tmp_path / "pot"
    generate(m, d1)
    c1 = cell_counts(d1, "coarse")
    assert c1.get("$mul", 0) == 0
    rng = np.random.default_rng(0)
    for ly in m.layers:
        ly.weights[rng.random(ly.weights.shape) < 0.3] = 0
    d2 = tmp_path / "pot_sparse"
    generate(m, d2)
    c2 = cell_counts(d2, "coarse")
    assert c2.get("$mul", 0) == 0
    d3 = tmp_path / "pot_folded"
    generate(m, d3, strategy="resource", reuse=8)  # ROMs of (zero, sign, exponent): barrel shifts
    assert cell_counts(d3, "coarse").get("$mul", 0) == 0
    add1 = c1.get("$add", 0) + c1.get("$sub", 0)
    add2 = c2.get("$add", 0) + c2.get("$sub", 0)
    assert add2 < add1
    assert sum(c2.values()) <= sum(c1.values())


@needs_yosys
@pytest.mark.slow
def test_ecp5_pot_vs_fixed_cells(models, tmp_path):
    from codesign.rtl.synth import cell_counts

    res = {}
    for name in ("mlp_pot", "mlp"):
        d = tmp_path / name
        generate(models(name), d)
        res[name] = cell_counts(d, "ecp5")
    assert res["mlp_pot"].get("MULT18X18D", 0) == 0
    assert res["mlp"].get("MULT18X18D", 0) == 0  # shift-add: no DSPs either
    # LUT4 equivalents: a CCU2C carry cell holds two LUT4s
    lut = {k: v.get("LUT4", 0) + 2 * v.get("CCU2C", 0) for k, v in res.items()}
    assert lut["mlp_pot"] < lut["mlp"]


def test_run_stage(models, tmp_path):
    from codesign import config
    from codesign.rtl import run_stage
    from codesign.run import RunDir

    rd = RunDir(tmp_path / "run")
    (rd.stage_dir("export") / "model.onnx").write_bytes(onnx.load(str(models("mlp"))).SerializeToString())
    cfg = config.load("digits_mlp", {"rtl.pipeline": 2, "rtl.strategy": "latency", "rtl.reuse": 1})
    figs = run_stage(rd, cfg)
    assert figs == {"rtl.strategy": "latency", "rtl.reuse": 1, "rtl.latency_cycles": 6, "rtl.ii": 1}
    rep = rd.report()["rtl"]
    assert rep["latency_cycles"] == 6 and rep["strategy"] == "latency"
    iface = json.loads((rd.root / "rtl" / "interface.json").read_text())
    assert iface["onnx"] == "../export/model.onnx"
    assert "rtl/codesign_top.v" in rd.manifest()["files"]


@pytest.mark.parametrize("name", ["mlp", "cnn2d", "cnn1d"])
def test_ir_agrees_with_golden_model(models, name):
    """Cross-check with the independent golden model (codes of the output and of every layer tap)."""
    from codesign import golden
    p = models(name)
    m = lower(p)
    g = golden.GoldenModel(str(p))
    x = _codes(m, 64, seed=5)
    real = (x * 2.0**m.input_fmt.scale_exp).reshape(len(x), *m.input_shape)
    out, e = g.run_codes(x.reshape(len(x), *m.input_shape))
    assert int(np.max(e)) == m.output_fmt.scale_exp
    assert np.array_equal(np.asarray(out).reshape(len(x), -1), m.run(x))
    tr = g.trace(real)
    ours = m.run(x, trace=True)
    for ly in m.layers:
        if ly.is_wiring:
            continue
        codes, exp = tr[ly.onnx_output]
        assert int(np.max(exp)) == ly.out_fmt.scale_exp, ly.name
        assert np.array_equal(np.asarray(codes).reshape(len(x), -1), ours[ly.name]), ly.name


def test_raw_brevitas_graph_with_gemm_lowers_identically(models):
    p = models("mlp")
    raw = p.with_name(p.stem + "_raw.onnx")
    m_clean, m_raw = lower(p), lower(raw)
    x = _codes(m_clean, 50, seed=9)
    assert np.array_equal(m_clean.run(x), m_raw.run(x))
    assert [ly.kind for ly in m_raw.layers] == ["dense", "dense"]


def _hand_model(seed=0, n_in=12, n_out=6, rounding="HALF_UP", signed_out=True, narrow=True):
    """A hand-built IR: a dense layer with an all-zero output column (bias only), an all-zero
    output column without bias (constant 0), an unused input, then a second dense layer."""
    from codesign.rtl.frontend.lower import sized
    from codesign.rtl.ir import Dense, Model

    rng = np.random.default_rng(seed)
    fin = FixedFormat(6, True, -5)
    w = rng.integers(-20, 21, size=(n_in, n_out))
    w[:, 0] = 0
    w[:, 1] = 0
    w[3, :] = 0
    b = rng.integers(-300, 300, size=n_out)
    b[1] = 0
    out = FixedFormat(5, signed_out, -4, narrow)
    l1 = sized(Dense(name="fc1", in_shape=(n_in,), out_shape=(n_out,), in_fmt=fin, out_fmt=fin, onnx_output="t1",
                     weights=w, bias=b, w_scale_exp=-6, acc_fmt=FixedFormat(1, True, -11)))
    l1 = l1.replace(requant=Requant(out.scale_exp - l1.acc_fmt.scale_exp, rounding, False, out), out_fmt=out)
    w2 = rng.integers(-3, 4, size=(n_out, 3))
    l2 = sized(Dense(name="fc2", in_shape=(n_out,), out_shape=(3,), in_fmt=out, out_fmt=out, onnx_output="t2",
                     weights=w2, bias=None, w_scale_exp=0, acc_fmt=FixedFormat(1, True, -4)))
    return Model("hand", "x", (n_in,), fin, (l1, l2.replace(out_fmt=l2.acc_fmt)), "t2")


@needs_iverilog
@needs_verilator
@pytest.mark.parametrize("kw", [{}, {"strategy": "resource", "reuse": 4}, {"multiplier": "dsp", "pipeline": 3}])
def test_degenerate_neurons_and_unused_inputs(tmp_path, kw):
    m = _hand_model()
    d = tmp_path / "rtl"
    iface = generate(m, d, **kw)
    _lint(d, iface)
    x = _codes(m, 150, seed=2)
    out, _ = run_codes(d, x, backpressure=True)
    assert np.array_equal(out, m.run(x))


# ---- folded (resource) architecture: pipelined datapath, input-serial folding ----------------------
@needs_iverilog
@needs_verilator
@pytest.mark.parametrize("kw", [{"strategy": "resource", "reuse": 2, "pipeline": 0},
                                {"strategy": "resource", "reuse": 3, "pipeline": 2},
                                {"strategy": "resource", "reuse": 6, "pipeline": 5},
                                {"strategy": "resource", "reuse": 20, "pipeline": 1},     # input-serial
                                {"strategy": "resource", "reuse": 100, "pipeline": 3},    # input-serial, 1 slot
                                # timing_regs (operand register twice, register before the requantizer,
                                # registered last-step flag): one step, output folding, input-serial
                                {"strategy": "resource", "reuse": 1, "pipeline": 1, "timing_regs": True},
                                {"strategy": "resource", "reuse": 3, "pipeline": 0, "timing_regs": True},
                                {"strategy": "resource", "reuse": 20, "pipeline": 0, "timing_regs": True},
                                {"strategy": "resource", "reuse": 20, "pipeline": 4, "timing_regs": True}])
def test_folded_pipelined_and_input_serial(tmp_path, kw):
    m = _hand_model(seed=3)
    d = tmp_path / "rtl"
    iface = generate(m, d, **kw)
    _lint(d, iface)
    x = _codes(m, 80, seed=4)
    out, _ = run_codes(d, x, backpressure=True)
    assert np.array_equal(out, m.run(x))
    out, st = run_codes(d, x[:12], backpressure=False, work=tmp_path / "nobp")
    assert np.array_equal(out, m.run(x[:12]))
    assert st["latency"] == iface["latency_cycles"] and st["ii"] == iface["ii"]
    assert iface["ii"] <= kw["reuse"]


def test_folded_latency_and_multipliers(models, tmp_path):
    """fc1 64->32: reuse 32 = 1 field/step (pipelined: +stages); reuse 2048 = one MAC over 64 chunks."""
    m = lower(models("mlp"))
    it = generate(m, tmp_path / "a", strategy="resource", reuse=32, pipeline=0)
    assert it["layers"][0]["latency_cycles"] == 33 and it["layers"][0]["ii"] == 32
    it = generate(m, tmp_path / "b", strategy="resource", reuse=32, pipeline=4)
    assert it["layers"][0]["latency_cycles"] == 37 and it["ii"] == 32
    it = generate(m, tmp_path / "c", strategy="resource", reuse=2048, pipeline=2)
    fc1 = (tmp_path / "c" / "fc1.v").read_text()
    assert fc1.count(" * ") == 1 and "input-serial: 64 chunk(s) x 1 term slot(s)" in fc1
    assert it["layers"][0]["ii"] == 2048 and it["layers"][0]["latency_cycles"] == 2048 + 2 + 1
    assert it["layers"][1]["ii"] == 10 * 32  # fc2 32->10: every chunk one term
    assert it["ii"] == 2048
    it = generate(m, tmp_path / "d", strategy="resource", reuse=2048, pipeline=2, timing_regs=True)
    fc1 = (tmp_path / "d" / "fc1.v").read_text()
    # operands twice (fabric + multiplier input register), the accumulator is the requantizer's register
    assert "(operands 2, tree 1, result 1)" in fc1 and ".acc(l0_acc)" in fc1 and "at_last" in fc1
    assert it["layers"][0]["latency_cycles"] == 2048 + 4 + 1 and it["ii"] == 2048


@needs_iverilog
@needs_verilator
@pytest.mark.parametrize("name,kw", [("mlp_pot_sparse", {"strategy": "resource", "reuse": 64, "pipeline": 2}),
                                     ("cnn1d", {"strategy": "resource", "reuse": 40, "pipeline": 3}),
                                     ("cnn1d", {"strategy": "resource", "reuse": 40, "pipeline": 3,
                                                "timing_regs": True})])
def test_sim_input_serial(models, tmp_path, name, kw):
    m = lower(models(name))
    x = _codes(m, 40, seed=5)
    iface = generate(m, tmp_path / "rtl", **kw)
    _lint(tmp_path / "rtl", iface)
    out, st = run_codes(tmp_path / "rtl", x, backpressure=True)
    assert np.array_equal(out, m.run(x))
    out, st = run_codes(tmp_path / "rtl", x[:8], backpressure=False, work=tmp_path / "nobp")
    assert np.array_equal(out, m.run(x[:8]))
    assert st["latency"] == iface["latency_cycles"] and st["ii"] == iface["ii"]
