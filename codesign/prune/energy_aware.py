"""Energy-aware pruning (Yang, Chen, Sze, CVPR 2017; ``prune.schedule: energy_aware``).

Step by step, prune the layer that accounts for the most energy (units or weights), fine-tune locally,
keep the step if a validation guard holds (else retry it with half the step, then freeze the layer),
fine-tune globally, iterate passes until the energy target.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from codesign import energy
from codesign.config import Config
from codesign.errors import CodesignError
from codesign.prune.budget import total_pj
from codesign.prune.common import accuracy, layer_stats, prunable_layers
from codesign.prune.report import nonzero_codes, unit_layer_rows, weight_layer_rows, weight_sparsity
from codesign.prune.units import importance, prune_once
from codesign.prune.weights import (
    Masks,
    apply_weight_masks,
    drop_smallest,
    finetune_masked,
    masked_nonzero_codes,
    weight_masks,
)

if TYPE_CHECKING:
    from codesign.data import Dataset


def val_metrics(model: nn.Module, dataset: Dataset) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on the validation split."""
    from codesign.train import predict

    logits = torch.as_tensor(predict(model, dataset.x_val))
    y = torch.as_tensor(dataset.y_val, dtype=torch.long)
    return float((logits.argmax(1) == y).double().mean()), float(nn.functional.cross_entropy(logits, y))


def energy_aware_prune(model: nn.Module, cfg: Config, dataset: Dataset, *, target_ratio: float | None = 2.5,
                       target_pj: float | None = None, max_drop: float = 0.01, local_drop: float = 0.03,
                       step_fraction: float = 0.15, local_epochs: int = 5, finetune_epochs: int | None = None,
                       granularity: str = "unit", guard: str = "accuracy", local_loss: float = 0.05,
                       rounds: int = 3,
                       progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
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
    if granularity not in ("unit", "weight"):
        raise CodesignError(f"prune.granularity must be 'unit' or 'weight' (got {granularity!r})")
    if guard not in ("accuracy", "loss"):
        raise CodesignError(f"energy-aware guard must be 'accuracy' or 'loss' (got {guard!r})")
    run = _EnergyAwareRun(model, cfg, dataset, weight=granularity == "weight", guard=guard, local_drop=local_drop,
                          local_loss=local_loss, step_fraction=step_fraction, local_epochs=local_epochs,
                          progress=progress)
    target = target_pj if target_pj is not None else run.e0 / float(target_ratio or 1.0)
    epochs = cfg.prune.finetune_epochs if finetune_epochs is None else finetune_epochs
    passes = max(1, rounds)
    for p in range(passes):
        run.prune_to(target)
        run.model = finetune_masked(run.model, dataset, epochs, run.cfg.train.lr * 0.3, run.cfg,
                                    run.cfg.seed + 999 + p, run.masks)
        run.e = run.energy()
        if run.e <= target or p == passes - 1:
            break
        run.frozen.clear()  # another pass from the globally fine-tuned model (Yang et al. iterate the passes)
    return run.model, run.cfg, run.report(granularity, guard, target, max_drop, epochs * (p + 1))


class _EnergyAwareRun:
    """One run of :func:`energy_aware_prune`: the current model and config, the weight masks (weight
    granularity), the frozen layers, the step fraction per layer, and the history and counters."""

    def __init__(self, model: nn.Module, cfg: Config, dataset: Dataset, *, weight: bool, guard: str, local_drop: float,
                 local_loss: float, step_fraction: float, local_epochs: int,
                 progress: Callable[[str], None] | None) -> None:
        self.cfg, self.dataset, self.weight, self.progress = cfg, dataset, weight, progress
        self.guard, self.local_drop, self.local_loss, self.local_epochs = guard, local_drop, local_loss, local_epochs
        self.strategy = cfg.rtl.strategy
        self.table = energy.EnergyTable.load()
        self.t0 = time.time()
        self.model = copy.deepcopy(model)
        self.e0 = self.e = self.energy()
        self.acc0_val, self.loss0_val = val_metrics(self.model, dataset)
        self.acc0 = accuracy(self.model, dataset.x_test, dataset.y_test)
        self.before = layer_stats(self.model)
        self.layers = self.model.weight_layers() if weight else prunable_layers(self.model)
        self.masks = weight_masks(self.model, self.layers) if weight else None
        self.nz_before = nonzero_codes(self.model)
        self.frozen: set[str] = set()
        self.frac = {n: float(step_fraction) for n in self.layers}  # halved on the layer after a failed step
        self.history: list[dict[str, Any]] = [{"step": 0, "energy_pj": self.e0, "val_accuracy": self.acc0_val,
                                               "val_loss": self.loss0_val, "layer": None}]
        self.mismatches = self.local_runs = self.step = 0

    def energy(self) -> float:
        return total_pj(self.model, self.table, self.strategy)

    def guard_holds(self, acc_val: float, loss_val: float) -> bool:
        if self.guard == "loss":
            return loss_val <= self.loss0_val + self.local_loss
        return acc_val >= self.acc0_val - self.local_drop - 1e-12

    def remaining(self, n: str) -> int:
        """Units (or kept weights) left in layer ``n``."""
        return int(self.masks[n].sum()) if self.weight else int(getattr(self.model, n).weight.shape[0])

    def next_layer(self) -> str | None:
        """The unfrozen layer with more than one unit (weight) left that accounts for the most energy."""
        costs = energy.weight_costs if self.weight else energy.unit_costs
        le = {n: float(c.sum()) for n, c in costs(self.model, self.table, self.strategy).items()}
        candidates = sorted(((le[n], n) for n in self.layers
                             if n not in self.frozen and self.remaining(n) > 1 and le[n] > 0), reverse=True)
        return candidates[0][1] if candidates else None

    def prune_to(self, target: float) -> None:
        """One pass: prune the most expensive layer, step by step, until the target or no layer is left."""
        while self.e > target:
            layer = self.next_layer()
            if layer is None:
                break
            self.prune_layer(layer)

    def trial(self, layer: str, k: int, n_left: int) -> tuple[nn.Module, Config, Masks | None]:
        """The current model with ``k`` more units (weights) of ``layer`` pruned, not yet fine-tuned."""
        if self.weight:
            masks = dict(self.masks)
            masks[layer] = drop_smallest(getattr(self.model, layer).weight, self.masks[layer], k)
            trial = copy.deepcopy(self.model)
            apply_weight_masks(trial, masks)
            return trial, self.cfg, masks
        costs = energy.unit_costs(self.model, self.table, self.strategy)
        score = importance(self.model, layer, "energy", cost_per_unit=lambda m, n, c=costs: c[n])
        keep = {n: np.arange(len(c)) for n, c in costs.items()}
        keep[layer] = np.sort(np.argsort(-score, kind="stable")[: n_left - k])
        trial, trial_cfg, mism = prune_once(self.model, self.cfg, keep, self.dataset.x_val)
        self.mismatches += mism
        return trial, trial_cfg, None

    def prune_layer(self, layer: str) -> None:
        """One step on ``layer``: prune, fine-tune locally, keep it if the guard holds; else retry with half
        the step, down to the smallest step (then the layer is frozen)."""
        n_left = self.remaining(layer)
        min_step = 1 if not self.weight else max(1, int(math.ceil(0.01 * n_left)))
        k = min(max(1, int(round(self.frac[layer] * n_left))), n_left - 1)
        while True:
            trial, trial_cfg, tmasks = self.trial(layer, k, n_left)
            trial = finetune_masked(trial, self.dataset, self.local_epochs, self.cfg.train.lr * 0.5, trial_cfg,
                                    self.cfg.seed + self.step, tmasks)
            self.local_runs += 1
            acc_val, loss_val = val_metrics(trial, self.dataset)
            self.step += 1
            what = f"{layer} {n_left}->{n_left - k} {'weights' if self.weight else 'units'}"
            failed = f"fails the guard (val acc {acc_val:.4f}, loss {loss_val:.4f})"
            if self.guard_holds(acc_val, loss_val):
                self.model, self.cfg, self.masks = trial, trial_cfg, tmasks  # tmasks: None for units
                self.e = self.energy()
                self.history.append({"step": self.step, "energy_pj": self.e, "val_accuracy": acc_val,
                                     "val_loss": loss_val, "layer": layer, "kept": n_left - k})
                self.say(f"step {self.step}: {what}, {self.e:.1f} pJ ({self.e0 / self.e:.2f}x), "
                         f"val acc {acc_val:.4f}, val loss {loss_val:.4f}")
                return
            if k <= min_step:
                self.frozen.add(layer)
                self.say(f"step {self.step}: {what} {failed}; layer frozen")
                return
            k = max(min_step, k // 2)
            self.frac[layer] /= 2
            self.say(f"step {self.step}: {what} {failed}; retry with {k}")

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    def report(self, granularity: str, guard: str, target: float, max_drop: float,
               global_epochs: int) -> dict[str, Any]:
        """The run's report (``global_epochs``: the global fine-tuning epochs of every pass together)."""
        after = layer_stats(self.model)
        e = self.energy()
        acc_val, loss_val = val_metrics(self.model, self.dataset)
        report: dict[str, Any] = {
            "criterion": "energy-aware", "granularity": granularity, "guard": guard,
            "energy_before_pj": self.e0, "energy_after_pj": e, "energy_ratio": self.e0 / e,
            "target_pj": target, "reached": e <= target * (1 + 1e-9),
            "within_max_drop": acc_val >= self.acc0_val - max_drop,
            "accuracy_before": self.acc0,
            "accuracy_after": accuracy(self.model, self.dataset.x_test, self.dataset.y_test),
            "val_accuracy_before": self.acc0_val, "val_accuracy_after": acc_val, "val_loss_before": self.loss0_val,
            "val_loss_after": loss_val, "masked_vs_removed_mismatches": self.mismatches,
            "local_finetunes": self.local_runs, "epochs": self.local_runs * self.local_epochs + global_epochs,
            "frozen": sorted(self.frozen), "seconds": round(time.time() - self.t0, 2), "history": self.history,
        }
        if self.weight:
            report["masked_nonzero_codes"] = masked_nonzero_codes(self.model, self.masks)
            report["sparsity"] = weight_sparsity(self.masks)
            report["layers"] = weight_layer_rows(self.model, self.nz_before, self.masks)
        else:
            report["layers"] = [{k: row[k] for k in ("layer", "units_before", "units_after")}
                                for row in unit_layer_rows(self.before, after)]
        return report
