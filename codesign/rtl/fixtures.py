"""Small Brevitas models exported to cleaned QONNX, for the RTL tests and examples.

``mlp_qonnx(path, sizes=(64, 32, 10), weights='fixed'|'pot', zero_frac=0.0, seed=0)`` builds
QuantIdentity -> [QuantLinear -> QuantReLU]* -> QuantLinear with power-of-two scales
(``*FixedPoint`` quantizers, Int32 bias), optionally sets every weight to 0 or +-2^e, exports with
``brevitas.export.export_qonnx`` and cleans it like the export stage (cleanup, GemmToMatMul).
``cnn_qonnx`` does the same for a Conv2d/Conv1d -> ReLU -> MaxPool -> Flatten -> Linear network
(channels-last conversion included).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def _quantizers():
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Int32Bias,
        Uint8ActPerTensorFixedPoint,
    )

    return Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint


def _set_weights(mods, weights: str, zero_frac: float, rng) -> None:
    import torch

    for m in mods:
        w = m.weight.data
        if weights == "pot":
            e = rng.integers(-7, -2, size=tuple(w.shape))
            s = rng.choice([-1.0, 1.0], size=tuple(w.shape))
            w.copy_(torch.tensor(s * 2.0 ** e, dtype=w.dtype))
        if zero_frac > 0:
            mask = rng.random(tuple(w.shape)) < zero_frac
            w[torch.tensor(mask)] = 0.0
        if m.bias is not None:
            m.bias.data.copy_(torch.tensor(rng.normal(0, 0.05, size=tuple(m.bias.shape)), dtype=w.dtype))


def _export(m, x, path: Path, channels_last: bool = False) -> Path:
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.stem + "_raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(m, args=x, export_path=str(raw))
        mw = cleanup_model(ModelWrapper(str(raw)))
        if channels_last:
            from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean

            mw = mw.transform(ConvertToChannelsLastAndClean())
        mw = cleanup_model(mw.transform(GemmToMatMul()))
    mw.save(str(path))
    return path


def mlp_qonnx(path, sizes=(64, 32, 10), weights: str = "fixed", zero_frac: float = 0.0, seed: int = 0,
              zero_mask_from=None) -> Path:
    import brevitas.nn as qnn
    import torch

    ia, wq, bq, ua = _quantizers()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = [qnn.QuantIdentity(act_quant=ia, return_quant_tensor=True)]
    lins = []
    kw = {}
    if weights == "pot":  # constant threshold 0.25 -> scale 2^-9: the largest weight 2^-3 is code 64
        from brevitas.inject.enum import ScalingImplType

        kw = {"weight_scaling_impl_type": ScalingImplType.CONST, "weight_scaling_init": 0.25}
    for k in range(len(sizes) - 1):
        lin = qnn.QuantLinear(sizes[k], sizes[k + 1], bias=True, weight_quant=wq, bias_quant=bq,
                              return_quant_tensor=True, **kw)
        lins.append(lin)
        layers.append(lin)
        if k < len(sizes) - 2:
            layers.append(qnn.QuantReLU(act_quant=ua, return_quant_tensor=True))
    lins[-1].return_quant_tensor = False
    m = torch.nn.Sequential(*layers)
    _set_weights(lins, weights, zero_frac, rng)
    if zero_mask_from is not None:  # zero extra weights of an otherwise identical model
        for lin, mask in zip(lins, zero_mask_from, strict=True):
            lin.weight.data[torch.tensor(mask)] = 0.0
    m.eval()
    with torch.no_grad():  # calibrate activation scales on random data
        m(torch.randn(64, sizes[0]))
    return _export(m, torch.randn(1, sizes[0]), path)


def cnn_qonnx(path, in_shape=(1, 6, 6), channels=4, kernel=3, padding=1, stride=1, pool=2, n_out=5,
              dims: int = 2, weights: str = "fixed", seed: int = 0) -> Path:
    import brevitas.nn as qnn
    import torch

    ia, wq, bq, ua = _quantizers()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    conv_cls = qnn.QuantConv2d if dims == 2 else qnn.QuantConv1d
    pool_cls = torch.nn.MaxPool2d if dims == 2 else torch.nn.MaxPool1d
    conv = conv_cls(in_shape[0], channels, kernel, stride=stride, padding=padding, bias=True, weight_quant=wq,
                    bias_quant=bq, return_quant_tensor=True)
    sp = [(d + 2 * padding - kernel) // stride + 1 for d in in_shape[1:]]
    n_feat = channels * int(np.prod([d // pool for d in sp]))
    fc = qnn.QuantLinear(n_feat, n_out, bias=True, weight_quant=wq, bias_quant=bq)
    m = torch.nn.Sequential(qnn.QuantIdentity(act_quant=ia, return_quant_tensor=True), conv,
                            qnn.QuantReLU(act_quant=ua, return_quant_tensor=True), pool_cls(pool),
                            torch.nn.Flatten(), fc)
    _set_weights([conv, fc], weights, 0.0, rng)
    m.eval()
    with torch.no_grad():
        m(torch.randn(32, *in_shape))
    return _export(m, torch.randn(1, *in_shape), path, channels_last=True)
