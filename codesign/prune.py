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
  cost supplied by a callable (``cost_per_unit``), e.g. the energy model's pJ per unit.
Schedules: ``oneshot``; ``iterative`` (``steps`` equal steps, fine-tuning in between); ``agp``
(Zhu & Gupta 2017: cumulative sparsity ``s_t = s * (1 - (1 - t/T)^3)`` over ``steps`` steps).

Masked vs removed: masking zeroes the unit's weight row and bias. With zero-point-0 quantizers a zero
unit outputs exactly 0 after ReLU, so the physically smaller model computes the same function; every
removal is checked (``masked_vs_removed_mismatches`` must be 0). Quantizer state (activation scales)
is copied across removal; per-tensor weight scales are unchanged because the removed rows are zero.
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


def _spatial_after(model: nn.Module, layer: str) -> int:
    """Spatial positions per channel that flatten sees after ``layer`` (1 for dense layers)."""
    if not layer.startswith("conv"):
        return 1
    with torch.no_grad():
        x = torch.zeros((1, *model.input_shape))
        for n in model.order:
            x = getattr(model, n)(x)
            if n == "flatten":
                break
            last_shape = (x.value if hasattr(x, "value") else x).shape
    return int(math.prod(last_shape[2:]))


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
        raise UnsupportedError("criterion 'bn_gamma' needs BatchNorm layers (network slimming); "
                               "this model has none")
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


def select_units(model: nn.Module, criterion: str, sparsity: float, scope: str = "layer", *,
                 grads: dict[str, torch.Tensor] | None = None, seed: int = 0,
                 cost_per_unit: CostFn | None = None, per_layer: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Indices of the units to KEEP per prunable layer, removing ``sparsity`` of them (rounded).

    ``scope='layer'`` removes the same fraction from each layer (or ``per_layer[name]``); ``'global'``
    ranks all units together on scores normalized by each layer's maximum. Never removes a whole layer.
    """
    layers = prunable_layers(model)
    scores = {n: importance(model, n, criterion, grads=grads, seed=seed, cost_per_unit=cost_per_unit) for n in layers}
    keep: dict[str, np.ndarray] = {}
    if scope == "global" and per_layer is None:
        total = sum(len(s) for s in scores.values())
        n_remove = int(round(sparsity * total))
        flat = [(s / (s.max() if s.max() > 0 else 1.0), n, i) for n, ss in scores.items() for i, s in enumerate(ss)]
        flat.sort(key=lambda t: (t[0], t[1], t[2]))
        removed = {n: set() for n in layers}
        for _, n, i in flat:
            if n_remove == 0:
                break
            if len(removed[n]) < len(scores[n]) - 1:
                removed[n].add(i)
                n_remove -= 1
        for n in layers:
            keep[n] = np.array(sorted(set(range(len(scores[n]))) - removed[n]), dtype=np.int64)
        return keep
    for n in layers:
        s = scores[n]
        frac = (per_layer or {}).get(n, sparsity)
        n_keep = len(s) - int(round(frac * len(s)))
        if n_keep < 1:
            raise CodesignError(f"layer {n}: sparsity {frac} would remove all {len(s)} units; "
                                "keep at least one (lower the sparsity)")
        order = np.argsort(-s, kind="stable")
        keep[n] = np.sort(order[:n_keep])
    return keep


# ---------------------------------------------------------------------------------------------
# masking and physical removal
# ---------------------------------------------------------------------------------------------
def apply_mask(model: nn.Module, keep: dict[str, np.ndarray]) -> None:
    """Zero the weight rows and biases of every unit not in ``keep`` (in place)."""
    with torch.no_grad():
        for n, k in keep.items():
            m = getattr(model, n)
            mask = torch.zeros(m.weight.shape[0], dtype=torch.bool)
            mask[torch.as_tensor(k)] = True
            m.weight[~mask] = 0
            if m.bias is not None:
                m.bias[~mask] = 0


def _next_layer(model: nn.Module, layer: str) -> str:
    wl = model.weight_layers()
    return wl[wl.index(layer) + 1]


def pruned_config(cfg: Config, model: nn.Module, keep: dict[str, np.ndarray]) -> Config:
    """``cfg`` with the smaller layer sizes (conv channels / hidden widths)."""
    channels = [len(keep[f"conv{i + 1}"]) if f"conv{i + 1}" in keep else c for i, c in enumerate(cfg.model.channels)]
    hidden = [len(keep[f"fc{i + 1}"]) if f"fc{i + 1}" in keep else h for i, h in enumerate(cfg.model.hidden)]
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"channels": channels, "hidden": hidden})})


def remove_units(model: nn.Module, cfg: Config, keep: dict[str, np.ndarray]) -> tuple[nn.Module, Config]:
    """A new, physically smaller model without the pruned units; quantizer state is copied."""
    from codesign.quant import build_model

    _check_supported(model)
    new_cfg = pruned_config(cfg, model, keep)
    small = build_model(new_cfg, model.input_shape, model.n_classes)
    src = model.state_dict()
    out_idx: dict[str, np.ndarray] = {n: k for n, k in keep.items()}
    in_idx: dict[str, np.ndarray] = {}
    for n, k in keep.items():
        nxt = _next_layer(model, n)
        s = _spatial_after(model, n) if (n.startswith("conv") and nxt.startswith("fc")) else 1
        in_idx[nxt] = (k[:, None] * s + np.arange(s)[None, :]).reshape(-1) if s > 1 else k
    new_state = {}
    for key, t in src.items():
        layer, _, param = key.partition(".")
        if param in ("weight", "bias"):
            if layer in out_idx:
                t = t[torch.as_tensor(out_idx[layer])]
            if param == "weight" and layer in in_idx:
                t = t[:, torch.as_tensor(in_idx[layer])]
        new_state[key] = t.clone()
    missing, unexpected = small.load_state_dict(new_state, strict=False)
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


def prune_model(model: nn.Module, cfg: Config, dataset, *, criterion: str | None = None,
                sparsity: float | None = None, schedule: str | None = None, steps: int | None = None,
                finetune_epochs: int | None = None, scope: str | None = None,
                cost_per_unit: CostFn | None = None, progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Prune ``model`` (a trained QuantNet) per ``cfg.prune`` (keyword arguments override it).

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
    _check_supported(model)
    t0 = time.time()
    before = layer_stats(model)
    original_units = {s.name: s.units for s in before if s.name in prunable_layers(model)}
    acc_before = accuracy(model, dataset.x_test, dataset.y_test)
    targets = schedule_targets(schedule, sparsity, steps)
    mismatches = 0
    acc_pruned = acc_before
    per_step_epochs = max(1, epochs // len(targets)) if epochs else 0
    for t, target in enumerate(targets):
        # fraction of the *current* units to remove so that the original count reaches the target
        cur = {s.name: s.units for s in layer_stats(model) if s.name in original_units}
        per_layer = {n: max(0.0, 1 - (original_units[n] * (1 - target)) / cur[n]) for n in cur}
        grads = taylor_scores(model, dataset.x_train, dataset.y_train) if criterion == "taylor" else None
        if scope == "global":
            keep = select_units(model, criterion, 1 - sum(original_units[n] * (1 - target) for n in cur) / sum(cur.values()),
                                "global", grads=grads, seed=cfg.seed + t, cost_per_unit=cost_per_unit)
        else:
            keep = select_units(model, criterion, 0.0, "layer", grads=grads, seed=cfg.seed + t,
                                cost_per_unit=cost_per_unit, per_layer=per_layer)
        model, cfg, mism = prune_once(model, cfg, keep, dataset.x_test)
        mismatches += mism
        acc_pruned = accuracy(model, dataset.x_test, dataset.y_test) if t == 0 else acc_pruned
        if progress:
            progress(f"step {t + 1}/{len(targets)}: sparsity {target:.2f}, units "
                     + ", ".join(f"{n} {len(k)}" for n, k in keep.items()))
        model = finetune(model, dataset, per_step_epochs, cfg.train.lr * 0.5, cfg, cfg.seed + t)
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
        "criterion": criterion, "schedule": schedule, "scope": scope,
        "sparsity": round(1 - kept_units / total_units, 4) if total_units else 0.0,
        "accuracy_before": acc_before, "accuracy_pruned_no_finetune": acc_pruned, "accuracy_after": acc_after,
        "params_before": sum(s.params for s in before), "params_after": sum(s.params for s in after),
        "macs_before": sum(s.macs for s in before), "macs_after": sum(s.macs for s in after),
        "masked_vs_removed_mismatches": mismatches, "seconds": round(time.time() - t0, 2), "layers": layers,
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
                                   "params_before", "params_after", "masked_vs_removed_mismatches", "criterion")}
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
