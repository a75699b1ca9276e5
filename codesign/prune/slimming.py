"""Network slimming (Liu et al. 2017) for the ``bn_gamma`` criterion, adapted to a flow without
BatchNorm: train a BatchNorm twin with an L1 penalty on the gammas, fold the BatchNorms back into the
quantized layers, rank units by ``|gamma|``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import UnsupportedError
from codesign.prune.common import prunable_layers

if TYPE_CHECKING:
    from codesign.data import Dataset


def slimming_train(model: nn.Module, cfg: Config, dataset: Dataset, *, epochs: int | None = None,
                   l1: float | None = None, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Network slimming (Liu et al. 2017) for a BatchNorm-free integer flow.

    A float twin of ``model`` (same weights) gets a BatchNorm after every prunable layer and is trained
    for ``epochs`` with an L1 penalty ``l1 * sum |gamma|``. The BatchNorms are then folded into the
    preceding layer (``w' = w * g/sqrt(v+eps)``, ``b' = (b - mean) * g/sqrt(v+eps) + beta``) and the folded
    float weights are loaded into a copy of the quantized ``model``: the returned model is a plain
    QuantNet (QuantLinear / QuantConv only) to be pruned by ``|gamma|`` and fine-tuned with QAT.
    Returns ``(folded quantized model, {layer: |gamma|})``.
    """
    import copy

    from codesign.quant import QuantNet, build_float_model

    pc = cfg.prune
    epochs = pc.slimming_epochs if epochs is None else epochs
    l1 = pc.slimming_l1 if l1 is None else l1
    if type(model) is not QuantNet:
        raise UnsupportedError("criterion 'bn_gamma': slimming needs a sequential QuantNet built from the config "
                               f"(got {type(model).__name__})")
    prunable = prunable_layers(model)
    fm = build_float_model(cfg, model.input_shape, model.n_classes)
    fm.load_state_dict({k: v for k, v in model.state_dict().items()
                        if k.partition(".")[2] in ("weight", "bias") and k.partition(".")[0] in fm.order}, strict=False)
    layers: list[tuple[str, nn.Module]] = []
    bns: dict[str, nn.Module] = {}
    for n in fm.order:
        layers.append((n, getattr(fm, n)))
        if n in prunable:
            w = getattr(fm, n).weight
            bn = nn.BatchNorm2d(w.shape[0]) if w.dim() == 4 else nn.BatchNorm1d(w.shape[0])
            bns[n] = bn
            layers.append((f"bn_{n}", bn))
    net = QuantNet(layers, model.input_shape, model.n_classes)
    tc = cfg.train
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr)
    xt = torch.as_tensor(dataset.x_train, dtype=torch.float32)
    yt = torch.as_tensor(dataset.y_train, dtype=torch.long)
    rng = np.random.default_rng(seed)
    n_tr = len(xt)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * math.ceil(n_tr / tc.batch_size)))
    for _ in range(epochs):
        net.train()
        perm = torch.as_tensor(rng.permutation(n_tr))
        for i in range(0, n_tr, tc.batch_size):
            idx = perm[i:i + tc.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs 2+ samples
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss = loss + l1 * sum(bn.weight.abs().sum() for bn in bns.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    folded = {}
    gammas = {}
    with torch.no_grad():
        for n, bn in bns.items():
            m = getattr(fm, n)
            k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            folded[f"{n}.weight"] = m.weight * k.view(-1, *([1] * (m.weight.dim() - 1)))
            folded[f"{n}.bias"] = (m.bias - bn.running_mean) * k + bn.bias
            gammas[n] = bn.weight.detach().abs().double()
        for n in fm.weight_layers():
            if n not in bns:
                folded[f"{n}.weight"] = getattr(fm, n).weight.detach().clone()
                folded[f"{n}.bias"] = getattr(fm, n).bias.detach().clone()
    out = copy.deepcopy(model)
    out.load_state_dict(folded, strict=False)
    out.eval()
    return out, gammas
