"""A float Transpose between an accumulator and its quantizer (the RTL frontend's ``commute_transpose``).

Brevitas BNN-PYNQ CNV, cleaned channels-last, ends its conv part with ``Conv -> BatchNorm -> Transpose
(NHWC -> NCHW) -> BipolarQuant -> Reshape``: qonnx moves the transpose of the channels-last conversion
as far down as it can, and it stops at the ``BipolarQuant``, in front of the flatten. The Transpose
moves float values; the frontend moves it behind the quantizer (elementwise ops commute with a pure
data movement), so the BatchNorm + sign stays a proven threshold epilogue of the conv and the Transpose
becomes an ``ir.Transpose`` of integer codes (no layer at all when it moves no value: a 1x1 map).

A mini CNV with the same layer types (8-bit Q1.7 input, bipolar weights and activations, BatchNorm,
MaxPool, 3x3 convs without padding) is checked here: the IR against the golden model, and the RTL in
stream mode under cocotb + Verilator. Slow: the real CNV_1W1A's IR against the golden model on 10,000
vectors. Its stream RTL (243 MB of Verilog, fully parallel per-pixel units) is not simulated: Verilator's
frontend went past 20 GiB on this 23.5 GiB machine (docs/rtl-backend.md says what was measured).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from rtl_helpers import assert_ir_matches_golden, needs_verilator, verify_ok

from codesign.rtl import generate, ir, lower
from codesign.rtl.frontend import import_onnx, run_passes
from codesign.rtl.frontend.graph import TransposeOp


def mini_cnv(folder: Path, size: int, seed: int = 0) -> Path:
    """CNV's blocks at toy size: QuantIdentity (Q1.7) -> [QuantConv2d 3x3 (1-bit) -> BatchNorm2d ->
    QuantIdentity (1-bit)] x 2 with a MaxPool between -> flatten -> QuantLinear (1-bit); random weights,
    randomized BatchNorm (:func:`codesign.real_models._randomize_bn`), exported and cleaned like
    ``python -m bench real`` cleans CNV (channels-last, the graph input too)."""
    import torch
    from brevitas.core.restrict_val import RestrictValueType
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant

    from codesign.graph.clean import clean_qonnx
    from codesign.real_models import _randomize_bn

    torch.set_num_threads(1)
    torch.manual_seed(seed)

    def conv(i, o):
        return QuantConv2d(i, o, 3, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1)

    def act():
        return QuantIdentity(act_quant=CommonActQuant, bit_width=1)

    out = ((size - 2) // 2) - 2  # conv, pool 2, conv
    net = torch.nn.Sequential(
        QuantIdentity(act_quant=CommonActQuant, bit_width=8, min_val=-1.0, max_val=1.0 - 2.0**-7, narrow_range=False,
                      restrict_scaling_type=RestrictValueType.POWER_OF_TWO),
        conv(2, 4), torch.nn.BatchNorm2d(4, eps=1e-4), act(), torch.nn.MaxPool2d(2),
        conv(4, 5), torch.nn.BatchNorm2d(5, eps=1e-4), act(),
        torch.nn.Flatten(),
        QuantLinear(5 * out * out, 3, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1))
    _randomize_bn(net, seed)
    net.eval()
    raw = folder / f"mini_cnv_{size}_raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, args=torch.rand(1, 2, size, size), export_path=str(raw))
    import onnx

    path = folder / f"mini_cnv_{size}.onnx"
    onnx.save(clean_qonnx(raw, channels_last=None), str(path))
    return path


@pytest.fixture(scope="module")
def minis(tmp_path_factory):
    d = tmp_path_factory.mktemp("mini_cnv")
    return {size: mini_cnv(d, size) for size in (12, 8)}  # conv2 output 3x3 (a real permutation) and 1x1


def _transpose_node(path: Path):
    import onnx

    m = onnx.load(str(path))
    return [n for n in m.graph.node if n.op_type == "Transpose" and n.input[0] not in {i.name for i in m.graph.input}]


def test_the_export_has_cnvs_float_transpose(minis):
    """The pattern under test: BatchNorm -> Transpose -> BipolarQuant, as in the cleaned CNV_1W1A."""
    import onnx

    for p in minis.values():
        m = onnx.load(str(p))
        (t,) = _transpose_node(p)
        prod = next(n for n in m.graph.node if t.input[0] in n.output)
        cons = next(n for n in m.graph.node if t.output[0] in n.input)
        assert (prod.op_type, cons.op_type) == ("BatchNormalization", "BipolarQuant")


def test_commute_transpose_moves_it_behind_the_quantizer(minis):
    g = run_passes(import_onnx(minis[12]))
    kinds = [type(op).__name__ for op in g.ops]
    # conv(+BN+sign), pool, conv(+BN+sign), the transpose of its bipolar codes, the dense layer
    assert kinds == ["LinearOp", "MaxPoolOp", "LinearOp", "TransposeOp", "LinearOp"]
    conv2, tr = g.ops[2], g.ops[3]
    assert conv2.epilogue is not None and tr.ins == [conv2.out] and not tr.float_in
    assert conv2.epilogue.dst == tr.out  # the epilogue runs through the Transpose node of the graph
    assert tuple(tr.in_shape) == (3, 3, 5) and tuple(tr.shape) == (5, 3, 3)
    # a 1x1 map: the Transpose moves no value and is no op at all
    assert not any(isinstance(op, TransposeOp) for op in run_passes(import_onnx(minis[8])).ops)


@pytest.mark.parametrize("size", [12, 8])
def test_ir_equals_the_golden_model(minis, size):
    """The IR (thresholds proven exhaustively) equals the golden model on 2,000 input codes (corners included)."""
    m = lower(minis[size])
    th = [ly.requant for ly in m.layers if isinstance(ly, ir.Conv)]
    assert len(th) == 2 and all(t.proof["mismatches"] == 0 and t.proof["method"] == "exhaustive" for t in th)
    assert sum(isinstance(ly, ir.Transpose) for ly in m.layers) == (size == 12)
    assert_ir_matches_golden(minis[size], m, n=2000)


@needs_verilator
def test_stream_rtl_verifies(minis, tmp_path):
    """Stream mode: the convs and the pool on line buffers, the Transpose and the dense layer in the vector
    part; cocotb + Verilator against the golden model, 0 mismatches, latency and II as declared."""
    d = tmp_path / "rtl"
    iface = generate(lower(minis[12]), d, io="stream")
    assert iface["io"] == "stream"
    verify_ok(d, minis[12], vectors=3000)


@pytest.fixture(scope="module")
def cnv(tmp_path_factory):
    """CNV_1W1A (random weights, seed 0, randomized BatchNorm) cleaned as ``python -m bench real`` cleans it,
    and its IR (about 20 s: the exhaustive threshold proofs and the accumulator bounds)."""
    import onnx

    from codesign.graph.clean import clean_qonnx
    from codesign.real_models import bnn_pynq

    d = tmp_path_factory.mktemp("cnv")
    path = d / "CNV_1W1A.clean.onnx"
    onnx.save(clean_qonnx(bnn_pynq("CNV_1W1A", d, seed=0), channels_last=None), str(path))
    return path, lower(path, "CNV_1W1A")


@pytest.mark.slow
def test_cnv_1w1a_ir_equals_the_golden_model(cnv):
    """CNV_1W1A lowers (the Transpose before its flatten moves no value: no layer), streams its 6 convs
    and 2 pools, and its IR equals the golden model on 10,000 random Q1.7 input codes plus 4 corners."""
    from codesign.golden import GoldenModel
    from codesign.rtl.emit.stream_plan import plan_stream

    path, m = cnv
    assert [ly.kind for ly in m.layers] == ["conv2d"] * 2 + ["maxpool"] + ["conv2d"] * 2 + ["maxpool"] + \
        ["conv2d"] * 2 + ["dense"] * 3
    plan = plan_stream(m)
    assert len(plan.layers) == 8 and [ly.kind for ly in plan.rest.layers] == ["dense"] * 3
    g = GoldenModel(str(path))
    n = 10_000
    f = m.input_fmt
    x = np.random.default_rng(1).integers(f.lo, f.hi + 1, (n + 4, int(np.prod(m.input_shape))))
    alt = np.arange(x.shape[1]) % 2 == 0
    x[n], x[n + 1], x[n + 2], x[n + 3] = f.lo, f.hi, np.where(alt, f.lo, f.hi), np.where(alt, f.hi, f.lo)
    for i in range(0, len(x), 200):  # bounded memory: the golden model's im2col
        want = np.asarray(g.run_codes(x[i:i + 200].reshape(-1, *m.input_shape))[0]).reshape(len(x[i:i + 200]), -1)
        assert np.array_equal(m.run(x[i:i + 200]), want)


@pytest.mark.slow
@needs_verilator
def test_cnv_1w1a_stream_rtl_verifies(cnv, tmp_path):
    """CNV_1W1A's stream design (6 convs and 2 pools on line buffers with popcount per-pixel units, the 3 dense
    layers in the vector part) under cocotb + Verilator against the golden model: 0 mismatches, latency and II
    as declared (each vector is 1,024 pixel beats; the 10,000-vector run is in README's table)."""
    path, m = cnv
    d = tmp_path / "rtl"
    iface = generate(m, d, io="stream")
    assert iface["ii"] == 32 * 32
    verify_ok(d, path, vectors=40)
