"""What unit and weight pruning share: the model's weight layers and their statistics, accuracy on a
split, the ``random`` and ``taylor`` criteria's common parts, fine-tuning between pruning steps
(:func:`codesign.train.fine_tune`), and the sparsity schedules.

Schedules: ``oneshot``; ``iterative`` (``steps`` equal steps, fine-tuning in between); ``agp``
(Zhu & Gupta 2017: cumulative sparsity ``s_t = s * (1 - (1 - t/T)^3)`` over ``steps`` steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import CodesignError, UnsupportedError

if TYPE_CHECKING:
    from codesign.data import Dataset

CostFn = Callable[[nn.Module, str], np.ndarray]


@dataclass
class LayerStat:
    name: str
    units: int
    kept: int
    params: int
    macs: int


def prunable_layers(model: nn.Module) -> list[str]:
    """Weight layers whose outputs can be pruned: all but the last (the class scores); a residual model
    (:class:`codesign.quant.GraphNet`) also keeps the layers added to the network input."""
    if hasattr(model, "prunable"):
        return model.prunable()
    layers = model.weight_layers()
    return layers[:-1]


def bn_followers(model: nn.Module) -> dict[str, str]:
    """BatchNorm layer -> the weight layer it normalizes (its channels are that layer's units)."""
    out: dict[str, str] = {}
    for n in getattr(model, "order", []):
        if isinstance(getattr(model, n), nn.BatchNorm1d | nn.BatchNorm2d):
            src = model.input_of(n)
            if src in model.weight_layers():
                out[n] = src
    return out


def check_supported(model: nn.Module) -> None:
    """Refuse models the pruner cannot handle: a BatchNorm not right after a weight layer, or no named weight
    layers."""
    if not hasattr(model, "weight_layers"):
        raise UnsupportedError("the pruner needs a codesign.quant.QuantNet (sequential, named layers)")
    followers = bn_followers(model)
    for n in model.order:
        if isinstance(getattr(model, n), nn.BatchNorm1d | nn.BatchNorm2d) and n not in followers:
            raise UnsupportedError(f"layer {n}: a BatchNorm that does not follow a Linear/Conv cannot be pruned")


def layer_stats(model: nn.Module) -> list[LayerStat]:
    """Units, parameters and MACs per weight layer (one inference)."""
    stats: list[LayerStat] = []
    hooks = []

    def hook(name):
        def f(mod, inp, out):
            o = out.value if hasattr(out, "value") else out
            w = mod.weight
            spatial = int(math.prod(o.shape[2:])) if o.dim() > 2 else 1
            params = w.numel() + (mod.bias.numel() if mod.bias is not None else 0)
            stats.append(LayerStat(name, w.shape[0], w.shape[0], params, w.numel() * spatial))
        return f

    for n in model.weight_layers():
        hooks.append(getattr(model, n).register_forward_hook(hook(n)))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros((1, *model.input_shape)))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return stats


def outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    from codesign.train import predict

    return predict(model, x)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    from codesign.train import accuracy as acc

    return acc(model, x, y)


def seeded_random_scores(seed: int, layer: str, shape: int | tuple[int, ...]) -> np.ndarray:
    """The ``random`` criterion: uniform scores, reproducible per ``seed`` and layer name."""
    return np.random.default_rng(seed + sum(map(ord, layer))).random(shape)


def taylor_of(grads: dict[str, torch.Tensor] | None, layer: str) -> np.ndarray:
    """The ``taylor`` criterion: the scores of ``layer`` accumulated by :func:`taylor_accumulate`."""
    if grads is None or layer not in grads:
        raise CodesignError("criterion 'taylor' needs gradients from training data (a dataset)")
    return grads[layer].numpy()


def taylor_accumulate(model: nn.Module, x: np.ndarray, y: np.ndarray, layers: list[str],
                      reduce: Callable[[torch.Tensor], torch.Tensor], batches: int = 8,
                      batch_size: int = 128) -> dict[str, torch.Tensor]:
    """First-order Taylor importance (Molchanov et al. 2019): ``(w * dL/dw)^2`` of every weight of
    ``layers``, passed through ``reduce`` (per unit: summed over the row; per weight: as is) and summed
    over ``batches`` training batches (a fixed seed picks them). Leaves the model in eval mode."""
    model.train()
    scores: dict[str, torch.Tensor] = {}
    rng = np.random.default_rng(0)
    for _ in range(batches):
        idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        model.zero_grad()
        nn.functional.cross_entropy(model(torch.as_tensor(x[idx])), torch.as_tensor(y[idx])).backward()
        for n in layers:
            w = getattr(model, n).weight
            scores[n] = scores.get(n, 0) + reduce((w.detach() * w.grad.detach()).pow(2))
    model.zero_grad()
    model.eval()
    return scores


def schedule_targets(schedule: str, sparsity: float, steps: int) -> list[float]:
    """Cumulative sparsity after each pruning step."""
    if schedule == "oneshot":
        return [sparsity]
    if schedule == "iterative":
        return [sparsity * (t + 1) / steps for t in range(steps)]
    if schedule == "agp":
        return [sparsity * (1 - (1 - (t + 1) / steps) ** 3) for t in range(steps)]
    raise CodesignError(f"unknown pruning schedule {schedule!r}")


def finetune(model: nn.Module, dataset: Dataset, epochs: int, lr: float, cfg: Config, seed: int) -> nn.Module:
    """Fine-tune with :func:`codesign.train.fine_tune` (best validation checkpoint kept); returns ``model``."""
    from codesign.train import fine_tune

    fine_tune(model, dataset, cfg, epochs=epochs, lr=lr, seed=seed)
    return model
