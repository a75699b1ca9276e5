"""Energy-aware pruning (Yang, Chen, Sze, CVPR 2017; ``prune.schedule: energy_aware``).

Step by step, prune the layer that accounts for the most energy (units or weights), fine-tune locally,
keep the step if a validation guard holds (else retry it with half the step, then freeze the layer),
fine-tune globally, iterate passes until the energy target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import CodesignError
from codesign.prune.budget import total_pj
from codesign.prune.common import accuracy, layer_stats, prunable_layers
from codesign.prune.report import nonzero_codes, unit_layer_rows, weight_layer_rows, weight_sparsity
from codesign.prune.units import importance, prune_once
from codesign.prune.weights import (
    _drop_smallest,
    apply_weight_masks,
    finetune_masked,
    masked_nonzero_codes,
    weight_masks,
)


def val_metrics(model: nn.Module, dataset) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on the validation split."""
    from codesign.train import predict

    logits = torch.as_tensor(predict(model, dataset.x_val))
    y = torch.as_tensor(dataset.y_val, dtype=torch.long)
    return float((logits.argmax(1) == y).double().mean()), float(nn.functional.cross_entropy(logits, y))


def energy_aware_prune(model: nn.Module, cfg: Config, dataset, *, target_ratio: float | None = 2.5,
                       target_pj: float | None = None, max_drop: float = 0.01, local_drop: float = 0.03,
                       step_fraction: float = 0.15, local_epochs: int = 5, finetune_epochs: int | None = None,
                       granularity: str = "unit", guard: str = "accuracy", local_loss: float = 0.05,
                       rounds: int = 3, progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Prune where the energy is spent until the estimate reaches the target.

    Each step takes the layer that accounts for the most prunable energy and removes ``step_fraction``
    of what is left of it:

    * ``granularity='unit'``: whole neurons / filters (lowest L1 magnitude per pJ; a unit's energy is
      :func:`codesign.energy.unit_costs`: own terms and register plus its columns in the next layer),
      removed physically; layers ranked by the summed unit costs; the last layer is not prunable;
    * ``granularity='weight'`` (Yang et al.): single weights, smallest magnitude within the layer
      first, masked to exactly 0 (:class:`WeightMaskGuard`; shapes unchanged); layers ranked by the energy
      their non-zero weights cost (:func:`codesign.energy.weight_costs`: 0 in folded layers, where a zero
      weight saves nothing); every weight layer is prunable.

    The pruned model is fine-tuned locally (``local_epochs``, masks enforced) and the step is kept only if
    the guard holds on the validation split: ``guard='accuracy'``: accuracy within ``local_drop`` of the
    unpruned model; ``guard='loss'``: mean cross-entropy at most ``local_loss`` (nats) above it. A failed
    step is retried on the same layer with half the step (down to one unit, or 1% of the layer's remaining
    weights); only when the smallest step fails is the layer frozen. A global fine-tuning
    (``finetune_epochs``) ends a pass; while the target is not reached, another pass starts from the
    globally fine-tuned model with every layer unfrozen (up to ``rounds`` passes, as Yang et al. iterate).
    ``target_pj`` (budget mode) overrides ``target_ratio``.
    """
    import copy

    from codesign import energy

    if granularity not in ("unit", "weight"):
        raise CodesignError(f"prune.granularity must be 'unit' or 'weight' (got {granularity!r})")
    if guard not in ("accuracy", "loss"):
        raise CodesignError(f"energy-aware guard must be 'accuracy' or 'loss' (got {guard!r})")
    strategy = cfg.rtl.strategy
    table = energy.EnergyTable.load()

    t0 = time.time()
    model = copy.deepcopy(model)
    e0 = total_pj(model, table, strategy)
    target = target_pj if target_pj is not None else e0 / float(target_ratio or 1.0)
    acc0_val, loss0_val = val_metrics(model, dataset)
    acc0 = accuracy(model, dataset.x_test, dataset.y_test)
    before = layer_stats(model)
    weight = granularity == "weight"
    layers = model.weight_layers() if weight else prunable_layers(model)
    masks = weight_masks(model, layers) if weight else None
    nz_before = nonzero_codes(model)
    frozen: set[str] = set()
    frac = {n: float(step_fraction) for n in layers}  # halved on the layer after a failed step
    history: list[dict[str, Any]] = [{"step": 0, "energy_pj": e0, "val_accuracy": acc0_val, "val_loss": loss0_val,
                                      "layer": None}]
    mismatches = 0
    local_runs = 0
    e = e0
    step = 0
    epochs = cfg.prune.finetune_epochs if finetune_epochs is None else finetune_epochs

    def ok(acc_val: float, loss_val: float) -> bool:
        if guard == "loss":
            return loss_val <= loss0_val + local_loss
        return acc_val >= acc0_val - local_drop - 1e-12

    def layer_energy(m: nn.Module) -> dict[str, float]:
        if weight:
            return {n: float(c.sum()) for n, c in energy.weight_costs(m, table, strategy).items()}
        return {n: float(c.sum()) for n, c in energy.unit_costs(m, table, strategy).items()}

    def remaining(m: nn.Module, n: str) -> int:
        return int(masks[n].sum()) if weight else int(getattr(m, n).weight.shape[0])

    for _round in range(max(1, rounds)):
        while e > target:
            le = layer_energy(model)
            candidates = sorted(((le[n], n) for n in layers if n not in frozen and remaining(model, n) > 1 and le[n] > 0),
                                reverse=True)
            if not candidates:
                break
            _, layer = candidates[0]
            n_left = remaining(model, layer)
            min_step = 1 if not weight else max(1, int(math.ceil(0.01 * n_left)))
            k = min(max(1, int(round(frac[layer] * n_left))), n_left - 1)
            while True:
                if weight:
                    tmasks = dict(masks)
                    tmasks[layer] = _drop_smallest(getattr(model, layer).weight, masks[layer], k)
                    trial, trial_cfg = copy.deepcopy(model), cfg
                    apply_weight_masks(trial, tmasks)
                else:
                    costs = energy.unit_costs(model, table, strategy)
                    score = importance(model, layer, "energy", cost_per_unit=lambda m, n, c=costs: c[n])
                    keep = {n: np.arange(len(c)) for n, c in costs.items()}
                    keep[layer] = np.sort(np.argsort(-score, kind="stable")[: n_left - k])
                    trial, trial_cfg, mism = prune_once(model, cfg, keep, dataset.x_val)
                    mismatches += mism
                    tmasks = None
                trial = finetune_masked(trial, dataset, local_epochs, cfg.train.lr * 0.5, trial_cfg, cfg.seed + step,
                                        tmasks)
                local_runs += 1
                acc_val, loss_val = val_metrics(trial, dataset)
                step += 1
                what = f"{layer} {n_left}->{n_left - k} {'weights' if weight else 'units'}"
                if ok(acc_val, loss_val):
                    model, cfg = trial, trial_cfg
                    if weight:
                        masks = tmasks
                    e = total_pj(model, table, strategy)
                    history.append({"step": step, "energy_pj": e, "val_accuracy": acc_val, "val_loss": loss_val,
                                    "layer": layer, "kept": n_left - k})
                    if progress:
                        progress(f"step {step}: {what}, {e:.1f} pJ ({e0 / e:.2f}x), val acc {acc_val:.4f}, "
                                 f"val loss {loss_val:.4f}")
                    break
                if k <= min_step:
                    frozen.add(layer)
                    if progress:
                        progress(f"step {step}: {what} fails the guard (val acc {acc_val:.4f}, loss {loss_val:.4f}); "
                                 "layer frozen")
                    break
                k = max(min_step, k // 2)
                frac[layer] /= 2
                if progress:
                    progress(f"step {step}: {what} fails the guard (val acc {acc_val:.4f}, loss {loss_val:.4f}); "
                             f"retry with {k}")
        model = finetune_masked(model, dataset, epochs, cfg.train.lr * 0.3, cfg, cfg.seed + 999 + _round, masks)
        e = total_pj(model, table, strategy)
        if e <= target or _round == max(1, rounds) - 1:
            break
        frozen.clear()  # another pass from the globally fine-tuned model (Yang et al. iterate the passes)
    after = layer_stats(model)
    e = total_pj(model, table, strategy)
    acc_val, loss_val = val_metrics(model, dataset)
    report: dict[str, Any] = {
        "criterion": "energy-aware", "granularity": granularity, "guard": guard,
        "energy_before_pj": e0, "energy_after_pj": e, "energy_ratio": e0 / e,
        "target_pj": target, "reached": e <= target * (1 + 1e-9),
        "within_max_drop": acc_val >= acc0_val - max_drop,
        "accuracy_before": acc0, "accuracy_after": accuracy(model, dataset.x_test, dataset.y_test),
        "val_accuracy_before": acc0_val, "val_accuracy_after": acc_val, "val_loss_before": loss0_val,
        "val_loss_after": loss_val, "masked_vs_removed_mismatches": mismatches,
        "local_finetunes": local_runs, "epochs": local_runs * local_epochs + epochs * (_round + 1),
        "frozen": sorted(frozen), "seconds": round(time.time() - t0, 2), "history": history,
    }
    if weight:
        report["masked_nonzero_codes"] = masked_nonzero_codes(model, masks)
        report["sparsity"] = weight_sparsity(masks)
        report["layers"] = weight_layer_rows(model, nz_before, masks)
    else:
        report["layers"] = [{k: row[k] for k in ("layer", "units_before", "units_after")}
                            for row in unit_layer_rows(before, after)]
    return model, cfg, report
