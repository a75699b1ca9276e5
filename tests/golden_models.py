"""Small QONNX fixtures for the golden-model tests: Brevitas exports and onnx.helper graphs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QDOMAIN = "qonnx.custom_op.general"


# ---------------------------------------------------------------------------------------- brevitas
def _po2_weights(model) -> None:
    """Snap every Linear/Conv weight to 0 or +-2^e (e in [-7, -1]) in place: power-of-two-valued weights
    that an 8-bit fixed-point quantizer with scale 2^-7 represents exactly."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if w is None or w.ndim < 2:
                continue
            e = torch.clamp(torch.round(torch.log2(w.abs().clamp_min(1e-9))), -7, -1)
            v = torch.sign(w) * torch.pow(2.0, e)
            v[w.abs() < 2.0**-8] = 0.0
            w.copy_(v)


def brevitas_model(kind: str, po2: bool = False, seed: int = 0):
    """``kind``: mlp | conv1d | conv2d, with suffix ``_pc`` for per-output-channel weight scales.
    Returns (torch module, example input)."""
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Int32Bias,
        Uint8ActPerTensorFixedPoint,
    )

    torch.manual_seed(seed)
    per_channel = kind.endswith("_pc")
    kind = kind.removesuffix("_pc")
    if per_channel:  # power-of-two scale per output channel
        Int8WeightPerTensorFixedPoint = Int8WeightPerTensorFixedPoint.let(scaling_per_output_channel=True)  # noqa: N806
    wq = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias, return_quant_tensor=True)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qi = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            if kind == "mlp":
                self.l1 = qnn.QuantLinear(16, 12, **wq)
                self.r1 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
                self.l2 = qnn.QuantLinear(12, 5, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)
            elif kind == "conv1d":
                self.c1 = qnn.QuantConv1d(2, 4, 3, padding=1, stride=1, **wq)
                self.r1 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
                self.p = torch.nn.MaxPool1d(2)
                self.c2 = qnn.QuantConv1d(4, 4, 3, padding=2, dilation=2, groups=4, **wq)
                self.r2 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
                self.l2 = qnn.QuantLinear(4 * 8, 5, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)
            else:
                self.c1 = qnn.QuantConv2d(1, 4, 3, padding=1, **wq)
                self.r1 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
                self.p = torch.nn.MaxPool2d(2)
                self.c2 = qnn.QuantConv2d(4, 8, 3, padding=1, stride=2, **wq)
                self.r2 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
                self.l2 = qnn.QuantLinear(8 * 2 * 2, 5, weight_quant=Int8WeightPerTensorFixedPoint,
                                          bias_quant=Int32Bias)

        def forward(self, x):
            x = self.qi(x)
            if kind == "mlp":
                return self.l2(self.r1(self.l1(x)))
            x = self.r2(self.c2(self.p(self.r1(self.c1(x)))))
            return self.l2(x.flatten(1))

    net = Net().eval()
    if per_channel:  # make the per-channel scales really differ: channel i is 2^-(i % 4) smaller
        with torch.no_grad():
            for m in net.modules():
                w = getattr(m, "weight", None)
                if w is not None and w.ndim >= 2:
                    f = 2.0 ** -(torch.arange(w.shape[0]) % 4).float()
                    w.mul_(f.view(-1, *([1] * (w.ndim - 1))))
    if po2:
        _po2_weights(net)
    shape = {"mlp": (1, 16), "conv1d": (1, 2, 16), "conv2d": (1, 1, 8, 8)}[kind]
    x = torch.randn(*shape)
    with torch.no_grad():
        net(x)
    return net, x


def export_pair(kind: str, folder: Path, po2: bool = False, seed: int = 0) -> tuple[Path, Path]:
    """Export (raw QONNX, cleaned QONNX) of a small Brevitas model, cleaned by
    :func:`codesign.graph.clean.clean_qonnx` (conv models channels-last behind an NCHW input Transpose)."""
    import onnx
    import torch
    from brevitas.export import export_qonnx

    from codesign.graph.clean import clean_qonnx

    torch.set_num_threads(1)
    net, x = brevitas_model(kind, po2, seed)
    raw = folder / f"{kind}{'_po2' if po2 else ''}_raw.onnx"
    clean = folder / f"{kind}{'_po2' if po2 else ''}_clean.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, args=x, export_path=str(raw))
        onnx.save(clean_qonnx(raw, channels_last=None, input_channels_last=False), str(clean))
    return raw, clean


# ---------------------------------------------------------------------------------------- onnx.helper
def const(name: str, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def quant_node(inp: str, out: str, scale, zp, bits, signed=1, narrow=0, rounding="ROUND", inits=None,
               name=None):
    """A QONNX Quant node plus its parameter initializers (appended to ``inits``)."""
    name = name or f"Quant_{out}"
    inits.extend([const(f"{name}_s", scale), const(f"{name}_z", zp), const(f"{name}_b", bits)])
    return helper.make_node("Quant", [inp, f"{name}_s", f"{name}_z", f"{name}_b"], [out], domain=QDOMAIN,
                            name=name, signed=signed, narrow=narrow, rounding_mode=rounding)


def make_model(nodes, inits, in_shape, out_shape, in_name="x", out_name="y", opset=13, qonnx_opset=2
               ) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(QDOMAIN, qonnx_opset)])
    m.ir_version = 8
    return m


def hls4ml_model(model_path: Path, out_dir: Path):
    """hls4ml Vitis io_parallel model of a cleaned QONNX file, compiled for C simulation (g++ only)."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper

    mw = ModelWrapper(str(model_path))
    for n in mw.graph.node:  # hls4ml only accepts upper-case rounding modes
        for a in n.attribute:
            if a.name == "rounding_mode":
                a.s = a.s.upper()
    cfg = hls4ml.utils.config_from_onnx_model(mw, granularity="name", backend="Vitis")
    hm = hls4ml.converters.convert_from_onnx_model(mw, output_dir=str(out_dir), backend="Vitis",
                                                   io_type="io_parallel", hls_config=cfg)
    hm.compile()
    return hm
