"""Structured pruning: rank whole neurons / filters, mask them, then remove them physically.

Granularity: output neurons of ``fc<i>`` and output filters of ``conv<i>`` (every weight layer but the
last). Removing unit ``j`` of a layer removes row ``j`` of its weight and bias and the matching input
column(s) of the next weight layer: channel ``j`` of a conv feeding ``flatten`` owns the
``spatial`` consecutive columns ``j*S .. j*S+S-1`` of ``fc1`` (PyTorch's NCHW flatten order).

Criteria (importance of a unit; the least important go first):
  ``l1``/``l2`` (Li et al. 2016): norm of the unit's weights; ``fpgm`` (He et al. 2019): summed
  distance to the layer's other filters (units near the geometric median are redundant);
  ``taylor`` (Molchanov et al. 2019): sum over the unit's weights of (w * dL/dw)^2 accumulated on
  training batches; ``random``: a seeded baseline; ``energy``: importance per unit of cost, with the
  cost supplied by a callable (``cost_per_unit``), e.g. the energy model's pJ per unit; ``bn_gamma``
  (Liu et al. 2017, network slimming): |gamma| of BatchNorms trained with an L1 penalty on a float twin,
  then folded into the layers before removal (:func:`slimming_train`; no BatchNorm reaches export).
Budget mode (``prune.budget_params`` / ``prune.budget_pj``): greedy removal of the least important unit
per unit of cost until the model has at most N parameters / E pJ per inference.
Coupling (residual Adds): ``prune.coupled`` or a model's ``coupled_groups`` list layers pruned as one
unit set (summed importance, same indices everywhere); a non-sequential model declares its dataflow with
``prune_consumers()`` and ``rebuild(units)``; unsafe removals raise a CodesignError naming the layers.
Schedules: ``oneshot``; ``iterative`` (``steps`` equal steps, fine-tuning in between); ``agp``
(Zhu & Gupta 2017: cumulative sparsity ``s_t = s * (1 - (1 - t/T)^3)`` over ``steps`` steps).

Masked vs removed: masking zeroes the unit's weight row and bias, and the columns that read it in the
consumer layers. With zero-point-0 quantizers a zero unit outputs exactly 0 after ReLU, so the physically
smaller model computes the same function; every removal is checked (``masked_vs_removed_mismatches``
must be 0). Quantizer state (activation scales) is copied across removal; per-tensor weight scales are
unchanged because the removed rows and columns are zero in the masked model (a consumer's max |w| can sit
in a removed column: masking rows only would change its scale on removal).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import CodesignError, UnsupportedError

CostFn = Callable[[nn.Module, str], np.ndarray]


@dataclass
class LayerStat:
    name: str
    units: int
    kept: int
    params: int
    macs: int


# ---------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------
def prunable_layers(model: nn.Module) -> list[str]:
    """Weight layers whose outputs can be pruned: all but the last (the class scores)."""
    layers = model.weight_layers()
    return layers[:-1]


def _check_supported(model: nn.Module) -> None:
    order = list(model.order)
    for n in order:
        m = getattr(model, n)
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            raise UnsupportedError(f"layer {n}: BatchNorm coupling is not supported by the pruner yet")
    if not hasattr(model, "weight_layers"):
        raise UnsupportedError("the pruner needs a codesign.quant.QuantNet (sequential, named layers)")


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


# ---------------------------------------------------------------------------------------------
# importance
# ---------------------------------------------------------------------------------------------
def _rows(w: torch.Tensor) -> torch.Tensor:
    return w.detach().reshape(w.shape[0], -1).double()


def importance(model: nn.Module, layer: str, criterion: str, *, grads: dict[str, torch.Tensor] | None = None,
               seed: int = 0, cost_per_unit: CostFn | None = None) -> np.ndarray:
    """Importance score per output unit of ``layer`` (higher = keep)."""
    w = _rows(getattr(model, layer).weight)
    if criterion == "l1":
        return w.abs().sum(1).numpy()
    if criterion == "l2":
        return w.pow(2).sum(1).sqrt().numpy()
    if criterion == "fpgm":
        return torch.cdist(w, w).sum(1).numpy()
    if criterion == "random":
        return np.random.default_rng(seed + sum(map(ord, layer))).random(w.shape[0])
    if criterion == "taylor":
        if grads is None or layer not in grads:
            raise CodesignError("criterion 'taylor' needs gradients from training data (a dataset)")
        return grads[layer].numpy()
    if criterion == "energy":
        if cost_per_unit is None:
            raise CodesignError("criterion 'energy' needs a cost model (cost_per_unit)")
        base = w.abs().sum(1).numpy()
        cost = np.asarray(cost_per_unit(model, layer), dtype=float)
        return base / np.maximum(cost, 1e-12)
    if criterion == "bn_gamma":
        if grads is None or layer not in grads:
            raise UnsupportedError("criterion 'bn_gamma' needs the BatchNorm gammas of a slimming run "
                                   "(slimming_train; prune_model does it for prune.criterion: bn_gamma)")
        return np.abs(np.asarray(grads[layer], dtype=float))
    raise CodesignError(f"unknown pruning criterion {criterion!r}")


def taylor_scores(model: nn.Module, x: np.ndarray, y: np.ndarray, batches: int = 8, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """First-order Taylor importance: sum over a unit's weights of (w * dL/dw)^2, summed over batches."""
    model.train()
    scores: dict[str, torch.Tensor] = {}
    rng = np.random.default_rng(0)
    for _ in range(batches):
        idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.as_tensor(x[idx])), torch.as_tensor(y[idx]))
        loss.backward()
        for n in prunable_layers(model):
            w = getattr(model, n).weight
            s = (w.detach() * w.grad.detach()).pow(2).reshape(w.shape[0], -1).sum(1).double()
            scores[n] = scores.get(n, 0) + s
    model.zero_grad()
    model.eval()
    return scores


def coupled_groups(model: nn.Module, coupled: list[list[str]] | None = None) -> list[list[str]]:
    """Groups of prunable layers whose outputs are joined by an Add (pruned as one unit set).

    From the model's ``coupled_groups`` attribute (set by a residual builder) and ``coupled``
    (``prune.coupled``); overlapping groups are merged. Members must be prunable and equally wide.
    """
    layers = prunable_layers(model)
    groups: list[set[str]] = []
    for g in [*getattr(model, "coupled_groups", []), *(coupled or [])]:
        g = set(g)
        for n in sorted(g):
            if n not in layers:
                raise CodesignError(f"prune.coupled: {n} is not a prunable layer of this model "
                                    f"(prunable: {', '.join(layers)})")
        for other in [o for o in groups if o & g]:
            groups.remove(other)
            g |= other
        groups.append(g)
    out = []
    for g in groups:
        members = [n for n in layers if n in g]
        widths = {n: int(getattr(model, n).weight.shape[0]) for n in members}
        if len(set(widths.values())) > 1:
            raise CodesignError(f"prune.coupled: layers {', '.join(members)} have different widths {widths}; "
                                "outputs joined by an Add must have the same units")
        if len(members) > 1:
            out.append(members)
    return out


def _unit_sets(model: nn.Module, coupled: list[list[str]] | None) -> list[list[str]]:
    """Prunable layers grouped: a coupled group is one entry, every other layer its own."""
    groups = coupled_groups(model, coupled)
    grouped = {n for g in groups for n in g}
    return groups + [[n] for n in prunable_layers(model) if n not in grouped]


def select_units(model: nn.Module, criterion: str, sparsity: float, scope: str = "layer", *,
                 grads: dict[str, torch.Tensor] | None = None, seed: int = 0,
                 cost_per_unit: CostFn | None = None, per_layer: dict[str, float] | None = None,
                 coupled: list[list[str]] | None = None) -> dict[str, np.ndarray]:
    """Indices of the units to KEEP per prunable layer, removing ``sparsity`` of them (rounded).

    ``scope='layer'`` removes the same fraction from each layer (or ``per_layer[name]``); ``'global'``
    ranks all units together on scores normalized by each layer's maximum. Never removes a whole layer.
    Coupled layers (:func:`coupled_groups`) are ranked on their summed importance and keep the same units.
    """
    sets = _unit_sets(model, coupled)
    scores: dict[str, np.ndarray] = {}
    for g in sets:
        per = [np.asarray(importance(model, n, criterion, grads=grads, seed=seed, cost_per_unit=cost_per_unit),
                          dtype=float) for n in g]
        if len(g) > 1 and scope == "global":
            per = [p / (p.max() if p.max() > 0 else 1.0) for p in per]
        scores[g[0]] = np.sum(per, axis=0)
    keep: dict[str, np.ndarray] = {}
    if scope == "global" and per_layer is None:
        total = sum(len(s) for s in scores.values())
        n_remove = int(round(sparsity * total))
        flat = [(s / (s.max() if s.max() > 0 else 1.0), n, i) for n, ss in scores.items() for i, s in enumerate(ss)]
        flat.sort(key=lambda t: (t[0], t[1], t[2]))
        removed = {n: set() for n in scores}
        for _, n, i in flat:
            if n_remove == 0:
                break
            if len(removed[n]) < len(scores[n]) - 1:
                removed[n].add(i)
                n_remove -= 1
        for g in sets:
            for n in g:
                keep[n] = np.array(sorted(set(range(len(scores[g[0]]))) - removed[g[0]]), dtype=np.int64)
        return keep
    for g in sets:
        s = scores[g[0]]
        frac = max((per_layer or {}).get(n, sparsity) for n in g)
        n_keep = len(s) - int(round(frac * len(s)))
        if n_keep < 1:
            raise CodesignError(f"layer {', '.join(g)}: sparsity {frac} would remove all {len(s)} units; "
                                "keep at least one (lower the sparsity)")
        order = np.argsort(-s, kind="stable")
        for n in g:
            keep[n] = np.sort(order[:n_keep])
    return keep


# ---------------------------------------------------------------------------------------------
# masking and physical removal
# ---------------------------------------------------------------------------------------------
def apply_mask(model: nn.Module, keep: dict[str, np.ndarray]) -> None:
    """Zero the weight rows and biases of every unit not in ``keep``, and the input columns that read
    them in the consumer layers (in place).

    Zeroing the columns too makes the masked model the exact image of the removed one: a consumer's
    per-tensor weight scale comes from its max |w|, which may sit in a column that removal drops.
    """
    in_idx = _input_index(model, keep)
    with torch.no_grad():
        for n, k in keep.items():
            m = getattr(model, n)
            mask = torch.zeros(m.weight.shape[0], dtype=torch.bool)
            mask[torch.as_tensor(k)] = True
            m.weight[~mask] = 0
            if m.bias is not None:
                m.bias[~mask] = 0
        for c, idx in in_idx.items():
            w = getattr(model, c).weight
            cols = torch.zeros(w.shape[1], dtype=torch.bool)
            cols[torch.as_tensor(idx)] = True
            w[:, ~cols] = 0


def consumers(model: nn.Module) -> dict[str, list[str]]:
    """Weight layers that read each prunable layer's output. A sequential QuantNet: the next weight
    layer; a non-sequential model (residual) declares it with a ``prune_consumers()`` method."""
    if hasattr(model, "prune_consumers"):
        return {k: list(v) for k, v in model.prune_consumers().items()}
    wl = model.weight_layers()
    return {n: [wl[i + 1]] for i, n in enumerate(wl[:-1])}


def pruned_config(cfg: Config, model: nn.Module, keep: dict[str, np.ndarray]) -> Config:
    """``cfg`` with the smaller layer sizes (conv channels / hidden widths)."""
    channels = [len(keep[f"conv{i + 1}"]) if f"conv{i + 1}" in keep else c for i, c in enumerate(cfg.model.channels)]
    hidden = [len(keep[f"fc{i + 1}"]) if f"fc{i + 1}" in keep else h for i, h in enumerate(cfg.model.hidden)]
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"channels": channels, "hidden": hidden})})


def _input_index(model: nn.Module, keep: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Input columns each consumer keeps; refuses removals that are unsafe for the graph (coupling)."""
    for g in coupled_groups(model):
        present = [n for n in g if n in keep]
        if present and len(present) < len(g):
            raise CodesignError(f"coupled layers {', '.join(g)} (outputs joined by an Add) must be pruned together; "
                                f"only {', '.join(present)} given")
        for n in present[1:]:
            if not np.array_equal(np.asarray(keep[n]), np.asarray(keep[present[0]])):
                raise CodesignError(f"coupled layers {', '.join(g)} (outputs joined by an Add) must keep the same units; "
                                    f"{present[0]} and {n} differ")
    cons = consumers(model)
    in_idx: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for n, k in keep.items():
        if n not in cons:
            raise UnsupportedError(f"layer {n}: the pruner does not know which layers read its output; "
                                   "cannot remove its units safely")
        units = int(getattr(model, n).weight.shape[0])
        k = np.asarray(k, dtype=np.int64)
        for c in cons[n]:
            cols = int(getattr(model, c).weight.shape[1])
            if cols % units:
                raise UnsupportedError(f"layer {c}: {cols} input columns are not a multiple of the {units} units of {n} "
                                       f"(concatenation?); cannot prune {n} safely")
            s = cols // units  # NCHW flatten: channel j owns columns j*s .. j*s+s-1
            idx = (k[:, None] * s + np.arange(s)[None, :]).reshape(-1)
            if c in in_idx and not np.array_equal(in_idx[c], idx):
                raise CodesignError(f"layer {c} reads the sum of {source[c]} and {n}: they must keep the same units "
                                    f"(declare them coupled: prune.coupled: [[{source[c]}, {n}]])")
            in_idx[c], source[c] = idx, n
    return in_idx


def remove_units(model: nn.Module, cfg: Config, keep: dict[str, np.ndarray]) -> tuple[nn.Module, Config]:
    """A new, physically smaller model without the pruned units; quantizer state is copied.

    A sequential QuantNet is rebuilt from the smaller config; any other model provides
    ``rebuild(units: dict[str, int])`` (its config is returned unchanged).
    """
    from codesign.quant import build_model

    _check_supported(model)
    in_idx = _input_index(model, keep)
    if hasattr(model, "rebuild"):
        new_cfg = cfg
        small = model.rebuild({n: len(k) for n, k in keep.items()})
    else:
        new_cfg = pruned_config(cfg, model, keep)
        small = build_model(new_cfg, model.input_shape, model.n_classes)
    src = model.state_dict()
    out_idx: dict[str, np.ndarray] = {n: k for n, k in keep.items()}
    new_state = {}
    for key, t in src.items():
        layer, _, param = key.partition(".")
        if param in ("weight", "bias"):
            if layer in out_idx:
                t = t[torch.as_tensor(out_idx[layer])]
            if param == "weight" and layer in in_idx:
                t = t[:, torch.as_tensor(in_idx[layer])]
        new_state[key] = t.clone()
    try:
        missing, unexpected = small.load_state_dict(new_state, strict=False)
    except RuntimeError as e:
        raise UnsupportedError(f"cannot remove units safely: {str(e).splitlines()[-1].strip()}") from None
    if unexpected:
        raise UnsupportedError(f"cannot remove units safely: unexpected state {unexpected[:3]}")
    small.eval()
    return small, new_cfg


def outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    from codesign.train import predict

    return predict(model, x)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    from codesign.train import accuracy as acc

    return acc(model, x, y)


def prune_once(model: nn.Module, cfg: Config, keep: dict[str, np.ndarray], check_x: np.ndarray) -> tuple[nn.Module, Config, int]:
    """Mask, remove physically, and count mismatches between the masked and the removed model."""
    import copy

    masked = copy.deepcopy(model)
    apply_mask(masked, keep)
    small, new_cfg = remove_units(masked, cfg, keep)
    mism = int((outputs(masked, check_x) != outputs(small, check_x)).any(axis=1).sum())
    return small, new_cfg, mism


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------
def schedule_targets(schedule: str, sparsity: float, steps: int) -> list[float]:
    """Cumulative sparsity after each pruning step."""
    if schedule == "oneshot":
        return [sparsity]
    if schedule == "iterative":
        return [sparsity * (t + 1) / steps for t in range(steps)]
    if schedule == "agp":
        return [sparsity * (1 - (1 - (t + 1) / steps) ** 3) for t in range(steps)]
    raise CodesignError(f"unknown pruning schedule {schedule!r}")


def finetune(model: nn.Module, dataset, epochs: int, lr: float, cfg: Config, seed: int) -> nn.Module:
    """Fine-tune with the training loop of :mod:`codesign.train` (best validation checkpoint kept)."""
    from codesign.train import _fit

    if epochs > 0:
        _fit(model, dataset, cfg, epochs, seed, "fine-tune", progress=False, lr=lr)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# network slimming (bn_gamma)
# ---------------------------------------------------------------------------------------------
def slimming_train(model: nn.Module, cfg: Config, dataset, *, epochs: int | None = None, l1: float | None = None,
                   seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
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


# ---------------------------------------------------------------------------------------------
# budget mode
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _sync_gammas(gammas: dict[str, torch.Tensor] | None, keep: dict[str, np.ndarray]) -> None:
    if gammas is not None:
        for n, k in keep.items():
            gammas[n] = gammas[n][torch.as_tensor(k)]


def prune_model(model: nn.Module, cfg: Config, dataset, *, criterion: str | None = None,
                sparsity: float | None = None, schedule: str | None = None, steps: int | None = None,
                finetune_epochs: int | None = None, scope: str | None = None,
                budget_params: int | None = None, budget_pj: float | None = None,
                coupled: list[list[str]] | None = None,
                cost_per_unit: CostFn | None = None, progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Prune ``model`` (a trained QuantNet) per ``cfg.prune`` (keyword arguments override it).

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
    _check_supported(model)
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
        unit, limit, total, unit_costs = _budget_meter(cfg, budget_params, budget_pj)
        start_total = total(model)
        t = 0
        while (cur := total(model)) > limit * (1 + 1e-9):
            grads = grads_for(model)
            scores = {n: np.asarray(importance(model, n, criterion, grads=grads, seed=cfg.seed + t,
                                               cost_per_unit=cost_per_unit), dtype=float) for n in prunable_layers(model)}
            keep = _budget_keep(model, scores, unit_costs(model), cur - limit, coupled)
            if all(len(k) == getattr(model, n).weight.shape[0] for n, k in keep.items()) or t >= 50:
                raise CodesignError(f"prune: budget {limit:g} {unit} cannot be met: {cur:g} {unit} with one unit "
                                    "left in every prunable layer")
            _sync_gammas(gammas, keep)
            model, cfg, mism = prune_once(model, cfg, keep, dataset.x_test)
            mismatches += mism
            t += 1
            if progress:
                progress(f"budget step {t}: {total(model):.6g} {unit} (limit {limit:g}), units "
                         + ", ".join(f"{n} {len(k)}" for n, k in keep.items()))
        acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
        model = finetune(model, dataset, epochs, ft_lr, cfg, cfg.seed)
        extra.update({"budget_unit": unit, "budget": limit, "budget_before": start_total, "budget_after": total(model)})
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
        "criterion": criterion, "schedule": "budget" if budget else schedule, "scope": scope,
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
    t = Table(title=f"structured pruning ({rep['criterion']}, {rep['schedule']})")
    for c in ("layer", "units", "removed", "params", "MACs"):
        t.add_column(c, justify="right")
    for layer in rep["layers"]:
        t.add_row(layer["layer"], f"{layer['units_before']} -> {layer['units_after']}", str(layer["removed"]),
                  f"{layer['params_before']} -> {layer['params_after']}", f"{layer['macs_before']} -> {layer['macs_after']}")
    Console().print(t)
    figures = {k: rep[k] for k in ("sparsity", "accuracy_before", "accuracy_after", "accuracy_pruned_no_finetune",
                                   "params_before", "params_after", "masked_vs_removed_mismatches", "criterion",
                                   "budget_unit", "budget", "budget_after") if k in rep}
    rd.record("prune", figures)
    if rep["masked_vs_removed_mismatches"]:
        raise CodesignError(f"physical removal changed the model's outputs on {rep['masked_vs_removed_mismatches']} vectors")
    return figures


# ---------------------------------------------------------------------------------------------
# energy-aware pruning (Yang, Chen, Sze, CVPR 2017, with structured units)
# ---------------------------------------------------------------------------------------------
def energy_aware_prune(model: nn.Module, cfg: Config, dataset, *, target_ratio: float | None = 2.5,
                       target_pj: float | None = None, max_drop: float = 0.01, local_drop: float = 0.03,
                       step_fraction: float = 0.15, local_epochs: int = 5, finetune_epochs: int | None = None,
                       progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Prune where the energy is spent until the estimate reaches the target.

    Each step ranks the prunable layers by the energy their units account for (the energy model's
    :func:`codesign.energy.unit_costs`: own terms and register plus their columns in the next layer),
    removes ``step_fraction`` of the units of the most energy-hungry layer (lowest L1 magnitude per pJ),
    fine-tunes locally for ``local_epochs`` and keeps the step only if validation accuracy stays within
    ``local_drop`` of the unpruned model; otherwise the layer is frozen and the next one is tried. A global
    fine-tuning (``finetune_epochs``) ends the search. ``target_pj`` (budget mode) overrides ``target_ratio``.
    """
    import copy

    from codesign import energy

    table = energy.EnergyTable.load()

    def total_pj(m: nn.Module) -> float:
        ops, io = energy.from_model(m)
        return float(energy.estimate(ops, table, cfg.rtl.strategy, io)["pj_per_inference"])

    t0 = time.time()
    e0 = total_pj(model)
    target = target_pj if target_pj is not None else e0 / float(target_ratio or 1.0)
    acc0_val = accuracy(model, dataset.x_val, dataset.y_val)
    acc0 = accuracy(model, dataset.x_test, dataset.y_test)
    before = layer_stats(model)
    frozen: set[str] = set()
    history = [{"step": 0, "energy_pj": e0, "val_accuracy": acc0_val, "layer": None}]
    mismatches = 0
    e = e0
    step = 0
    epochs = cfg.prune.finetune_epochs if finetune_epochs is None else finetune_epochs
    for _round in range(3):  # global fine-tuning can move the estimate: prune again if it did
        while e > target:
            costs = energy.unit_costs(model, table, cfg.rtl.strategy)
            candidates = sorted(((float(c.sum()), n) for n, c in costs.items() if n not in frozen and len(c) > 1), reverse=True)
            if not candidates:
                break
            _, layer = candidates[0]
            n_units = len(costs[layer])
            n_remove = max(1, int(round(step_fraction * n_units)))
            n_remove = min(n_remove, n_units - 1)
            score = importance(model, layer, "energy", cost_per_unit=lambda m, n: energy.unit_costs(m, table)[n])
            keep = {n: np.arange(len(c)) for n, c in costs.items()}
            keep[layer] = np.sort(np.argsort(-score, kind="stable")[: n_units - n_remove])
            trial, trial_cfg, mism = prune_once(model, cfg, keep, dataset.x_val)
            mismatches += mism
            trial = finetune(trial, dataset, local_epochs, cfg.train.lr * 0.5, trial_cfg, cfg.seed + step)
            acc_val = accuracy(trial, dataset.x_val, dataset.y_val)
            step += 1
            if acc_val < acc0_val - local_drop:
                frozen.add(layer)
                if progress:
                    progress(f"step {step}: {layer} {n_units}->{n_units - n_remove} drops val accuracy to {acc_val:.4f}; layer frozen")
                continue
            model, cfg = trial, trial_cfg
            e = total_pj(model)
            history.append({"step": step, "energy_pj": e, "val_accuracy": acc_val, "layer": layer,
                            "units": n_units - n_remove})
            if progress:
                progress(f"step {step}: {layer} {n_units}->{n_units - n_remove} units, {e:.1f} pJ ({e0 / e:.2f}x), val acc {acc_val:.4f}")
        model = finetune(copy.deepcopy(model), dataset, epochs, cfg.train.lr * 0.3, cfg, cfg.seed + 999 + _round)
        e = total_pj(model)
        if e <= target or len(frozen) >= len(prunable_layers(model)):
            break
    after = layer_stats(model)
    e = total_pj(model)
    report = {
        "criterion": "energy-aware", "energy_before_pj": e0, "energy_after_pj": e, "energy_ratio": e0 / e,
        "target_pj": target, "reached": e <= target * (1 + 1e-9),
        "within_max_drop": accuracy(model, dataset.x_val, dataset.y_val) >= acc0_val - max_drop,
        "accuracy_before": acc0, "accuracy_after": accuracy(model, dataset.x_test, dataset.y_test),
        "masked_vs_removed_mismatches": mismatches, "seconds": round(time.time() - t0, 2), "history": history,
        "layers": [{"layer": b.name, "units_before": b.units, "units_after": a.units} for b, a in zip(before, after, strict=True)],
    }
    return model, cfg, report
