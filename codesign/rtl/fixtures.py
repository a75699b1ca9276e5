"""Small Brevitas models exported to cleaned QONNX, for the RTL tests and examples.

``mlp_qonnx(path, sizes=(64, 32, 10), weights='fixed'|'pot', zero_frac=0.0, seed=0)`` builds
QuantIdentity -> [QuantLinear -> QuantReLU]* -> QuantLinear with power-of-two scales
(``*FixedPoint`` quantizers, Int32 bias), optionally sets every weight to 0 or +-2^e, exports with
``brevitas.export.export_qonnx`` and cleans it with :func:`codesign.graph.clean.clean_qonnx`.
``cnn_qonnx`` does the same for a Conv2d/Conv1d -> ReLU -> MaxPool -> Flatten -> Linear network
(channels-last conversion included; the input stays NCHW behind a Transpose).
``per_channel=True``: power-of-two weight scales per output channel (Brevitas
``scaling_per_output_channel``), with channel ``i``'s weights made ``2^-(i % 4)`` smaller so that the
scales really differ.
``resmlp_qonnx`` / ``rescnn_qonnx``: residual blocks (a branch of two layers added to its input, or
to a projection of it), then a requantization; ``rescnn_qonnx`` ends with a ``TruncAvgPool2d``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def _quantizers(per_channel: bool = False):
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Int32Bias,
        Uint8ActPerTensorFixedPoint,
    )

    wq = Int8WeightPerTensorFixedPoint.let(scaling_per_output_channel=True) if per_channel \
        else Int8WeightPerTensorFixedPoint
    return Int8ActPerTensorFixedPoint, wq, Int32Bias, Uint8ActPerTensorFixedPoint


def _spread_channels(mods) -> None:
    """Channel i's weights 2^-(i % 4) smaller: per-channel power-of-two scales that really differ."""
    import torch

    with torch.no_grad():
        for m in mods:
            w = m.weight
            f = 2.0 ** -(torch.arange(w.shape[0]) % 4).float()
            w.mul_(f.view(-1, *([1] * (w.ndim - 1))))


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
    import onnx
    from brevitas.export import export_qonnx

    from codesign.graph.clean import clean_qonnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.stem + "_raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(m, args=x, export_path=str(raw))
        cleaned = clean_qonnx(raw, channels_last=channels_last, input_channels_last=False)
    onnx.save(cleaned, str(path))
    return path


def mlp_qonnx(path, sizes=(64, 32, 10), weights: str = "fixed", zero_frac: float = 0.0, seed: int = 0,
              zero_mask_from=None, per_channel: bool = False) -> Path:
    import brevitas.nn as qnn
    import torch

    ia, wq, bq, ua = _quantizers(per_channel)
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
    if per_channel:
        _spread_channels(lins)
    m.eval()
    with torch.no_grad():  # calibrate activation scales on random data
        m(torch.randn(64, sizes[0]))
    return _export(m, torch.randn(1, sizes[0]), path)


def cnn_qonnx(path, in_shape=(1, 6, 6), channels=4, kernel=3, padding=1, stride=1, pool=2, n_out=5,
              dims: int = 2, weights: str = "fixed", seed: int = 0, per_channel: bool = False) -> Path:
    import brevitas.nn as qnn
    import torch

    ia, wq, bq, ua = _quantizers(per_channel)
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
    if per_channel:
        _spread_channels([conv, fc])
    m.eval()
    with torch.no_grad():
        m(torch.randn(32, *in_shape))
    return _export(m, torch.randn(1, *in_shape), path, channels_last=True)


def resmlp_qonnx(path, width: int = 8, n_out: int = 4, blocks: int = 1, projection: bool = False,
                 per_channel: bool = False, seed: int = 0) -> Path:
    """QuantIdentity -> ``blocks`` x [x + Linear(ReLU(Linear(x))) -> QuantIdentity] -> Linear.
    ``projection``: the skip path is a Linear of x (two accumulators at different scales are added)."""
    import brevitas.nn as qnn
    import torch

    ia, wq, bq, ua = _quantizers(per_channel)
    torch.manual_seed(seed)
    kw = dict(weight_quant=wq, bias_quant=bq)

    class ResMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qi = qnn.QuantIdentity(act_quant=ia, return_quant_tensor=True)
            self.l1 = torch.nn.ModuleList(qnn.QuantLinear(width, width, return_quant_tensor=True, **kw)
                                          for _ in range(blocks))
            self.r1 = torch.nn.ModuleList(qnn.QuantReLU(act_quant=ua, return_quant_tensor=True) for _ in range(blocks))
            self.l2 = torch.nn.ModuleList(qnn.QuantLinear(width, width, return_quant_tensor=False, **kw)
                                          for _ in range(blocks))
            self.sk = torch.nn.ModuleList(qnn.QuantLinear(width, width, return_quant_tensor=False, **kw)
                                          for _ in range(blocks if projection else 0))
            self.qo = torch.nn.ModuleList(qnn.QuantIdentity(act_quant=ia, return_quant_tensor=True)
                                          for _ in range(blocks))
            self.head = qnn.QuantLinear(width, n_out, **kw)

        def forward(self, x):
            x = self.qi(x)
            for b in range(blocks):
                y = self.l2[b](self.r1[b](self.l1[b](x)))
                s = self.sk[b](x) if projection else x
                x = self.qo[b](y + s)
            return self.head(x)

    m = ResMLP()
    if per_channel:
        _spread_channels([mod for mod in m.modules() if isinstance(mod, qnn.QuantLinear)])
    m.eval()
    with torch.no_grad():
        m(torch.randn(64, width))
    return _export(m, torch.randn(1, width), path)


def rescnn_qonnx(path, in_shape=(1, 4, 4), channels: int = 4, avgpool: bool = True, per_channel: bool = False,
                 seed: int = 0, projection: bool = False) -> Path:
    """QuantIdentity -> Conv -> ReLU -> [Conv -> ReLU -> Conv] + skip -> ReLU (quantized)
    -> TruncAvgPool2d(2) (when ``avgpool``) -> Flatten -> Linear; channels-last cleaned. ``projection``:
    the skip is a 1x1 conv (a branch on both sides of the add)."""
    import brevitas.nn as qnn
    import torch

    ia, wq, bq, ua = _quantizers(per_channel)
    torch.manual_seed(seed)
    kw = dict(weight_quant=wq, bias_quant=bq)

    class ResCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qi = qnn.QuantIdentity(act_quant=ia, return_quant_tensor=True)
            self.c0 = qnn.QuantConv2d(in_shape[0], channels, 3, padding=1, return_quant_tensor=True, **kw)
            self.r0 = qnn.QuantReLU(act_quant=ua, return_quant_tensor=True)
            self.c1 = qnn.QuantConv2d(channels, channels, 3, padding=1, return_quant_tensor=True, **kw)
            self.r1 = qnn.QuantReLU(act_quant=ua, return_quant_tensor=True)
            self.c2 = qnn.QuantConv2d(channels, channels, 3, padding=1, return_quant_tensor=False, **kw)
            self.ro = qnn.QuantReLU(act_quant=ua, return_quant_tensor=True)
            if projection:
                self.sc = qnn.QuantConv2d(channels, channels, 1, return_quant_tensor=False, **kw)
            if avgpool:
                self.pool = qnn.TruncAvgPool2d(2, return_quant_tensor=True)
            n = channels * int(np.prod(in_shape[1:])) // (4 if avgpool else 1)
            self.head = qnn.QuantLinear(n, 3, **kw)

        def forward(self, x):
            x = self.r0(self.c0(self.qi(x)))
            z = self.ro(self.c2(self.r1(self.c1(x))) + (self.sc(x) if projection else x))
            if avgpool:
                z = self.pool(z)
            return self.head(z.flatten(1))

    m = ResCNN()
    if per_channel:
        _spread_channels([mod for mod in m.modules() if isinstance(mod, (qnn.QuantLinear, qnn.QuantConv2d))])
    m.eval()
    with torch.no_grad():
        m(torch.randn(32, *in_shape))
    return _export(m, torch.randn(1, *in_shape), path, channels_last=True)
