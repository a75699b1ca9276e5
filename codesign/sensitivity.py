"""Per-layer bit-width sensitivity.

:func:`analyze` trains the baseline model of ``cfg`` (or takes a trained one), then lowers one layer at a
time (its weights, or its output activation) to fewer bits, fine-tunes briefly from the baseline
weights and measures the test-accuracy drop. :func:`suggest` then picks per-layer weight bit widths
under a budget of total weight bits (greedy: repeatedly take the cheapest measured step in accuracy
per saved bit). Rows are plain dicts, easy to print or dump as JSON:

``{"layer", "what": "weight"|"act", "scheme", "bits", "accuracy", "drop", "weight_bits", "saved_bits"}``

``weight_bits`` counts the layer's weights times their code width (for ``pot`` the code width, not
the integer grid width).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from codesign import quant
from codesign.config import Config, LayerQuant
from codesign.errors import ConfigError


def _weight_counts(model) -> dict[str, int]:
    return {n: int(getattr(model, n).weight.numel()) for n in model.weight_layers()}


def _with_layer(cfg: Config, layer: str, weight=None, act=None) -> Config:
    c = cfg.model_copy(deep=True)
    cur = c.quant.layers.get(layer) or LayerQuant()
    lq = LayerQuant(weight=weight or cur.weight, act=act or cur.act, bias_bits=cur.bias_bits)
    layers = dict(c.quant.layers)
    layers[layer] = lq
    c.quant.layers = layers
    return c


def _candidates(cfg: Config, layer: str, min_bits: dict[str, int]) -> list[tuple[str, Any]]:
    out = []
    wq = cfg.layer_weight(layer)
    lo = min_bits["pot" if wq.scheme == "pot" else "fixed"]
    for b in range(wq.bits - 1, lo - 1, -1):
        out.append(("weight", wq.model_copy(update={"bits": b})))
    return out


def _finetune_and_score(cfg: Config, base_state: dict, ds, epochs: int, seed: int) -> float:
    from codesign.train import accuracy, fine_tune, seed_everything

    seed_everything(seed)
    m = quant.build_model(cfg, ds.input_shape, ds.n_classes)
    m.load_state_dict(base_state, strict=False)
    fine_tune(m, ds, cfg, epochs=epochs, seed=seed, label="sensitivity")
    return accuracy(m, ds.x_test, ds.y_test)


def analyze(cfg: Config, dataset=None, model=None, finetune_epochs: int = 3, acts: bool = True,
            min_bits: dict[str, int] | None = None, budget_bits: int | None = None) -> dict[str, Any]:
    """One-layer-at-a-time bit lowering. Returns ``{"baseline", "trained_accuracy", "baseline_weight_bits",
    "rows", "suggestion", "seconds"}``; ``baseline`` is the accuracy of the unchanged config after the same
    fine-tuning (the control the drops are measured against).

    ``min_bits``: lowest widths tried (default fixed 2, pot 2, act 2). With ``budget_bits`` (total weight
    bits), ``suggestion`` is the per-layer weight config from :func:`suggest`."""
    from codesign import data as data_mod
    from codesign.train import accuracy, train_model

    torch.set_num_threads(1)
    t0 = time.time()
    mb = {"fixed": 2, "pot": 2, "act": 2, **(min_bits or {})}
    ds = dataset if dataset is not None else data_mod.load(cfg.data, cfg.seed)
    if model is None:
        model, _ = train_model(cfg, ds, progress=False)
    trained_acc = accuracy(model, ds.x_test, ds.y_test)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    counts = _weight_counts(model)
    # control: the same fine-tuning with the unchanged config, so drops measure the bit width only
    base_acc = _finetune_and_score(cfg, base_state, ds, finetune_epochs, cfg.seed) if finetune_epochs else trained_acc
    rows: list[dict[str, Any]] = []
    for layer in model.weight_layers():
        wq = cfg.layer_weight(layer)
        base_wbits = counts[layer] * wq.bits
        for what, q in _candidates(cfg, layer, mb):
            c = _with_layer(cfg, layer, weight=q)
            try:
                quant.check_config(c, ds.input_shape, ds.n_classes)
            except ConfigError:
                continue
            acc = _finetune_and_score(c, base_state, ds, finetune_epochs, cfg.seed)
            rows.append({"layer": layer, "what": what, "scheme": q.scheme, "bits": q.bits, "accuracy": acc,
                         "drop": base_acc - acc, "weight_bits": counts[layer] * q.bits,
                         "saved_bits": base_wbits - counts[layer] * q.bits})
        if acts and layer != model.weight_layers()[-1]:
            aq = cfg.layer_act(layer)
            for b in range(aq.bits - 1, mb["act"] - 1, -1):
                q = aq.model_copy(update={"bits": b})
                c = _with_layer(cfg, layer, act=q)
                acc = _finetune_and_score(c, base_state, ds, finetune_epochs, cfg.seed)
                rows.append({"layer": layer, "what": "act", "scheme": "fixed", "bits": b, "accuracy": acc,
                             "drop": base_acc - acc, "weight_bits": 0, "saved_bits": 0})
    total = sum(counts[n] * cfg.layer_weight(n).bits for n in counts)
    out = {"baseline": base_acc, "trained_accuracy": trained_acc, "baseline_weight_bits": total, "rows": rows,
           "suggestion": suggest(cfg, rows, counts, budget_bits) if budget_bits else None,
           "seconds": round(time.time() - t0, 2)}
    return out


def suggest(cfg: Config, rows: list[dict[str, Any]], counts: dict[str, int], budget_bits: int
            ) -> dict[str, Any]:
    """Greedy per-layer weight bits so that sum(weights x bits) <= ``budget_bits``, assuming the
    one-at-a-time drops add up. Returns ``{"bits": {layer: bits}, "weight_bits", "est_drop", "met"}``."""
    bits = {n: cfg.layer_weight(n).bits for n in counts}
    drop = {(r["layer"], r["bits"]): max(0.0, r["drop"]) for r in rows if r["what"] == "weight"}
    est = 0.0

    def used() -> int:
        return sum(counts[n] * bits[n] for n in counts)

    while used() > budget_bits:
        best = None
        for n in counts:
            nb = bits[n] - 1
            if (n, nb) not in drop:
                continue
            prev = drop.get((n, bits[n]), 0.0)
            cost = (drop[(n, nb)] - prev) / counts[n]
            if best is None or cost < best[0]:
                best = (cost, n, nb, drop[(n, nb)] - prev)
        if best is None:
            break
        _, n, nb, d = best
        bits[n] = nb
        est += d
    return {"bits": bits, "weight_bits": used(), "est_drop": est, "met": used() <= budget_bits}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"baseline accuracy {result['baseline']:.4f}, weight bits {result['baseline_weight_bits']}",
             f"{'layer':<8}{'what':<8}{'scheme':<8}{'bits':>5}{'accuracy':>10}{'drop':>8}{'saved':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['layer']:<8}{r['what']:<8}{r['scheme']:<8}{r['bits']:>5}{r['accuracy']:>10.4f}"
                     f"{r['drop']:>8.4f}{r['saved_bits']:>8}")
    if result.get("suggestion"):
        s = result["suggestion"]
        lines.append(f"suggestion: {s['bits']} ({s['weight_bits']} weight bits, est. drop {s['est_drop']:.4f}, "
                     f"budget {'met' if s['met'] else 'NOT met'})")
    return "\n".join(lines)
