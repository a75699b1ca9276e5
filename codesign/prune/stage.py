"""The pruning driver and the flow stage: :func:`prune_model` prunes a trained model per ``cfg.prune``
(units or single weights, by a schedule or to a budget, or energy-aware) and returns the smaller model,
its config and the report; :func:`run_stage` runs it on ``train/model.pt`` and writes
``prune/model.pt`` and ``prune/prune.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import CodesignError
from codesign.prune.budget import budget_keep, budget_masks, budget_meter
from codesign.prune.common import (
    CostFn,
    _check_supported,
    accuracy,
    finetune,
    layer_stats,
    prunable_layers,
    schedule_targets,
)
from codesign.prune.energy_aware import energy_aware_prune
from codesign.prune.slimming import slimming_train
from codesign.prune.units import coupled_groups, importance, prune_once, select_units, taylor_scores
from codesign.prune.weights import (
    _weight_layer_report,
    apply_weight_masks,
    finetune_masked,
    kept_params,
    masked_nonzero_codes,
    select_weights,
    taylor_weight_scores,
    weight_codes,
    weight_importance,
    weight_masks,
)


def _sync_gammas(gammas: dict[str, torch.Tensor] | None, keep: dict[str, np.ndarray]) -> None:
    if gammas is not None:
        for n, k in keep.items():
            gammas[n] = gammas[n][torch.as_tensor(k)]


def prune_model(model: nn.Module, cfg: Config, dataset, *, criterion: str | None = None,
                sparsity: float | None = None, schedule: str | None = None, steps: int | None = None,
                finetune_epochs: int | None = None, scope: str | None = None,
                budget_params: int | None = None, budget_pj: float | None = None,
                coupled: list[list[str]] | None = None, granularity: str | None = None,
                cost_per_unit: CostFn | None = None, progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Prune ``model`` (a trained QuantNet) per ``cfg.prune`` (keyword arguments override it).

    ``granularity='unit'`` (default) removes whole neurons / filters of every layer but the last;
    ``'weight'`` masks single weights of every weight layer to exactly 0 (same shapes; the returned model
    has zero float weights, so zero codes in QONNX / golden / RTL). ``schedule='energy_aware'`` runs
    :func:`energy_aware_prune` (Yang et al.) with ``prune.energy_ratio`` / ``budget_pj`` as the target.

    Budget mode (``budget_params`` / ``budget_pj``, or ``prune.budget_*``) replaces the sparsity target:
    units are removed greedily (least importance per unit of cost first) until the model has at most
    that many parameters / pJ per inference, then fine-tuned. ``criterion='bn_gamma'`` first runs
    :func:`slimming_train` and ranks units by ``|gamma|``.

    Returns the physically smaller model, its config, and a report (per-layer kept/removed, params
    and MACs before/after, accuracy before/after fine-tuning, masked-vs-removed mismatches).
    """
    pc = cfg.prune
    criterion = criterion or pc.criterion
    sparsity = pc.sparsity if sparsity is None else sparsity
    schedule = schedule or pc.schedule
    steps = steps or pc.steps
    epochs = pc.finetune_epochs if finetune_epochs is None else finetune_epochs
    scope = scope or pc.scope
    coupled = pc.coupled if coupled is None else coupled
    ft_lr = pc.finetune_lr or cfg.train.lr
    if budget_params is None and budget_pj is None:
        budget_params, budget_pj = pc.budget_params, pc.budget_pj
    if budget_params is not None and budget_pj is not None:
        raise CodesignError("prune: give one budget, budget_params or budget_pj, not both")
    granularity = granularity or pc.granularity
    _check_supported(model)
    if schedule == "energy_aware":
        return _energy_aware_stage(model, cfg, dataset, granularity, epochs, budget_params, budget_pj, progress)
    if granularity == "weight":
        return _prune_weights(model, cfg, dataset, criterion=criterion, sparsity=sparsity, schedule=schedule, steps=steps,
                              epochs=epochs, scope=scope, ft_lr=ft_lr, budget_params=budget_params, budget_pj=budget_pj,
                              progress=progress)
    coupled_groups(model, coupled)  # validate early
    if criterion == "energy" and cost_per_unit is None:
        from codesign import energy

        table = energy.EnergyTable.load()
        cost_per_unit = lambda m, n: energy.unit_costs(m, table, cfg.rtl.strategy)[n]  # noqa: E731
    t0 = time.time()
    before = layer_stats(model)
    original_units = {s.name: s.units for s in before if s.name in prunable_layers(model)}
    acc_before = accuracy(model, dataset.x_test, dataset.y_test)
    gammas = None
    extra: dict[str, Any] = {}
    if criterion == "bn_gamma":
        model, gammas = slimming_train(model, cfg, dataset, seed=cfg.seed)
        extra["accuracy_slimmed_folded"] = accuracy(model, dataset.x_test, dataset.y_test)
        if progress:
            progress(f"slimming: {pc.slimming_epochs} epochs, L1 {pc.slimming_l1:g}; folded QAT model accuracy "
                     f"{extra['accuracy_slimmed_folded']:.4f}")

    def grads_for(m):
        if criterion == "taylor":
            return taylor_scores(m, dataset.x_train, dataset.y_train)
        return gammas

    mismatches = 0
    acc_pruned = None
    budget = budget_params is not None or budget_pj is not None
    if budget:
        meter = budget_meter(cfg, budget_params, budget_pj)
        unit, limit = meter.unit, meter.limit
        start_total = meter.total(model)
        t = 0
        while (cur := meter.total(model)) > limit * (1 + 1e-9):
            grads = grads_for(model)
            scores = {n: np.asarray(importance(model, n, criterion, grads=grads, seed=cfg.seed + t,
                                               cost_per_unit=cost_per_unit), dtype=float) for n in prunable_layers(model)}
            keep = budget_keep(model, scores, meter.costs(model), cur - limit, coupled)
            if all(len(k) == getattr(model, n).weight.shape[0] for n, k in keep.items()) or t >= 50:
                raise CodesignError(f"prune: budget {limit:g} {unit} cannot be met: {cur:g} {unit} with one unit "
                                    "left in every prunable layer")
            _sync_gammas(gammas, keep)
            model, cfg, mism = prune_once(model, cfg, keep, dataset.x_test)
            mismatches += mism
            t += 1
            if progress:
                progress(f"budget step {t}: {meter.total(model):.6g} {unit} (limit {limit:g}), units "
                         + ", ".join(f"{n} {len(k)}" for n, k in keep.items()))
        acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
        model = finetune(model, dataset, epochs, ft_lr, cfg, cfg.seed)
        extra.update({"budget_unit": unit, "budget": limit, "budget_before": start_total, "budget_after": meter.total(model)})
    else:
        targets = schedule_targets(schedule, sparsity, steps)
        per_step_epochs = max(1, epochs // len(targets)) if epochs else 0
        for t, target in enumerate(targets):
            # fraction of the *current* units to remove so that the original count reaches the target
            cur = {s.name: s.units for s in layer_stats(model) if s.name in original_units}
            per_layer = {n: max(0.0, 1 - (original_units[n] * (1 - target)) / cur[n]) for n in cur}
            grads = grads_for(model)
            if scope == "global":
                keep = select_units(model, criterion, 1 - sum(original_units[n] * (1 - target) for n in cur) / sum(cur.values()),
                                    "global", grads=grads, seed=cfg.seed + t, cost_per_unit=cost_per_unit, coupled=coupled)
            else:
                keep = select_units(model, criterion, 0.0, "layer", grads=grads, seed=cfg.seed + t,
                                    cost_per_unit=cost_per_unit, per_layer=per_layer, coupled=coupled)
            _sync_gammas(gammas, keep)
            model, cfg, mism = prune_once(model, cfg, keep, dataset.x_test)
            mismatches += mism
            if acc_pruned is None:
                acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
            if progress:
                progress(f"step {t + 1}/{len(targets)}: sparsity {target:.2f}, units "
                         + ", ".join(f"{n} {len(k)}" for n, k in keep.items()))
            model = finetune(model, dataset, per_step_epochs, ft_lr, cfg, cfg.seed + t)
    after = layer_stats(model)
    acc_after = accuracy(model, dataset.x_test, dataset.y_test)
    layers = []
    for b, a in zip(before, after, strict=True):
        layers.append({"layer": b.name, "units_before": b.units, "units_after": a.units,
                       "removed": b.units - a.units, "params_before": b.params, "params_after": a.params,
                       "macs_before": b.macs, "macs_after": a.macs})
    total_units = sum(original_units.values())
    kept_units = sum(s.units for s in after if s.name in original_units)
    report = {
        "granularity": "unit", "criterion": criterion, "schedule": "budget" if budget else schedule, "scope": scope,
        "sparsity": round(1 - kept_units / total_units, 4) if total_units else 0.0,
        "accuracy_before": acc_before,
        "accuracy_pruned_no_finetune": acc_before if acc_pruned is None else acc_pruned,
        "accuracy_after": acc_after,
        "params_before": sum(s.params for s in before), "params_after": sum(s.params for s in after),
        "macs_before": sum(s.macs for s in before), "macs_after": sum(s.macs for s in after),
        "masked_vs_removed_mismatches": mismatches, "seconds": round(time.time() - t0, 2), "layers": layers,
        "coupled": coupled_groups(model, coupled), **extra,
    }
    return model, cfg, report


def _prune_weights(model: nn.Module, cfg: Config, dataset, *, criterion: str, sparsity: float, schedule: str,
                   steps: int, epochs: int, scope: str, ft_lr: float, budget_params: int | None,
                   budget_pj: float | None, progress: Callable[[str], None] | None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """prune_model with ``granularity='weight'``: every weight layer (the last included) loses its least
    important single weights; masks keep them at 0 through fine-tuning; shapes are unchanged."""
    import copy

    from codesign import energy

    model = copy.deepcopy(model)
    t0 = time.time()
    layers = model.weight_layers()
    masks = weight_masks(model, layers)
    nz_before = {n: int((weight_codes(model, n) != 0).sum()) for n in layers}
    params_before = kept_params(model, masks)
    acc_before = accuracy(model, dataset.x_test, dataset.y_test)
    table = energy.EnergyTable.load()

    def scores_for(m, t):
        grads = taylor_weight_scores(m, dataset.x_train, dataset.y_train, layers) if criterion == "taylor" else None
        cost = energy.weight_costs(m, table, cfg.rtl.strategy) if criterion == "energy" else None
        return {n: weight_importance(m, n, criterion, grads=grads, seed=cfg.seed + t, cost=cost) for n in layers}

    extra: dict[str, Any] = {}
    acc_pruned = None
    if budget_params is not None or budget_pj is not None:
        meter = budget_meter(cfg, budget_params, budget_pj, "weight")
        unit, limit = meter.unit, meter.limit
        start = meter.total(model, masks)
        for t in range(60):
            cur = meter.total(model, masks)
            if cur <= limit * (1 + 1e-9):
                break
            new = budget_masks(scores_for(model, t), meter.costs(model, masks), masks, cur - limit)
            if all(torch.equal(new[n], masks[n]) for n in layers):
                raise CodesignError(f"prune: budget {limit:g} {unit} cannot be met with single weights: {cur:g} {unit}"
                                    + (" (folded layers, rtl.strategy resource: a zero weight saves no energy)"
                                       if unit == "pJ" and cfg.rtl.strategy == "resource" else ""))
            masks = new
            apply_weight_masks(model, masks)
            if progress:
                progress(f"budget step {t + 1}: {meter.total(model, masks):.6g} {unit} (limit {limit:g}), kept weights "
                         + ", ".join(f"{n} {int(masks[n].sum())}" for n in layers))
        else:
            raise CodesignError(f"prune: budget {limit:g} {unit} not met after 60 steps")
        acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
        model = finetune_masked(model, dataset, epochs, ft_lr, cfg, cfg.seed, masks)
        extra.update({"budget_unit": unit, "budget": limit, "budget_before": start, "budget_after": meter.total(model, masks)})
    else:
        targets = schedule_targets(schedule, sparsity, steps)
        per_step_epochs = max(1, epochs // len(targets)) if epochs else 0
        for t, target in enumerate(targets):
            masks = select_weights(scores_for(model, t), masks, target, scope)
            apply_weight_masks(model, masks)
            if acc_pruned is None:
                acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
            if progress:
                progress(f"step {t + 1}/{len(targets)}: weight sparsity {target:.2f}, kept weights "
                         + ", ".join(f"{n} {int(masks[n].sum())}/{masks[n].numel()}" for n in layers))
            model = finetune_masked(model, dataset, per_step_epochs, ft_lr, cfg, cfg.seed + t, masks)
    total_w = sum(m.numel() for m in masks.values())
    report = {
        "granularity": "weight", "criterion": criterion, "schedule": "budget" if extra else schedule, "scope": scope,
        "sparsity": round(sum(int((~m).sum()) for m in masks.values()) / total_w, 4),
        "accuracy_before": acc_before,
        "accuracy_pruned_no_finetune": acc_before if acc_pruned is None else acc_pruned,
        "accuracy_after": accuracy(model, dataset.x_test, dataset.y_test),
        "params_before": params_before, "params_after": kept_params(model, masks),
        "masked_vs_removed_mismatches": 0, "masked_nonzero_codes": masked_nonzero_codes(model, masks),
        "seconds": round(time.time() - t0, 2), "layers": _weight_layer_report(model, nz_before, masks), **extra,
    }
    return model, cfg, report


def _energy_aware_stage(model: nn.Module, cfg: Config, dataset, granularity: str, epochs: int,
                        budget_params: int | None, budget_pj: float | None,
                        progress: Callable[[str], None] | None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """prune_model with ``schedule='energy_aware'``: :func:`energy_aware_prune` with the ``prune:`` options,
    its report completed with the keys every prune report has."""
    if budget_params is not None:
        raise CodesignError("prune.schedule energy_aware takes an energy target (prune.energy_ratio or "
                            "prune.budget_pj), not budget_params")
    pc = cfg.prune
    before = layer_stats(model)
    params_before = sum(s.params for s in before)
    small, scfg, rep = energy_aware_prune(model, cfg, dataset, target_ratio=pc.energy_ratio, target_pj=budget_pj,
                                          local_drop=pc.local_drop, step_fraction=pc.step_fraction,
                                          local_epochs=pc.local_epochs, finetune_epochs=epochs, granularity=granularity,
                                          guard=pc.guard, local_loss=pc.local_loss, progress=progress)
    after = layer_stats(small)
    rep.update(schedule="energy_aware", scope="layer", accuracy_pruned_no_finetune=rep["accuracy_after"],
               params_before=params_before, budget_unit="pJ", budget=rep["target_pj"],
               budget_after=rep["energy_after_pj"])
    if granularity == "unit":
        units0 = sum(s.units for s in before[:-1])
        rep.update(sparsity=round(1 - sum(s.units for s in after[:-1]) / units0, 4) if units0 else 0.0,
                   params_after=sum(s.params for s in after),
                   layers=[{"layer": b.name, "units_before": b.units, "units_after": a.units, "removed": b.units - a.units,
                            "params_before": b.params, "params_after": a.params, "macs_before": b.macs,
                            "macs_after": a.macs} for b, a in zip(before, after, strict=True)])
    else:
        rep["params_after"] = params_before - sum(la["masked"] for la in rep["layers"])
    return small, scfg, rep


def run_stage(rd, cfg: Config) -> dict[str, Any]:
    """Prune ``train/model.pt`` per ``cfg.prune``; write ``prune/model.pt`` and ``prune/prune.json``."""
    from rich.console import Console
    from rich.table import Table

    from codesign import data
    from codesign.run import atomic_write_json
    from codesign.train import load_model, save_model

    torch.set_num_threads(1)
    model = load_model(rd.require("train/model.pt", "train"))
    ds = data.load(cfg.data, cfg.seed)
    console = Console(stderr=True)
    small, small_cfg, rep = prune_model(model, cfg, ds, progress=lambda s: console.print(s))
    out = rd.stage_dir("prune")
    save_model(out / "model.pt", small, small_cfg, small.input_shape, small.n_classes)
    rd.add(out / "model.pt", "prune")
    atomic_write_json(out / "prune.json", rep)
    rd.add(out / "prune.json", "prune")
    if rep.get("granularity") == "weight":
        t = Table(title=f"weight pruning ({rep['criterion']}, {rep['schedule']})")
        for c in ("layer", "weights", "masked", "non-zero codes"):
            t.add_column(c, justify="right")
        for layer in rep["layers"]:
            t.add_row(layer["layer"], str(layer["weights"]), str(layer["masked"]),
                      f"{layer['nonzero_before']} -> {layer['nonzero_after']}")
    else:
        t = Table(title=f"structured pruning ({rep['criterion']}, {rep['schedule']})")
        for c in ("layer", "units", "removed", "params", "MACs"):
            t.add_column(c, justify="right")
        for layer in rep["layers"]:
            t.add_row(layer["layer"], f"{layer['units_before']} -> {layer['units_after']}", str(layer["removed"]),
                      f"{layer['params_before']} -> {layer['params_after']}", f"{layer['macs_before']} -> {layer['macs_after']}")
    Console().print(t)
    figures = {k: rep[k] for k in ("granularity", "sparsity", "accuracy_before", "accuracy_after",
                                   "accuracy_pruned_no_finetune", "params_before", "params_after",
                                   "masked_vs_removed_mismatches", "masked_nonzero_codes", "criterion",
                                   "budget_unit", "budget", "budget_after", "energy_before_pj", "energy_after_pj",
                                   "energy_ratio") if k in rep}
    rd.record("prune", figures)
    if rep["masked_vs_removed_mismatches"]:
        raise CodesignError(f"physical removal changed the model's outputs on {rep['masked_vs_removed_mismatches']} vectors")
    if rep.get("masked_nonzero_codes"):
        raise CodesignError(f"{rep['masked_nonzero_codes']} pruned weights do not quantize to code 0")
    return figures
