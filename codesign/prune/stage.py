"""The pruning driver and the flow stage: :func:`prune_model` prunes a trained model per ``cfg.prune``
(units or single weights, by a schedule or to a budget, or energy-aware) and returns the smaller model,
its config and the report; :func:`run_stage` runs it on ``train/model.pt`` and writes
``prune/model.pt`` and ``prune/prune.json``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from codesign import energy
from codesign.config import Config
from codesign.errors import CodesignError
from codesign.prune.budget import budget_keep, budget_masks, budget_meter
from codesign.prune.common import (
    CostFn,
    accuracy,
    check_supported,
    finetune,
    layer_stats,
    prunable_layers,
    schedule_targets,
)
from codesign.prune.energy_aware import energy_aware_prune
from codesign.prune.report import (
    nonzero_codes,
    prune_report,
    unit_layer_rows,
    unit_sparsity,
    weight_layer_rows,
    weight_sparsity,
)
from codesign.prune.slimming import slimming_train
from codesign.prune.units import coupled_groups, importance, prune_once, select_units, taylor_scores
from codesign.prune.weights import (
    Masks,
    apply_weight_masks,
    finetune_masked,
    kept_params,
    masked_nonzero_codes,
    select_weights,
    taylor_weight_scores,
    weight_importance,
    weight_masks,
)

if TYPE_CHECKING:
    from codesign.data import Dataset
    from codesign.run import RunDir

Progress = Callable[[str], None] | None
Result = tuple[nn.Module, Config, dict[str, Any]]


@dataclass(frozen=True)
class _Options:
    """``cfg.prune`` with the keyword arguments of :func:`prune_model` applied."""

    criterion: str
    sparsity: float
    schedule: str
    steps: int
    epochs: int
    scope: str
    coupled: list[list[str]]
    ft_lr: float
    budget_params: int | None
    budget_pj: float | None
    granularity: str

    @property
    def budget(self) -> bool:
        return self.budget_params is not None or self.budget_pj is not None


def _options(cfg: Config, *, criterion: str | None, sparsity: float | None, schedule: str | None,
             steps: int | None, finetune_epochs: int | None, scope: str | None, budget_params: int | None,
             budget_pj: float | None, coupled: list[list[str]] | None, granularity: str | None) -> _Options:
    pc = cfg.prune
    if budget_params is None and budget_pj is None:
        budget_params, budget_pj = pc.budget_params, pc.budget_pj
    if budget_params is not None and budget_pj is not None:
        raise CodesignError("prune: give one budget, budget_params or budget_pj, not both")
    return _Options(criterion=criterion or pc.criterion, sparsity=pc.sparsity if sparsity is None else sparsity,
                    schedule=schedule or pc.schedule, steps=steps or pc.steps,
                    epochs=pc.finetune_epochs if finetune_epochs is None else finetune_epochs,
                    scope=scope or pc.scope, coupled=pc.coupled if coupled is None else coupled,
                    ft_lr=pc.finetune_lr or cfg.train.lr, budget_params=budget_params, budget_pj=budget_pj,
                    granularity=granularity or pc.granularity)


def prune_model(model: nn.Module, cfg: Config, dataset: Dataset, *, criterion: str | None = None,
                sparsity: float | None = None, schedule: str | None = None, steps: int | None = None,
                finetune_epochs: int | None = None, scope: str | None = None,
                budget_params: int | None = None, budget_pj: float | None = None,
                coupled: list[list[str]] | None = None, granularity: str | None = None,
                cost_per_unit: CostFn | None = None,
                progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
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
    opt = _options(cfg, criterion=criterion, sparsity=sparsity, schedule=schedule, steps=steps,
                   finetune_epochs=finetune_epochs, scope=scope, budget_params=budget_params, budget_pj=budget_pj,
                   coupled=coupled, granularity=granularity)
    check_supported(model)
    if opt.schedule == "energy_aware":
        return _energy_aware_stage(model, cfg, dataset, opt, progress)
    if opt.granularity == "weight":
        return _prune_weights(model, cfg, dataset, opt, progress)
    return _prune_units(model, cfg, dataset, opt, cost_per_unit, progress)


# ---------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------
@dataclass
class _UnitRun:
    """A unit pruning run in progress: the current model and config, the importance inputs, the counts."""

    model: nn.Module
    cfg: Config
    dataset: Dataset
    opt: _Options
    cost_per_unit: CostFn | None
    gammas: dict[str, torch.Tensor] | None = None
    mismatches: int = 0
    acc_pruned: float | None = None

    def grads(self) -> dict[str, torch.Tensor] | None:
        """What the criterion ranks with besides the weights: Taylor scores, or the slimming gammas."""
        if self.opt.criterion == "taylor":
            return taylor_scores(self.model, self.dataset.x_train, self.dataset.y_train)
        return self.gammas

    def remove(self, keep: dict[str, np.ndarray]) -> None:
        """Remove every unit not in ``keep`` (masked, removed physically, checked against the mask)."""
        if self.gammas is not None:
            for n, k in keep.items():
                self.gammas[n] = self.gammas[n][torch.as_tensor(k)]
        self.model, self.cfg, mism = prune_once(self.model, self.cfg, keep, self.dataset.x_test)
        self.mismatches += mism


def _prune_units(model: nn.Module, cfg: Config, dataset: Dataset, opt: _Options, cost_per_unit: CostFn | None,
                 progress: Progress) -> Result:
    """prune_model with ``granularity='unit'``: whole neurons / filters removed physically."""
    coupled_groups(model, opt.coupled)  # validate early
    if opt.criterion == "energy" and cost_per_unit is None:
        table = energy.EnergyTable.load()
        cost_per_unit = lambda m, n: energy.unit_costs(m, table, cfg.rtl.strategy)[n]  # noqa: E731
    t0 = time.time()
    before = layer_stats(model)
    prunable = [s.name for s in before if s.name in prunable_layers(model)]
    acc_before = accuracy(model, dataset.x_test, dataset.y_test)
    run = _UnitRun(model, cfg, dataset, opt, cost_per_unit)
    extra: dict[str, Any] = {}
    if opt.criterion == "bn_gamma":
        run.model, run.gammas = slimming_train(model, cfg, dataset, seed=cfg.seed)
        extra["accuracy_slimmed_folded"] = accuracy(run.model, dataset.x_test, dataset.y_test)
        if progress:
            progress(f"slimming: {cfg.prune.slimming_epochs} epochs, L1 {cfg.prune.slimming_l1:g}; folded QAT model "
                     f"accuracy {extra['accuracy_slimmed_folded']:.4f}")
    if opt.budget:
        extra.update(_units_to_budget(run, progress))
    else:
        _units_by_schedule(run, {s.name: s.units for s in before if s.name in prunable}, progress)
    after = layer_stats(run.model)
    acc_after = accuracy(run.model, dataset.x_test, dataset.y_test)
    report = prune_report("unit", opt.criterion, "budget" if opt.budget else opt.schedule, opt.scope,
                          unit_sparsity(before, after, prunable), accuracy=(acc_before, run.acc_pruned, acc_after),
                          params=(sum(s.params for s in before), sum(s.params for s in after)),
                          macs=(sum(s.macs for s in before), sum(s.macs for s in after)), mismatches=run.mismatches,
                          t0=t0, layers=unit_layer_rows(before, after),
                          coupled=coupled_groups(run.model, opt.coupled), **extra)
    return run.model, run.cfg, report


def _units_to_budget(run: _UnitRun, progress: Progress) -> dict[str, Any]:
    """Budget mode: remove units greedily until the budget holds, then fine-tune. Returns the budget keys."""
    opt, ds = run.opt, run.dataset
    meter = budget_meter(run.cfg, opt.budget_params, opt.budget_pj)
    unit, limit = meter.unit, meter.limit
    start = meter.total(run.model)
    t = 0
    while (cur := meter.total(run.model)) > limit * (1 + 1e-9):
        grads = run.grads()
        scores = {n: np.asarray(importance(run.model, n, opt.criterion, grads=grads, seed=run.cfg.seed + t,
                                           cost_per_unit=run.cost_per_unit), dtype=float)
                  for n in prunable_layers(run.model)}
        keep = budget_keep(run.model, scores, meter.costs(run.model), cur - limit, opt.coupled)
        if all(len(k) == getattr(run.model, n).weight.shape[0] for n, k in keep.items()) or t >= 50:
            raise CodesignError(f"prune: budget {limit:g} {unit} cannot be met: {cur:g} {unit} with one unit "
                                "left in every prunable layer")
        run.remove(keep)
        t += 1
        if progress:
            progress(f"budget step {t}: {meter.total(run.model):.6g} {unit} (limit {limit:g}), units "
                     + ", ".join(f"{n} {len(k)}" for n, k in keep.items()))
    run.acc_pruned = accuracy(run.model, ds.x_test, ds.y_test)
    run.model = finetune(run.model, ds, opt.epochs, opt.ft_lr, run.cfg, run.cfg.seed)
    return {"budget_unit": unit, "budget": limit, "budget_before": start, "budget_after": meter.total(run.model)}


def _units_by_schedule(run: _UnitRun, original: dict[str, int], progress: Progress) -> None:
    """Sparsity schedule: prune to each step's target (``original``: units per prunable layer before
    pruning), fine-tuning after each step."""
    opt, ds = run.opt, run.dataset
    targets = schedule_targets(opt.schedule, opt.sparsity, opt.steps)
    per_step_epochs = max(1, opt.epochs // len(targets)) if opt.epochs else 0
    for t, target in enumerate(targets):
        # fraction of the *current* units to remove so that the original count reaches the target
        cur = {s.name: s.units for s in layer_stats(run.model) if s.name in original}
        per_layer = {n: max(0.0, 1 - (original[n] * (1 - target)) / cur[n]) for n in cur}
        grads = run.grads()
        seed = run.cfg.seed + t
        if opt.scope == "global":
            sparsity = 1 - sum(original[n] * (1 - target) for n in cur) / sum(cur.values())
            keep = select_units(run.model, opt.criterion, sparsity, "global", grads=grads, seed=seed,
                                cost_per_unit=run.cost_per_unit, coupled=opt.coupled)
        else:
            keep = select_units(run.model, opt.criterion, 0.0, "layer", grads=grads, seed=seed,
                                cost_per_unit=run.cost_per_unit, per_layer=per_layer, coupled=opt.coupled)
        run.remove(keep)
        if run.acc_pruned is None:
            run.acc_pruned = accuracy(run.model, ds.x_test, ds.y_test)
        if progress:
            progress(f"step {t + 1}/{len(targets)}: sparsity {target:.2f}, units "
                     + ", ".join(f"{n} {len(k)}" for n, k in keep.items()))
        run.model = finetune(run.model, ds, per_step_epochs, opt.ft_lr, run.cfg, run.cfg.seed + t)


# ---------------------------------------------------------------------------------------------
# single weights
# ---------------------------------------------------------------------------------------------
def _prune_weights(model: nn.Module, cfg: Config, dataset: Dataset, opt: _Options, progress: Progress) -> Result:
    """prune_model with ``granularity='weight'``: every weight layer (the last included) loses its least
    important single weights; masks keep them at 0 through fine-tuning; shapes are unchanged."""
    model = copy.deepcopy(model)
    t0 = time.time()
    layers = model.weight_layers()
    masks = weight_masks(model, layers)
    nz_before = nonzero_codes(model)
    params_before = kept_params(model, masks)
    acc_before = accuracy(model, dataset.x_test, dataset.y_test)
    table = energy.EnergyTable.load()

    def scores_for(m: nn.Module, t: int) -> dict[str, np.ndarray]:
        grads = taylor_weight_scores(m, dataset.x_train, dataset.y_train, layers) if opt.criterion == "taylor" else None
        cost = energy.weight_costs(m, table, cfg.rtl.strategy) if opt.criterion == "energy" else None
        return {n: weight_importance(m, n, opt.criterion, grads=grads, seed=cfg.seed + t, cost=cost) for n in layers}

    prune = _weights_to_budget if opt.budget else _weights_by_schedule
    model, masks, acc_pruned, extra = prune(model, cfg, dataset, opt, masks, scores_for, progress)
    report = prune_report("weight", opt.criterion, "budget" if extra else opt.schedule, opt.scope,
                          weight_sparsity(masks),
                          accuracy=(acc_before, acc_pruned, accuracy(model, dataset.x_test, dataset.y_test)),
                          params=(params_before, kept_params(model, masks)), mismatches=0,
                          masked_nonzero=masked_nonzero_codes(model, masks), t0=t0,
                          layers=weight_layer_rows(model, nz_before, masks), **extra)
    return model, cfg, report


WeightScores = Callable[[nn.Module, int], dict[str, np.ndarray]]


def _weights_to_budget(model: nn.Module, cfg: Config, dataset: Dataset, opt: _Options, masks: Masks,
                       scores_for: WeightScores, progress: Progress) -> tuple[nn.Module, Masks, float, dict[str, Any]]:
    """Budget mode: mask weights greedily until the budget holds (60 steps at most), then fine-tune."""
    meter = budget_meter(cfg, opt.budget_params, opt.budget_pj, "weight")
    unit, limit = meter.unit, meter.limit
    start = meter.total(model, masks)
    for t in range(60):
        cur = meter.total(model, masks)
        if cur <= limit * (1 + 1e-9):
            break
        new = budget_masks(scores_for(model, t), meter.costs(model, masks), masks, cur - limit)
        if all(torch.equal(new[n], masks[n]) for n in masks):
            raise CodesignError(f"prune: budget {limit:g} {unit} cannot be met with single weights: {cur:g} {unit}"
                                + (" (folded layers, rtl.strategy resource: a zero weight saves no energy)"
                                   if unit == "pJ" and cfg.rtl.strategy == "resource" else ""))
        masks = new
        apply_weight_masks(model, masks)
        if progress:
            progress(f"budget step {t + 1}: {meter.total(model, masks):.6g} {unit} (limit {limit:g}), kept weights "
                     + ", ".join(f"{n} {int(m.sum())}" for n, m in masks.items()))
    else:
        raise CodesignError(f"prune: budget {limit:g} {unit} not met after 60 steps")
    acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
    model = finetune_masked(model, dataset, opt.epochs, opt.ft_lr, cfg, cfg.seed, masks)
    return model, masks, acc_pruned, {"budget_unit": unit, "budget": limit, "budget_before": start,
                                      "budget_after": meter.total(model, masks)}


def _weights_by_schedule(model: nn.Module, cfg: Config, dataset: Dataset, opt: _Options, masks: Masks,
                         scores_for: WeightScores,
                         progress: Progress) -> tuple[nn.Module, Masks, float | None, dict[str, Any]]:
    """Sparsity schedule: cumulative masks to each step's target, fine-tuning (masks enforced) after each."""
    targets = schedule_targets(opt.schedule, opt.sparsity, opt.steps)
    per_step_epochs = max(1, opt.epochs // len(targets)) if opt.epochs else 0
    acc_pruned = None
    for t, target in enumerate(targets):
        masks = select_weights(scores_for(model, t), masks, target, opt.scope)
        apply_weight_masks(model, masks)
        if acc_pruned is None:
            acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
        if progress:
            progress(f"step {t + 1}/{len(targets)}: weight sparsity {target:.2f}, kept weights "
                     + ", ".join(f"{n} {int(m.sum())}/{m.numel()}" for n, m in masks.items()))
        model = finetune_masked(model, dataset, per_step_epochs, opt.ft_lr, cfg, cfg.seed + t, masks)
    return model, masks, acc_pruned, {}


# ---------------------------------------------------------------------------------------------
# energy-aware
# ---------------------------------------------------------------------------------------------
def _energy_aware_stage(model: nn.Module, cfg: Config, dataset: Dataset, opt: _Options, progress: Progress) -> Result:
    """prune_model with ``schedule='energy_aware'``: :func:`energy_aware_prune` with the ``prune:`` options,
    its report completed with the keys every prune report has."""
    if opt.budget_params is not None:
        raise CodesignError("prune.schedule energy_aware takes an energy target (prune.energy_ratio or "
                            "prune.budget_pj), not budget_params")
    pc = cfg.prune
    before = layer_stats(model)
    params_before = sum(s.params for s in before)
    small, scfg, rep = energy_aware_prune(model, cfg, dataset, target_ratio=pc.energy_ratio, target_pj=opt.budget_pj,
                                          local_drop=pc.local_drop, step_fraction=pc.step_fraction,
                                          local_epochs=pc.local_epochs, finetune_epochs=opt.epochs,
                                          granularity=opt.granularity, guard=pc.guard, local_loss=pc.local_loss,
                                          progress=progress)
    after = layer_stats(small)
    rep.update(schedule="energy_aware", scope="layer", accuracy_pruned_no_finetune=rep["accuracy_after"],
               params_before=params_before, budget_unit="pJ", budget=rep["target_pj"],
               budget_after=rep["energy_after_pj"])
    if opt.granularity == "unit":
        rep.update(sparsity=unit_sparsity(before, after, {s.name for s in before[:-1]}),
                   params_after=sum(s.params for s in after), layers=unit_layer_rows(before, after))
    else:
        rep["params_after"] = params_before - sum(la["masked"] for la in rep["layers"])
    return small, scfg, rep


# ---------------------------------------------------------------------------------------------
# flow stage
# ---------------------------------------------------------------------------------------------
def run_stage(rd: RunDir, cfg: Config) -> dict[str, Any]:
    """Prune ``train/model.pt`` per ``cfg.prune``; write ``prune/model.pt`` and ``prune/prune.json``."""
    from rich.console import Console

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
    Console().print(_layer_table(rep))
    figures = {k: rep[k] for k in ("granularity", "sparsity", "accuracy_before", "accuracy_after",
                                   "accuracy_pruned_no_finetune", "params_before", "params_after",
                                   "masked_vs_removed_mismatches", "masked_nonzero_codes", "criterion",
                                   "budget_unit", "budget", "budget_after", "energy_before_pj", "energy_after_pj",
                                   "energy_ratio") if k in rep}
    rd.record("prune", figures)
    if rep["masked_vs_removed_mismatches"]:
        raise CodesignError("physical removal changed the model's outputs on "
                            f"{rep['masked_vs_removed_mismatches']} vectors")
    if rep.get("masked_nonzero_codes"):
        raise CodesignError(f"{rep['masked_nonzero_codes']} pruned weights do not quantize to code 0")
    return figures


def _layer_table(rep: dict[str, Any]):
    """The report's per-layer rows as a rich table (weights masked, or units / params / MACs removed)."""
    from rich.table import Table

    if rep.get("granularity") == "weight":
        t = Table(title=f"weight pruning ({rep['criterion']}, {rep['schedule']})")
        for c in ("layer", "weights", "masked", "non-zero codes"):
            t.add_column(c, justify="right")
        for layer in rep["layers"]:
            t.add_row(layer["layer"], str(layer["weights"]), str(layer["masked"]),
                      f"{layer['nonzero_before']} -> {layer['nonzero_after']}")
        return t
    t = Table(title=f"structured pruning ({rep['criterion']}, {rep['schedule']})")
    for c in ("layer", "units", "removed", "params", "MACs"):
        t.add_column(c, justify="right")
    for layer in rep["layers"]:
        t.add_row(layer["layer"], f"{layer['units_before']} -> {layer['units_after']}", str(layer["removed"]),
                  f"{layer['params_before']} -> {layer['params_after']}",
                  f"{layer['macs_before']} -> {layer['macs_after']}")
    return t
