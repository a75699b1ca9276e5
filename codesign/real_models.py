"""QONNX models as users bring them from elsewhere, for the tests and ``python -m bench real``: the two
public files in ``models/qonnx`` (FINN's TFC_2W2A, hls4ml's QKeras jet tagger), Brevitas BNN-PYNQ nets
with random weights and non-trivial BatchNorm (:func:`bnn_pynq`), and inputs on their grids
(:func:`mnist_like` images of k/255 pixels, :func:`on_grid` codes of a golden model's input grid)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from codesign.resources import models_dir

QONNX = models_dir() / "qonnx"  # the public files, as published
TFC_FILE = QONNX / "TFC_2W2A.onnx"
JET_FILE = QONNX / "qkeras_jettagging.onnx"
JET_PRECISION = "ap_fixed<16,6>"  # the jet tagger's input grid (no quantizer in the file defines it)


def _randomize_bn(model, seed: int) -> None:
    """Non-trivial BatchNorm / TensorNorm statistics: means and betas around the accumulator range,
    gammas of both signs, some tiny (1e-6) and some negative, variances from tiny to large."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if not hasattr(m, "running_var") or m.running_var is None:
                continue
            n = m.running_var.numel()
            m.running_mean.copy_(torch.randn(n, generator=g) * 4)
            m.running_var.copy_(torch.rand(n, generator=g) * 20 + 1e-3)
            if getattr(m, "weight", None) is not None:
                w = torch.randn(m.weight.shape, generator=g) * 2
                w.view(-1)[::7] = 1e-6  # tiny gamma: thresholds far out
                w.view(-1)[3::5] *= -1  # negative gamma: flipped comparisons
                m.weight.copy_(w)
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


def bnn_pynq(name: str, folder: Path, seed: int = 0) -> Path:
    """Raw QONNX export of ``brevitas_examples.bnn_pynq`` model ``name`` (e.g. TFC_1W1A) with random
    weights and randomized BatchNorm / TensorNorm statistics, as ``folder/<name>.onnx``."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net, _ = model_with_cfg(name.lower(), pretrained=False)
    _randomize_bn(net, seed)
    net.eval()
    shape = (1, 3, 32, 32) if name.upper().startswith("CNV") else (1, 1, 28, 28)
    path = Path(folder) / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, args=torch.rand(*shape), export_path=str(path))
    return path


def mnist_like(n: int, seed: int, shape: tuple[int, ...] = (1, 28, 28)) -> np.ndarray:
    """``n`` images of k/255 pixels: random, structured (blank, full, stripes, checkerboards, gradients,
    blobs) and values next to the pre-processing's rounding boundary (127/255, 128/255)."""
    rng = np.random.default_rng(seed)
    h, w = shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    pats = [np.zeros((h, w)), np.full((h, w), 255), (yy % 2) * 255, (xx % 3 == 0) * 255, ((yy + xx) % 2) * 255,
            np.round(xx / (w - 1) * 255), np.full((h, w), 127), np.full((h, w), 128)]
    for _ in range(40):  # blobs: a few strokes of random brightness
        img = np.zeros((h, w))
        for _ in range(3):
            cy, cx, r = rng.integers(4, h - 4), rng.integers(4, w - 4), rng.integers(2, 6)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(100, 256)
        pats.append(img)
    k = [np.broadcast_to(p, shape) for p in pats]
    k += [rng.integers(0, 256, size=shape) for _ in range(n // 2)]
    k += [rng.choice([0, 127, 128, 255], size=shape) for _ in range(n - len(k))]
    return (np.stack(k[:n]).astype(np.float64) / 255).astype(np.float32)


def on_grid(gm, n: int, seed: int) -> np.ndarray:
    """``n`` inputs on the input grid of the golden model ``gm``: random codes, small codes, and the grid's
    extremes (real values, codes * 2**scale_exp)."""
    sp = gm.input_spec
    rng = np.random.default_rng(seed)
    c = [rng.integers(sp.code_min, sp.code_max + 1, size=(n - 4 - n // 2, *sp.shape)),
         np.clip(np.round(rng.normal(scale=(sp.code_max - sp.code_min) / 16, size=(n // 2, *sp.shape))),
                 sp.code_min, sp.code_max),
         np.full((2, *sp.shape), sp.code_min), np.full((2, *sp.shape), sp.code_max)]
    codes = np.concatenate(c)
    if sp.bipolar:
        codes = np.where(codes >= 0, 1, -1)
    return np.ldexp(codes.astype(np.float64), sp.scale_exp)
