"""Fine-grained pruning: single weights masked to exactly zero (``prune.granularity: weight``).

Every weight layer (the last included) loses single weights; shapes never change.
:class:`WeightMaskGuard` keeps masked weights at exactly 0 through QAT fine-tuning (masked gradients, a
forward pre-hook that re-applies the mask), and a float 0 quantizes to code 0, so QONNX, the golden model
and the RTL see exact zeros (``masked_nonzero_codes`` must be 0). In the fully parallel RTL a zero weight
generates no logic; in a folded layer it still costs a ROM read and a MAC slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import CodesignError, UnsupportedError
from codesign.prune.common import finetune, seeded_random_scores, taylor_accumulate, taylor_of

if TYPE_CHECKING:
    from codesign.data import Dataset

Masks = dict[str, torch.Tensor]  # weight layer -> bool tensor in the weight's shape (True = kept)


def weight_masks(model: nn.Module, layers: list[str] | None = None) -> Masks:
    """All-True masks (nothing pruned) for ``layers`` (default: every weight layer)."""
    return {n: torch.ones_like(getattr(model, n).weight, dtype=torch.bool) for n in (layers or model.weight_layers())}


def apply_weight_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the float weights outside the masks (in place). With zero-point-0 quantizers a float 0
    quantizes to code 0 (fixed point: ``round(0 / s) = 0``; power of two: 0 is a code), so the exported
    QONNX initializers, the golden model and the RTL see exact zeros."""
    with torch.no_grad():
        for n, m in masks.items():
            getattr(model, n).weight.masked_fill_(~m, 0.0)


def _mask_pre_hook(m: torch.Tensor):
    def hook(mod, inp):  # returns None: the input is left as it is
        mod.weight.data.masked_fill_(~m, 0.0)
    return hook


class WeightMaskGuard:
    """Context manager keeping masked weights at exactly zero while a model trains: the masks are
    applied on entry, every gradient is multiplied by its mask (so Adam's moments of a masked weight
    stay 0 and weight decay has nothing to decay), a forward pre-hook re-applies the mask before every
    forward (belt and braces: the best-validation checkpoint of the training loop is copied after a
    forward), and the mask is applied once more on exit, when the hooks are removed."""

    def __init__(self, model: nn.Module, masks: Masks):
        self.model, self.masks, self.handles = model, masks, []

    def __enter__(self) -> WeightMaskGuard:
        apply_weight_masks(self.model, self.masks)
        for n, m in self.masks.items():
            mod = getattr(self.model, n)
            self.handles.append(mod.weight.register_hook(lambda g, m=m: g * m.to(g.dtype)))
            self.handles.append(mod.register_forward_pre_hook(_mask_pre_hook(m)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        apply_weight_masks(self.model, self.masks)


def finetune_masked(model: nn.Module, dataset: Dataset, epochs: int, lr: float, cfg: Config, seed: int,
                    masks: Masks | None) -> nn.Module:
    """:func:`finetune` with the weight masks enforced throughout (no masks: plain fine-tuning)."""
    if not masks:
        return finetune(model, dataset, epochs, lr, cfg, seed)
    with WeightMaskGuard(model, masks):
        return finetune(model, dataset, epochs, lr, cfg, seed)


def weight_codes(model: nn.Module, layer: str) -> torch.Tensor:
    """Integer weight codes of ``layer`` as Brevitas quantizes (and exports) them."""
    m = getattr(model, layer)
    with torch.no_grad():
        qw = m.quant_weight()
        return torch.round(qw.value / qw.scale).to(torch.int64)


def masked_nonzero_codes(model: nn.Module, masks: Masks) -> int:
    """Masked weights whose quantized code is not 0 (must be 0)."""
    return int(sum(int(((weight_codes(model, n) != 0) & ~m).sum()) for n, m in masks.items()))


def taylor_weight_scores(model: nn.Module, x: np.ndarray, y: np.ndarray, layers: list[str], batches: int = 8,
                         batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Per-weight first-order Taylor importance (w * dL/dw)^2, summed over training batches."""
    return taylor_accumulate(model, x, y, layers, torch.Tensor.double, batches, batch_size)


def weight_importance(model: nn.Module, layer: str, criterion: str, *, grads: dict[str, torch.Tensor] | None = None,
                      seed: int = 0, cost: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Importance of every single weight of ``layer`` (weight shape; higher = keep)."""
    w = getattr(model, layer).weight.detach().double()
    if criterion in ("l1", "l2"):  # the norm of one weight is its magnitude
        return w.abs().numpy()
    if criterion == "random":
        return seeded_random_scores(seed, layer, tuple(w.shape))
    if criterion == "taylor":
        return taylor_of(grads, layer)
    if criterion == "energy":
        if cost is None:
            raise CodesignError("criterion 'energy' needs a cost model (per-weight pJ)")
        return w.abs().numpy() / np.maximum(np.asarray(cost[layer], dtype=float), 1e-12)
    if criterion in ("fpgm", "bn_gamma"):
        raise UnsupportedError(f"criterion {criterion!r} ranks whole units; with prune.granularity 'weight' use "
                               "l1, l2, taylor, random or energy")
    raise CodesignError(f"unknown pruning criterion {criterion!r}")


def select_weights(scores: dict[str, np.ndarray], masks: Masks, sparsity: float, scope: str = "layer",
                   per_layer: dict[str, float] | None = None) -> Masks:
    """New masks removing ``sparsity`` of each layer's weights (cumulative: already masked weights stay
    masked and count), the least important first. ``scope='global'`` ranks all weights together on
    scores normalized by each layer's maximum. Never masks every weight of a layer."""
    out: Masks = {}
    if scope == "global" and per_layer is None:
        total = sum(m.numel() for m in masks.values())
        n_keep = total - int(round(sparsity * total))
        flat, owner = [], []
        for n, m in masks.items():
            sc = np.asarray(scores[n], dtype=float).reshape(-1)
            top = sc[m.reshape(-1).numpy()].max(initial=0.0)
            sc = np.where(m.reshape(-1).numpy(), sc / (top if top > 0 else 1.0), -np.inf)
            flat.append(sc)
            owner.append(n)
        allsc = np.concatenate(flat)
        order = np.argsort(-allsc, kind="stable")
        keep = np.zeros(len(allsc), dtype=bool)
        keep[order[:max(n_keep, 0)]] = True
        keep &= np.isfinite(allsc)
        off = 0
        for n, sc in zip(owner, flat, strict=True):
            k = keep[off:off + len(sc)].copy()
            if not k.any():  # never a whole layer
                k[int(np.argmax(sc))] = True
            out[n] = torch.as_tensor(k).reshape(masks[n].shape)
            off += len(sc)
        return out
    for n, m in masks.items():
        frac = (per_layer or {}).get(n, sparsity)
        size = m.numel()
        n_keep = max(1, min(int(m.sum()), size - int(round(frac * size))))
        sc = np.where(m.reshape(-1).numpy(), np.asarray(scores[n], dtype=float).reshape(-1), -np.inf)
        keep = np.zeros(size, dtype=bool)
        keep[np.argsort(-sc, kind="stable")[:n_keep]] = True
        out[n] = torch.as_tensor(keep).reshape(m.shape)
    return out


def drop_smallest(w: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` with its ``k`` kept weights of smallest magnitude masked too."""
    sc = np.where(mask.reshape(-1).numpy(), w.detach().abs().double().reshape(-1).numpy(), np.inf)
    out = mask.clone().reshape(-1)
    out[torch.as_tensor(np.argsort(sc, kind="stable")[:k])] = False
    return out.reshape(mask.shape)


def kept_params(model: nn.Module, masks: Masks) -> int:
    n = 0
    for layer in model.weight_layers():
        mod = getattr(model, layer)
        n += int(masks[layer].sum()) if layer in masks else mod.weight.numel()
        n += mod.bias.numel() if mod.bias is not None else 0
    return n
