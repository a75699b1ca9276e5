"""Budget mode (``prune.budget_params`` / ``prune.budget_pj``): greedy removal of the least important
unit (or weight) per unit of cost until the model has at most N parameters / E pJ per inference.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from codesign.config import Config
from codesign.prune.common import layer_stats, prunable_layers
from codesign.prune.units import _unit_sets, consumers


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


def _budget_keep(model: nn.Module, scores: dict[str, np.ndarray], costs: dict[str, np.ndarray], excess: float,
                 coupled: list[list[str]] | None) -> dict[str, np.ndarray]:
    """Greedy: remove the unit (set) with the least normalized importance per unit of cost until the
    removed cost reaches ``excess``; never the last unit of a layer."""
    sets = _unit_sets(model, coupled)
    cand = []
    for g in sets:
        imp = np.sum([scores[n] / (scores[n].max() if scores[n].max() > 0 else 1.0) for n in g], axis=0)
        cost = np.sum([costs[n] for n in g], axis=0)
        cand += [(imp[i] / max(cost[i], 1e-12), g[0], i, cost[i]) for i in range(len(imp))]
    cand.sort(key=lambda t: (t[0], t[1], t[2]))
    removed: dict[str, set[int]] = {g[0]: set() for g in sets}
    width = {g[0]: len(scores[g[0]]) for g in sets}
    got = 0.0
    for _, n, i, c in cand:
        if got >= excess:
            break
        if len(removed[n]) < width[n] - 1:
            removed[n].add(i)
            got += c
    keep = {}
    for g in sets:
        k = np.array(sorted(set(range(width[g[0]])) - removed[g[0]]), dtype=np.int64)
        for n in g:
            keep[n] = k
    return keep


def _budget_meter(cfg: Config, budget_params: int | None, budget_pj: float | None):
    """(unit, total(model), unit_costs(model)) for the budget in force."""
    if budget_pj is not None:
        from codesign import energy

        table = energy.EnergyTable.load()

        def total(m):
            ops, io = energy.from_model(m)
            return float(energy.estimate(ops, table, cfg.rtl.strategy, io)["pj_per_inference"])

        return "pJ", float(budget_pj), total, lambda m: energy.unit_costs(m, table, cfg.rtl.strategy)
    return "params", float(budget_params), lambda m: float(sum(s.params for s in layer_stats(m))), unit_param_costs
