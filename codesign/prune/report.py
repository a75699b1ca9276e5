"""The pruning report (``prune/prune.json``): the per-layer rows and the summary every prune report has.

Every driver builds its report here: unit and weight pruning (:mod:`codesign.prune.stage`) and the
energy-aware schedule (:mod:`codesign.prune.energy_aware`), so a key means the same thing in all of them.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from torch import nn

from codesign.prune.common import LayerStat
from codesign.prune.weights import Masks, weight_codes


def unit_layer_rows(before: list[LayerStat], after: list[LayerStat]) -> list[dict[str, Any]]:
    """Per weight layer: units, parameters and MACs before and after unit pruning."""
    return [{"layer": b.name, "units_before": b.units, "units_after": a.units, "removed": b.units - a.units,
             "params_before": b.params, "params_after": a.params, "macs_before": b.macs, "macs_after": a.macs}
            for b, a in zip(before, after, strict=True)]


def unit_sparsity(before: list[LayerStat], after: list[LayerStat], layers: Collection[str]) -> float:
    """Fraction of the units of ``layers`` removed (4 decimals)."""
    units0 = sum(s.units for s in before if s.name in layers)
    return round(1 - sum(s.units for s in after if s.name in layers) / units0, 4) if units0 else 0.0


def nonzero_codes(model: nn.Module) -> dict[str, int]:
    """Non-zero quantized weight codes per weight layer."""
    return {n: int((weight_codes(model, n) != 0).sum()) for n in model.weight_layers()}


def weight_layer_rows(model: nn.Module, before: dict[str, int], masks: Masks) -> list[dict[str, Any]]:
    """Per weight layer: weights, masked weights and non-zero codes (``before``: :func:`nonzero_codes` of
    the unpruned model) after weight pruning."""
    rows = []
    for n in model.weight_layers():
        w = getattr(model, n).weight
        m = masks.get(n)
        rows.append({"layer": n, "weights": int(w.numel()), "nonzero_before": before[n],
                     "nonzero_after": int((weight_codes(model, n) != 0).sum()),
                     "masked": int((~m).sum()) if m is not None else 0})
    return rows


def weight_sparsity(masks: Masks) -> float:
    """Fraction of the masked weights (4 decimals)."""
    return round(sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()), 4)


def prune_report(granularity: str, criterion: str, schedule: str, scope: str, sparsity: float, *,
                 accuracy: tuple[float, float | None, float], params: tuple[int, int],
                 macs: tuple[int, int] | None = None, mismatches: int = 0, masked_nonzero: int | None = None,
                 t0: float, layers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The report of a unit or weight pruning run, keys in the order of ``prune.json``.

    ``accuracy``: test accuracy before pruning, right after it (``None``: nothing was pruned, the
    accuracy before is repeated) and after fine-tuning. ``params`` / ``macs``: before and after.
    ``masked_nonzero``: masked weights whose code is not 0 (weight pruning). ``t0``: when the run
    started (``time.time()``). ``extra`` keys follow ``layers``.
    """
    acc_before, acc_pruned, acc_after = accuracy
    report: dict[str, Any] = {
        "granularity": granularity, "criterion": criterion, "schedule": schedule, "scope": scope,
        "sparsity": sparsity, "accuracy_before": acc_before,
        "accuracy_pruned_no_finetune": acc_before if acc_pruned is None else acc_pruned,
        "accuracy_after": acc_after, "params_before": params[0], "params_after": params[1],
    }
    if macs is not None:
        report.update(macs_before=macs[0], macs_after=macs[1])
    report["masked_vs_removed_mismatches"] = mismatches
    if masked_nonzero is not None:
        report["masked_nonzero_codes"] = masked_nonzero
    report.update(seconds=round(time.time() - t0, 2), layers=layers, **extra)
    return report
