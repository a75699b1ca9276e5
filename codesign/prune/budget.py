"""Budget mode (``prune.budget_params`` / ``prune.budget_pj``) and the energy estimate pruning steers by.

One engine for both granularities: a :class:`BudgetMeter` measures the model and the cost of every
prunable unit (or single weight) in the budget's unit (parameters or pJ per inference), and
:func:`greedy_removal` removes the least important unit per unit of cost until the estimated saving covers
the excess (never the last unit of a layer or coupled group). :func:`budget_keep` (units) and
:func:`budget_masks` (weights) turn its choice into what the pruner applies; the driver in
:mod:`codesign.prune.stage` re-measures the model and repeats until the budget holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from codesign import energy
from codesign.config import Config
from codesign.prune.common import layer_stats, prunable_layers
from codesign.prune.units import consumers, unit_sets
from codesign.prune.weights import Masks, kept_params


def total_pj(model: nn.Module, table: energy.EnergyTable, strategy: str) -> float:
    """Estimated energy of one inference of ``model`` (pJ, :func:`codesign.energy.estimate`)."""
    ops, io = energy.from_model(model)
    return float(energy.estimate(ops, table, strategy, io)["pj_per_inference"])


def unit_param_costs(model: nn.Module) -> dict[str, np.ndarray]:
    """Parameters each prunable unit accounts for: its weight row and bias, plus its input columns in
    the layers that read it (a linear estimate: a weight between two removed units is counted twice)."""
    cons = consumers(model)
    out = {}
    for n in prunable_layers(model):
        w = getattr(model, n).weight
        own = w[0].numel() + (1 if getattr(model, n).bias is not None else 0)
        cols = 0
        for c in cons.get(n, []):
            cw = getattr(model, c).weight
            cols += cw.shape[0] * (cw[0].numel() // w.shape[0])
        out[n] = np.full(w.shape[0], float(own + cols))
    return out


Measure = Callable[[nn.Module, Masks | None], float]
Costs = Callable[[nn.Module, Masks | None], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BudgetMeter:
    """The budget in force: its ``unit`` (``"params"`` or ``"pJ"``) and ``limit``; ``total(model, masks)``
    measures a model and ``costs(model, masks)`` gives each prunable unit's (or weight's) cost in that
    unit. ``masks`` are the weight masks in force (``None`` for unit pruning)."""

    unit: str
    limit: float
    total: Measure
    costs: Costs


def budget_meter(cfg: Config, budget_params: int | None, budget_pj: float | None,
                 granularity: str = "unit") -> BudgetMeter:
    """The meter of ``budget_pj`` (if given) or ``budget_params``, for ``granularity`` ``unit`` / ``weight``."""
    if budget_pj is not None:
        table, strategy = energy.EnergyTable.load(), cfg.rtl.strategy
        cost_model = energy.weight_costs if granularity == "weight" else energy.unit_costs
        return BudgetMeter("pJ", float(budget_pj), lambda m, masks=None: total_pj(m, table, strategy),
                           lambda m, masks=None: cost_model(m, table, strategy))
    if granularity == "weight":
        return BudgetMeter("params", float(budget_params), lambda m, masks=None: float(kept_params(m, masks)),
                           lambda m, masks=None: {n: k.double().numpy() for n, k in masks.items()})
    return BudgetMeter("params", float(budget_params),
                       lambda m, masks=None: float(sum(s.params for s in layer_stats(m))),
                       lambda m, masks=None: unit_param_costs(m))


def normalized(scores: np.ndarray) -> np.ndarray:
    """``scores`` divided by their maximum (unchanged when it is not positive)."""
    return scores / (scores.max() if scores.max() > 0 else 1.0)


def greedy_removal(importance: dict[str, np.ndarray], cost: dict[str, np.ndarray], room: dict[str, int],
                   excess: float, candidates: dict[str, np.ndarray] | None = None,
                   cost_floor: float = 1e-12) -> dict[str, set[int]]:
    """The greedy budget selection: indices to remove per group (a layer, or a coupled group of layers).

    Candidates (every index, or ``candidates[group]``) are taken in order of least ``importance`` per unit
    of ``cost`` (cost clamped below at ``cost_floor``; ties by group name, then index) until the removed
    cost reaches ``excess``; at most ``room[group]`` from each group.
    """
    cand = []
    for g, imp in importance.items():
        idx = range(len(imp)) if candidates is None else candidates[g]
        cand += [(imp[i] / max(cost[g][i], cost_floor), g, int(i), cost[g][i]) for i in idx]
    cand.sort(key=lambda t: (t[0], t[1], t[2]))
    removed: dict[str, set[int]] = {g: set() for g in room}
    got = 0.0
    for _, g, i, c in cand:
        if got >= excess:
            break
        if len(removed[g]) < room[g]:
            removed[g].add(i)
            got += c
    return removed


def budget_keep(model: nn.Module, scores: dict[str, np.ndarray], costs: dict[str, np.ndarray], excess: float,
                coupled: list[list[str]] | None) -> dict[str, np.ndarray]:
    """Units to keep per prunable layer after removing about ``excess`` of cost (:func:`greedy_removal`
    on importance normalized by its layer's maximum; a coupled group is one candidate per index)."""
    sets = unit_sets(model, coupled)
    importance = {g[0]: np.sum([normalized(scores[n]) for n in g], axis=0) for g in sets}
    cost = {g[0]: np.sum([costs[n] for n in g], axis=0) for g in sets}
    width = {g[0]: len(scores[g[0]]) for g in sets}
    removed = greedy_removal(importance, cost, {g: w - 1 for g, w in width.items()}, excess)
    keep = {}
    for g in sets:
        k = np.array(sorted(set(range(width[g[0]])) - removed[g[0]]), dtype=np.int64)
        for n in g:
            keep[n] = k
    return keep


def budget_masks(scores: dict[str, np.ndarray], costs: dict[str, np.ndarray], masks: Masks, excess: float) -> Masks:
    """New weight masks removing about ``excess`` of cost among the kept weights that cost something
    (:func:`greedy_removal` on |score| normalized by its layer's maximum; never a layer's last weight)."""
    importance, cost, candidates = {}, {}, {}
    for n, m in masks.items():
        importance[n] = normalized(np.asarray(scores[n], dtype=float).reshape(-1))
        cost[n] = np.asarray(costs[n], dtype=float).reshape(-1)
        candidates[n] = np.nonzero(m.reshape(-1).numpy() & (cost[n] > 0))[0]
    room = {n: int(m.sum()) - 1 for n, m in masks.items()}
    removed = greedy_removal(importance, cost, room, excess, candidates, cost_floor=0.0)
    out: Masks = {}
    for n, m in masks.items():
        flat = m.clone().reshape(-1)
        flat[torch.as_tensor(sorted(removed[n]), dtype=torch.long)] = False
        out[n] = flat.reshape(m.shape)
    return out
