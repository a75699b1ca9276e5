"""Structured pruning of whole units: output neurons of ``fc<i>`` and output filters of ``conv<i>``
(every weight layer but the last).

Removing unit ``j`` of a layer removes row ``j`` of its weight and bias and the matching input
column(s) of the next weight layer: channel ``j`` of a conv feeding ``flatten`` owns the
``spatial`` consecutive columns ``j*S .. j*S+S-1`` of ``fc1`` (PyTorch's NCHW flatten order).

Criteria (importance of a unit; the least important go first):
  ``l1``/``l2`` (Li et al. 2016): norm of the unit's weights; ``fpgm`` (He et al. 2019): summed
  distance to the layer's other filters (units near the geometric median are redundant);
  ``taylor`` (Molchanov et al. 2019): sum over the unit's weights of (w * dL/dw)^2 accumulated on
  training batches; ``random``: a seeded baseline; ``energy``: importance per unit of cost, with the
  cost supplied by a callable (``cost_per_unit``), e.g. the energy model's pJ per unit; ``bn_gamma``
  (Liu et al. 2017, network slimming): |gamma| of BatchNorms trained with an L1 penalty on a float twin,
  then folded into the layers before removal (:mod:`codesign.prune.slimming`).
Coupling (residual Adds): ``prune.coupled`` or a model's ``coupled_groups`` list layers pruned as one
unit set (summed importance, same indices everywhere); a non-sequential model declares its dataflow with
``prune_consumers()`` and ``rebuild(units)``; unsafe removals raise a CodesignError naming the layers.

Masked vs removed: masking zeroes the unit's weight row and bias, and the columns that read it in the
consumer layers. With zero-point-0 quantizers a zero unit outputs exactly 0 after ReLU, so the physically
smaller model computes the same function; every removal is checked (``masked_vs_removed_mismatches``
must be 0). Quantizer state (activation scales) is copied across removal; per-tensor weight scales are
unchanged because the removed rows and columns are zero in the masked model (a consumer's max |w| can sit
in a removed column: masking rows only would change its scale on removal).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import CodesignError, UnsupportedError
from codesign.prune.common import (
    CostFn,
    bn_followers,
    check_supported,
    outputs,
    prunable_layers,
    seeded_random_scores,
    taylor_accumulate,
    taylor_of,
)


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
        return seeded_random_scores(seed, layer, w.shape[0])
    if criterion == "taylor":
        return taylor_of(grads, layer)
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


def _row_sums(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1).double()


def taylor_scores(model: nn.Module, x: np.ndarray, y: np.ndarray, batches: int = 8,
                  batch_size: int = 128) -> dict[str, torch.Tensor]:
    """First-order Taylor importance: sum over a unit's weights of (w * dL/dw)^2, summed over batches."""
    return taylor_accumulate(model, x, y, prunable_layers(model), _row_sums, batches, batch_size)


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


def unit_sets(model: nn.Module, coupled: list[list[str]] | None) -> list[list[str]]:
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
    sets = unit_sets(model, coupled)
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
        norm = {n: ss / (ss.max() if ss.max() > 0 else 1.0) for n, ss in scores.items()}
        flat = [(float(v), n, i) for n, ss in norm.items() for i, v in enumerate(ss)]
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


def apply_mask(model: nn.Module, keep: dict[str, np.ndarray]) -> None:
    """Zero the weight rows and biases of every unit not in ``keep``, and the input columns that read
    them in the consumer layers (in place).

    Zeroing the columns too makes the masked model the exact image of the removed one: a consumer's
    per-tensor weight scale comes from its max |w|, which may sit in a column that removal drops.
    """
    in_idx = _input_index(model, keep)
    owners = _bn_of(model)
    with torch.no_grad():
        for n, k in keep.items():
            m = getattr(model, n)
            mask = torch.zeros(m.weight.shape[0], dtype=torch.bool)
            mask[torch.as_tensor(k)] = True
            m.weight[~mask] = 0
            if m.bias is not None:
                m.bias[~mask] = 0
            for bn in owners.get(n, []):  # gamma = beta = 0: the channel is 0 after its BatchNorm too
                getattr(model, bn).weight[~mask] = 0
                getattr(model, bn).bias[~mask] = 0
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


def _bn_of(model: nn.Module) -> dict[str, list[str]]:
    """Weight layer -> the BatchNorm layers whose channels are its units."""
    out: dict[str, list[str]] = {}
    for bn, w in bn_followers(model).items():
        out.setdefault(w, []).append(bn)
    return out


def pruned_config(cfg: Config, model: nn.Module, keep: dict[str, np.ndarray]) -> Config:
    """``cfg`` with the smaller layer sizes (conv channels / hidden widths; an imported model's ``model.units``)."""
    if cfg.model.module is not None:
        units = {**cfg.model.units, **{n: len(k) for n, k in keep.items()}}
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"units": units})})
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
                raise CodesignError(f"coupled layers {', '.join(g)} (outputs joined by an Add) "
                                    f"must keep the same units; {present[0]} and {n} differ")
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
                raise UnsupportedError(f"layer {c}: {cols} input columns are not a multiple of the {units} units "
                                       f"of {n} (concatenation?); cannot prune {n} safely")
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

    check_supported(model)
    in_idx = _input_index(model, keep)
    if hasattr(model, "rebuild"):
        new_cfg = cfg
        small = model.rebuild({n: len(k) for n, k in keep.items()})
    else:
        new_cfg = pruned_config(cfg, model, keep)
        small = build_model(new_cfg, model.input_shape, model.n_classes)
    src = model.state_dict()
    out_idx: dict[str, np.ndarray] = {n: k for n, k in keep.items()}
    for bn, w in bn_followers(model).items():
        if w in keep:
            out_idx[bn] = keep[w]
    new_state = {}
    for key, t in src.items():
        layer, _, param = key.partition(".")
        if param in ("weight", "bias", "running_mean", "running_var"):
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


def prune_once(model: nn.Module, cfg: Config, keep: dict[str, np.ndarray],
               check_x: np.ndarray) -> tuple[nn.Module, Config, int]:
    """Mask, remove physically, and count mismatches between the masked and the removed model."""
    import copy

    masked = copy.deepcopy(model)
    apply_mask(masked, keep)
    small, new_cfg = remove_units(masked, cfg, keep)
    mism = int((final_codes(masked, check_x) != final_codes(small, check_x)).any(axis=1).sum())
    return small, new_cfg, mism


def final_codes(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's outputs as the integers the network computes: the last weight layer's output divided by
    its quantum (input scale x weight scale, per output channel where the weights are), when that layer reads
    a quantized tensor; else the float outputs.

    Why: the masked model sums zero terms that the removed one does not have, so with float (not power-of-two)
    scales their float32 outputs can differ in the last bit from summation order alone (BLAS blocks a sum of
    64 terms differently from one of 32), although both compute the same integer accumulator. Rounding
    ``output / quantum`` recovers that integer exactly (the float error is a few ulps, far below 0.5), so a
    unit wrongly removed still changes the codes and is counted."""
    layers = model.weight_layers() if hasattr(model, "weight_layers") else []
    last = getattr(model, layers[-1]) if layers else None
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(m, inputs, out):
        xin = inputs[0]
        if hasattr(xin, "scale") and hasattr(m, "quant_weight") and xin.scale is not None:
            ws = m.quant_weight().scale.detach().reshape(-1)
            q = (xin.scale.detach().reshape(-1) * ws).double()
            seen.append((getattr(out, "value", out).detach().double(), q))

    if last is None:
        return outputs(model, x)
    handle = last.register_forward_hook(hook)
    try:
        y = outputs(model, x)
    finally:
        handle.remove()
    if not seen:
        return y
    out = torch.cat([o.reshape(len(o), -1) for o, _ in seen]).numpy()
    q = seen[0][1].numpy()
    if (out.shape != y.shape or q.size not in (1, out.shape[1]) or any(not torch.equal(b, seen[0][1]) for _, b in seen)
            or not np.array_equal(out.astype(np.float32), y.astype(np.float32))):
        return y  # something after the last weight layer, or scales that vary: compare what the model outputs
    codes = out / q
    if np.abs(codes - np.rint(codes)).max(initial=0.0) > 1e-3:  # not on the quantum's grid: compare floats
        return y
    return np.rint(codes).astype(np.int64)
