"""Per-layer width search under a hardware budget, with weight sharing (MetaPruning-style).

Instead of training every candidate width vector from scratch, one wide network (the *supernet*: the
base config trained once at full width) shares its weights with every candidate: a candidate
``{layer: width}`` is *sliced* from it by keeping the ``width`` units (neurons / filters) of largest L1
norm in each hidden layer (:func:`slice_model`: :func:`codesign.prune.apply_mask` then
:func:`codesign.prune.remove_units`, the same physical removal the structured pruner uses), fine-tuned for
a few epochs (:func:`codesign.train.fine_tune`), and scored on the validation split. An Optuna sampler
proposes the widths; the hardware cost comes from our own analytic estimators on the sliced model
(:func:`codesign.energy.from_model` + :func:`codesign.energy.estimate`: pJ per inference; the parameter
count), and a budget (``{"energy_pj": 200}``) is a constraint (Optuna's ``constraints_func``): the search
returns the most accurate widths whose cost is within budget.

References:

* Liu et al., "MetaPruning: Meta Learning for Automatic Neural Network Channel Pruning", ICCV 2019
  (searching per-layer channel counts with shared weights instead of hand-chosen ratios; here the
  shared weights are the trained full-width network, not a meta-learned PruningNet);
* Yu et al., "Slimmable Neural Networks", ICLR 2019, and Yu & Huang, "Universally Slimmable Networks",
  ICCV 2019 (evaluating narrower networks by slicing a shared wide one; here the slice is L1-ranked, as
  in Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, rather than the first k channels);
* Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework", KDD 2019
  (``optuna.samplers.TPESampler`` / ``optuna.samplers.NSGAIISampler``; the budget is a constraint:
  ``Trial.set_constraint``, or ``constraints_func`` before Optuna 5).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.config import Config
from codesign.errors import ConfigError

COSTS = ("energy_pj", "params", "adder_bits")  # what a budget may bound (computed from the model, in milliseconds)


def width_keys(cfg: Config) -> dict[str, str]:
    """Config key -> weight layer of every searchable width: ``model.channels.<i>`` -> ``conv<i+1>``,
    ``model.hidden.<i>`` -> ``fc<i+1>`` (the output layer's width is the number of classes)."""
    if cfg.model.module is not None:
        raise ConfigError("width search: needs a builder model (mlp / cnn1d / cnn2d), not model.module")
    keys = {}
    if cfg.model.builder != "mlp":
        keys.update({f"model.channels.{i}": f"conv{i + 1}" for i in range(len(cfg.model.channels))})
    keys.update({f"model.hidden.{i}": f"fc{i + 1}" for i in range(len(cfg.model.hidden))})
    return keys


def full_widths(cfg: Config) -> dict[str, int]:
    """Layer -> width of ``cfg`` for every searchable layer."""
    out = {}
    for key, layer in width_keys(cfg).items():
        _, name, i = key.split(".")
        out[layer] = int(getattr(cfg.model, name)[int(i)])
    return out


def layer_of(cfg: Config, key: str) -> str:
    """The weight layer a width key sizes; a ConfigError naming the key when it is not one."""
    keys = width_keys(cfg)
    if key not in keys:
        raise ConfigError(f"width search: {key!r} is not a width key of this model; choose from "
                          f"{', '.join(keys) or '(none: the model has no hidden layer)'}")
    return keys[key]


def l1_keep(model: nn.Module, widths: dict[str, int]) -> dict[str, np.ndarray]:
    """Indices (sorted) of the ``widths[layer]`` units of largest L1 norm in each layer (ties: lower index)."""
    keep = {}
    for layer, k in widths.items():
        w = getattr(model, layer).weight.detach()
        n = int(w.shape[0])
        if not 1 <= int(k) <= n:
            raise ConfigError(f"width search: {layer} width {k} outside 1..{n} (the supernet's width)")
        score = w.reshape(n, -1).abs().sum(1).double().numpy()
        order = np.argsort(-score, kind="stable")
        keep[layer] = np.sort(order[:int(k)]).astype(np.int64)
    return keep


def slice_model(model: nn.Module, cfg: Config, widths: dict[str, int]) -> tuple[nn.Module, Config]:
    """A new model of exactly ``widths`` (layer -> units), sliced from ``model``'s shared weights: the
    top-L1 units of each layer kept, the others removed together with the input columns that read them.
    Its outputs equal those of ``model`` with the dropped units (and their columns) zeroed
    (:func:`codesign.prune.apply_mask`). Layers not in ``widths`` keep their width."""
    from codesign.prune import apply_mask, remove_units

    keep = l1_keep(model, widths)
    masked = copy.deepcopy(model)
    apply_mask(masked, keep)
    return remove_units(masked, cfg, keep)


def adder_bits(ops) -> int:
    """An area estimate of a fully parallel design in adder bits (about one LUT4 per bit on ECP5 / iCE40):
    each output field sums one shifted input per canonical-signed-digit of each non-zero weight code (plus
    the bias), i.e. ``digits - 1`` adders as wide as the layer's accumulator. An estimate from the weight
    codes (:class:`codesign.energy.LayerOps`), not synthesis: no sharing (CSE), no requantization or
    control logic."""
    from codesign import energy
    from codesign.rtl.emit.netlist import csd

    total = 0
    table = energy.EnergyTable.load()
    for op in ops:
        if op.weights is None:
            continue
        acc = energy.layer_energy(op, table, "latency").acc_bits
        w = op.weights.astype(np.int64)
        vals, inv = np.unique(w, return_inverse=True)
        digits = np.array([len(csd(int(v))) for v in vals], dtype=np.int64)[inv.reshape(w.shape)].sum(1)
        if op.bias_nonzero is not None:
            digits = digits + np.asarray(op.bias_nonzero, dtype=np.int64)
        total += int(np.clip(digits - 1, 0, None).sum()) * acc * op.positions
    return total


def cost(model: nn.Module, strategy: str = "latency") -> dict[str, float]:
    """Analytic cost of a trained model: ``energy_pj`` per inference (:mod:`codesign.energy`), the
    number of non-zero weight codes (``params``) and the fully parallel adder-bit area estimate
    (``adder_bits``, :func:`adder_bits`)."""
    from codesign import energy

    ops, io = energy.from_model(model)
    e = energy.estimate(ops, strategy=strategy, io_bits=io)
    return {"energy_pj": float(e["pj_per_inference"]),
            "params": float(sum(int((op.weights != 0).sum()) for op in ops if op.weights is not None)),
            "adder_bits": float(adder_bits(ops))}


def check_budget(budget: dict[str, float]) -> None:
    bad = [k for k in budget if k not in COSTS]
    if bad:
        raise ConfigError(f"width search: budget {bad}: unknown cost (choose from {', '.join(COSTS)})")


def over_budget(c: dict[str, float], budget: dict[str, float]) -> list[float]:
    """Optuna constraint values: cost - budget per bounded cost (<= 0 is feasible)."""
    return [float(c[k] - v) for k, v in budget.items()]


def evaluate(supernet: nn.Module, cfg: Config, ds, widths: dict[str, int], *, epochs: int, seed: int = 0,
             budget: dict[str, float] | None = None) -> dict[str, Any]:
    """Slice ``widths`` from the supernet, fine-tune ``epochs`` (QAT, :func:`codesign.train.fine_tune`),
    and return val / test accuracy and cost. A slice already over ``budget`` before fine-tuning is not
    fine-tuned (fine-tuning does not change the widths, which set the cost)."""
    from codesign.train import accuracy, fine_tune

    small, small_cfg = slice_model(supernet, cfg, widths)
    c0 = cost(small, cfg.rtl.strategy)
    tuned = False
    if epochs > 0 and not (budget and max(over_budget(c0, budget)) > 0):
        torch.manual_seed(seed)
        fine_tune(small, ds, small_cfg, epochs=epochs, seed=seed)
        tuned = True
    c = cost(small, cfg.rtl.strategy) if tuned else c0
    out = {"widths": {k: int(v) for k, v in widths.items()}, "val_acc": accuracy(small, ds.x_val, ds.y_val),
           "test_acc": accuracy(small, ds.x_test, ds.y_test), "fine_tuned": tuned, **c}
    out["feasible"] = not budget or max(over_budget(c, budget)) <= 0
    return out | {"model": small, "config": small_cfg}


def _space(cfg: Config, space: dict[str, Any] | None, min_width: int) -> dict[str, tuple[int, int, int]]:
    """layer -> (low, high, step). Default: every width key, from ``min_width`` to the full width in steps
    of ``max(1, full // 16)``."""
    full = full_widths(cfg)
    if not space:
        out = {}
        for layer, w in full.items():
            step = max(1, w // 16)
            lo = min(w, step * max(1, math.ceil(min_width / step)))
            out[layer] = (lo, lo + (w - lo) // step * step, step)
        return out
    out = {}
    for key, spec in space.items():
        layer = layer_of(cfg, key)
        if isinstance(spec, dict):
            lo, hi, st = int(spec.get("low", 1)), int(spec.get("high", full[layer])), int(spec.get("step", 1))
        else:
            raise ConfigError(f"width search: space.{key}: give {{low, high, step}}")
        hi = lo + (hi - lo) // max(st, 1) * max(st, 1)  # Optuna needs high - low divisible by step
        if st < 1 or not 1 <= lo <= hi <= full[layer]:
            raise ConfigError(f"width search: space.{key}: need 1 <= low <= high <= {full[layer]} (the "
                              f"supernet's width), got low {lo}, high {hi}")
        out[layer] = (lo, hi, st)
    return out


def search(supernet: nn.Module, cfg: Config, ds, *, budget: dict[str, float], trials: int = 20,
           epochs: int = 2, space: dict[str, Any] | None = None, sampler: str = "tpe", seed: int = 0,
           min_width: int = 2, start: list[dict[str, int]] | None = None,
           progress: bool = False) -> dict[str, Any]:
    """Search per-layer widths sliced from ``supernet`` (trained at ``cfg``'s widths) for the best
    validation accuracy within ``budget`` (e.g. ``{"energy_pj": 300}``).

    ``sampler``: ``tpe`` (``optuna.samplers.TPESampler(multivariate=True)``, one
    objective: validation accuracy) or ``nsga2`` (``optuna.samplers.NSGAIISampler````,
    two objectives: validation accuracy and
    energy); the budget is their constraint. ``space``: ``{"model.hidden.0": {low, high, step}}``
    (default: every width key, ``min_width`` .. full width). ``start``: width vectors evaluated first
    (``Study.enqueue_trial``), e.g. the uniform-ratio pick, so that the search starts from it. Returns
    ``trials`` (one dict per trial, without the models) and ``best``: the feasible trial of highest
    validation accuracy (ties: lower energy), None when no trial was within budget."""
    import optuna

    check_budget(budget)
    sp = _space(cfg, space, min_width)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # Optuna >= 5 takes the constraint values from Trial.set_constraint; older versions from constraints_func
    new_api = hasattr(optuna.Trial, "set_constraint")
    ckw = {} if new_api else {"constraints_func": lambda t: t.user_attrs.get("constraints", [0.0])}
    if sampler == "tpe":
        smp = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=max(2, min(10, trials // 3)),
                                         **ckw)
        directions = ["maximize"]
    elif sampler == "nsga2":
        smp = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(10, trials // 2)), **ckw)
        directions = ["maximize", "minimize"]
    else:
        raise ConfigError(f"width search: sampler {sampler!r} (choose tpe or nsga2)")
    study = optuna.create_study(directions=directions, sampler=smp)
    for w in start or []:
        study.enqueue_trial({k: int(v) for k, v in w.items()}, skip_if_exists=True)
    rows: list[dict[str, Any]] = []
    seen: dict[tuple, dict[str, Any]] = {}
    for i in range(trials):
        t = study.ask()
        widths = {layer: t.suggest_int(layer, lo, hi, step=st) for layer, (lo, hi, st) in sp.items()}
        key = tuple(sorted(widths.items()))
        if key in seen:  # samplers re-propose points: reuse the result
            r = dict(seen[key], duplicate=True)
        else:
            r = evaluate(supernet, cfg, ds, widths, epochs=epochs, seed=seed * 1000 + i, budget=budget)
            r.pop("model"), r.pop("config")
            seen[key] = r
        r = dict(r, trial=i)
        rows.append(r)
        if new_api:
            for k, v in zip(budget, over_budget(r, budget), strict=True):
                t.set_constraint(k, v)
        else:
            t.set_user_attr("constraints", over_budget(r, budget))
        study.tell(t, [r["val_acc"]] if sampler == "tpe" else [r["val_acc"], r["energy_pj"]])
        if progress:
            print(f"[width] trial {i}: {widths} val {r['val_acc']:.3f} {r['energy_pj']:.0f} pJ"
                  f"{'' if r['feasible'] else ' (over budget)'}", flush=True)
    feas = [r for r in rows if r["feasible"]]
    best = max(feas, key=lambda r: (r["val_acc"], -r["energy_pj"])) if feas else None
    return {"trials": rows, "best": best, "space": {k: list(v) for k, v in sp.items()}, "budget": dict(budget)}


def uniform_widths(cfg: Config, ratio: float) -> dict[str, int]:
    """Every searchable layer shrunk by the same ``ratio`` (the hand-chosen-ratio baseline), at least 1."""
    return {layer: max(1, int(round(ratio * w))) for layer, w in full_widths(cfg).items()}


def _largest(n: int, ok) -> int | None:
    """Largest k in 1..n with ok(k), by bisection (cost grows with k: wider slices cost more)."""
    if not ok(1):
        return None
    lo, hi = 1, n  # ok(lo) holds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _within(supernet: nn.Module, cfg: Config, widths: dict[str, int], budget: dict[str, float]) -> bool:
    small, _ = slice_model(supernet, cfg, widths)
    return max(over_budget(cost(small, cfg.rtl.strategy), budget)) <= 0


def uniform_under_budget(supernet: nn.Module, cfg: Config, budget: dict[str, float],
                         grid: int = 64) -> tuple[float, dict[str, int]] | None:
    """The largest uniform ratio (on a ``1/grid`` grid, by bisection) whose L1 slice of the supernet is
    within budget (the cost before fine-tuning: the widths set it), and its widths; None when even the
    smallest is over."""
    check_budget(budget)
    k = _largest(grid, lambda k: _within(supernet, cfg, uniform_widths(cfg, k / grid), budget))
    return None if k is None else (k / grid, uniform_widths(cfg, k / grid))


def global_l1_widths(supernet: nn.Module, cfg: Config, sparsity: float) -> dict[str, int]:
    """Widths L1 structured pruning with global scope keeps at ``sparsity``
    (:func:`codesign.prune.select_units` ``scope='global'``: all units ranked together on L1 norms
    normalized by each layer's maximum)."""
    from codesign.prune import select_units

    full = full_widths(cfg)
    return {n: len(v) for n, v in select_units(supernet, "l1", sparsity, scope="global").items() if n in full}


def global_l1_under_budget(supernet: nn.Module, cfg: Config, budget: dict[str, float],
                           grid: int = 64) -> tuple[float, dict[str, int]] | None:
    """Global-scope L1 structured pruning at the lowest sparsity (``1/grid`` grid, by bisection) whose
    slice is within budget; returns (sparsity, widths)."""
    check_budget(budget)
    k = _largest(grid, lambda k: _within(supernet, cfg, global_l1_widths(supernet, cfg, 1 - k / grid), budget))
    return None if k is None else (1 - k / grid, global_l1_widths(supernet, cfg, 1 - k / grid))


def widths_str(widths: dict[str, int]) -> str:
    return "-".join(str(widths[k]) for k in sorted(widths, key=lambda n: (not n.startswith("conv"), n)))
