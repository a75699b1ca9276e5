"""Pruning: structured (whole neurons / filters ranked, masked, then removed physically) or fine-grained
(single weights masked to exactly zero, ``prune.granularity: weight``; see "Weight granularity" below).

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

Weight granularity: every weight layer (the last included) loses single weights; shapes never change.
:class:`WeightMaskGuard` keeps masked weights at exactly 0 through QAT fine-tuning (masked gradients, a
forward pre-hook that re-applies the mask), and a float 0 quantizes to code 0, so QONNX, the golden model
and the RTL see exact zeros (``masked_nonzero_codes`` must be 0). In the fully parallel RTL a zero weight
generates no logic; in a folded layer it still costs a ROM read and a MAC slot.

Energy-aware pruning (:func:`energy_aware_prune`, ``prune.schedule: energy_aware``; Yang, Chen, Sze,
CVPR 2017): step by step, prune the layer that accounts for the most energy (units or weights), fine-tune
locally, keep the step if a validation guard holds (else retry it with half the step, then freeze the
layer), fine-tune globally, iterate passes until the energy target.
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
    """Fine-tune with :func:`codesign.train.fine_tune` (best validation checkpoint kept); returns ``model``."""
    from codesign.train import fine_tune

    fine_tune(model, dataset, cfg, epochs=epochs, lr=lr, seed=seed)
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


# ---------------------------------------------------------------------------------------------
# fine-grained (weight) pruning: masks that keep single weights at exactly zero
# ---------------------------------------------------------------------------------------------
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


def finetune_masked(model: nn.Module, dataset, epochs: int, lr: float, cfg: Config, seed: int,
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
    model.train()
    scores: dict[str, torch.Tensor] = {}
    rng = np.random.default_rng(0)
    for _ in range(batches):
        idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        model.zero_grad()
        nn.functional.cross_entropy(model(torch.as_tensor(x[idx])), torch.as_tensor(y[idx])).backward()
        for n in layers:
            w = getattr(model, n).weight
            scores[n] = scores.get(n, 0) + (w.detach() * w.grad.detach()).pow(2).double()
    model.zero_grad()
    model.eval()
    return scores


def weight_importance(model: nn.Module, layer: str, criterion: str, *, grads: dict[str, torch.Tensor] | None = None,
                      seed: int = 0, cost: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Importance of every single weight of ``layer`` (weight shape; higher = keep)."""
    w = getattr(model, layer).weight.detach().double()
    if criterion in ("l1", "l2"):  # the norm of one weight is its magnitude
        return w.abs().numpy()
    if criterion == "random":
        return np.random.default_rng(seed + sum(map(ord, layer))).random(tuple(w.shape))
    if criterion == "taylor":
        if grads is None or layer not in grads:
            raise CodesignError("criterion 'taylor' needs gradients from training data (a dataset)")
        return grads[layer].numpy()
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


def _drop_smallest(w: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` with its ``k`` kept weights of smallest magnitude masked too."""
    sc = np.where(mask.reshape(-1).numpy(), w.detach().abs().double().reshape(-1).numpy(), np.inf)
    out = mask.clone().reshape(-1)
    out[torch.as_tensor(np.argsort(sc, kind="stable")[:k])] = False
    return out.reshape(mask.shape)


def _weight_layer_report(model: nn.Module, before: dict[str, int], masks: Masks) -> list[dict[str, Any]]:
    rows = []
    for n in model.weight_layers():
        w = getattr(model, n).weight
        m = masks.get(n)
        rows.append({"layer": n, "weights": int(w.numel()), "nonzero_before": before[n],
                     "nonzero_after": int((weight_codes(model, n) != 0).sum()),
                     "masked": int((~m).sum()) if m is not None else 0})
    return rows


def _kept_params(model: nn.Module, masks: Masks) -> int:
    n = 0
    for layer in model.weight_layers():
        mod = getattr(model, layer)
        n += int(masks[layer].sum()) if layer in masks else mod.weight.numel()
        n += mod.bias.numel() if mod.bias is not None else 0
    return n


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
    params_before = _kept_params(model, masks)
    acc_before = accuracy(model, dataset.x_test, dataset.y_test)
    table = energy.EnergyTable.load()

    def scores_for(m, t):
        grads = taylor_weight_scores(m, dataset.x_train, dataset.y_train, layers) if criterion == "taylor" else None
        cost = energy.weight_costs(m, table, cfg.rtl.strategy) if criterion == "energy" else None
        return {n: weight_importance(m, n, criterion, grads=grads, seed=cfg.seed + t, cost=cost) for n in layers}

    extra: dict[str, Any] = {}
    acc_pruned = None
    if budget_params is not None or budget_pj is not None:
        if budget_pj is not None:
            unit, limit = "pJ", float(budget_pj)

            def total(m):
                ops, io = energy.from_model(m)
                return float(energy.estimate(ops, table, cfg.rtl.strategy, io)["pj_per_inference"])

            def costs(m):
                return energy.weight_costs(m, table, cfg.rtl.strategy)
        else:
            unit, limit = "params", float(budget_params)

            def total(m):
                return float(_kept_params(m, masks))

            def costs(m):
                return {n: masks[n].double().numpy() for n in layers}
        start = total(model)
        for t in range(60):
            cur = total(model)
            if cur <= limit * (1 + 1e-9):
                break
            sc, co = scores_for(model, t), costs(model)
            cand = []
            for n in layers:
                s = np.asarray(sc[n], dtype=float).reshape(-1)
                s = s / (s.max() if s.max() > 0 else 1.0)
                c = np.asarray(co[n], dtype=float).reshape(-1)
                mk = masks[n].reshape(-1).numpy()
                idx = np.nonzero(mk & (c > 0))[0]
                cand += [(s[i] / c[i], n, int(i), c[i]) for i in idx]
            cand.sort(key=lambda r: (r[0], r[1], r[2]))
            got, left = 0.0, {n: int(masks[n].sum()) for n in layers}
            new = {n: masks[n].clone().reshape(-1) for n in layers}
            for _, n, i, c in cand:
                if got >= cur - limit:
                    break
                if left[n] > 1:
                    new[n][i] = False
                    left[n] -= 1
                    got += c
            new = {n: v.reshape(masks[n].shape) for n, v in new.items()}
            if all(torch.equal(new[n], masks[n]) for n in layers):
                raise CodesignError(f"prune: budget {limit:g} {unit} cannot be met with single weights: {cur:g} {unit}"
                                    + (" (folded layers, rtl.strategy resource: a zero weight saves no energy)"
                                       if unit == "pJ" and cfg.rtl.strategy == "resource" else ""))
            masks = new
            apply_weight_masks(model, masks)
            if progress:
                progress(f"budget step {t + 1}: {total(model):.6g} {unit} (limit {limit:g}), kept weights "
                         + ", ".join(f"{n} {int(masks[n].sum())}" for n in layers))
        else:
            raise CodesignError(f"prune: budget {limit:g} {unit} not met after 60 steps")
        acc_pruned = accuracy(model, dataset.x_test, dataset.y_test)
        model = finetune_masked(model, dataset, epochs, ft_lr, cfg, cfg.seed, masks)
        extra.update({"budget_unit": unit, "budget": limit, "budget_before": start, "budget_after": total(model)})
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
        "params_before": params_before, "params_after": _kept_params(model, masks),
        "masked_vs_removed_mismatches": 0, "masked_nonzero_codes": masked_nonzero_codes(model, masks),
        "seconds": round(time.time() - t0, 2), "layers": _weight_layer_report(model, nz_before, masks), **extra,
    }
    return model, cfg, report


# ---------------------------------------------------------------------------------------------
# energy-aware pruning (Yang, Chen, Sze, CVPR 2017)
# ---------------------------------------------------------------------------------------------
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

    def total_pj(m: nn.Module) -> float:
        ops, io = energy.from_model(m)
        return float(energy.estimate(ops, table, strategy, io)["pj_per_inference"])

    t0 = time.time()
    model = copy.deepcopy(model)
    e0 = total_pj(model)
    target = target_pj if target_pj is not None else e0 / float(target_ratio or 1.0)
    acc0_val, loss0_val = val_metrics(model, dataset)
    acc0 = accuracy(model, dataset.x_test, dataset.y_test)
    before = layer_stats(model)
    weight = granularity == "weight"
    layers = model.weight_layers() if weight else prunable_layers(model)
    masks = weight_masks(model, layers) if weight else None
    nz_before = {n: int((weight_codes(model, n) != 0).sum()) for n in model.weight_layers()}
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
                    e = total_pj(model)
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
        e = total_pj(model)
        if e <= target or _round == max(1, rounds) - 1:
            break
        frozen.clear()  # another pass from the globally fine-tuned model (Yang et al. iterate the passes)
    after = layer_stats(model)
    e = total_pj(model)
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
        report["sparsity"] = round(sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()), 4)
        report["layers"] = _weight_layer_report(model, nz_before, masks)
    else:
        report["layers"] = [{"layer": b.name, "units_before": b.units, "units_after": a.units}
                            for b, a in zip(before, after, strict=True)]
    return model, cfg, report
