"""``python -m bench zoo_seeds``: the zoo models with the layers of real QONNX models (BatchNorm kept, binary and
ternary layers, float scales), trained by codesign's own QAT over seeds 0, 1, 2 (each seed its own data split
and initialisation): float twin and QAT test accuracy per seed, their mean, and the export check (PyTorch vs
``execute_onnx``) of every run. ``--quick``: seed 0 only, 3 epochs.

Each run is ``codesign flow MODEL --until export --set seed=N`` into ``<runs>/zoo_seeds/MODEL_sN``.
"""

from __future__ import annotations

import json
import statistics

from bench.common import Ctx, log, section, table

MODELS = ("tfc_w2a2", "tfc_w1a1", "digits_cnn_bn")
SEEDS = (0, 1, 2)


def one(ctx: Ctx, name: str, seed: int) -> dict:
    import torch

    from codesign import config
    from codesign.flow import run_flow

    torch.set_num_threads(1)
    from codesign import data

    cfg = config.load(name, {**ctx.overrides(name), "seed": seed})
    out = ctx.runs / "zoo_seeds" / f"{name}_s{seed}"
    rep = out / "report.json"
    if not (rep.exists() and (out / "export" / "model.onnx").exists() and ctx.reuse):
        log(f"zoo_seeds: {name} seed {seed}")
        run_flow(cfg, out, until="export", resume=False)
    r = json.loads(rep.read_text())
    tr, ex = r.get("train", {}), r.get("export", {})
    n_train = len(data.load(cfg.data, seed).x_train)
    return {"float": tr.get("accuracy_float"), "qat": tr.get("accuracy_quantized"), "train_s": tr.get("seconds"),
            "export_mismatches": ex.get("torch_vs_qonnx_mismatches"),
            "export_tolerance": ex.get("torch_vs_qonnx_tolerance"),
            "export_max_abs_diff": ex.get("torch_vs_qonnx_max_abs_diff"), "n_train": n_train}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def run(ctx: Ctx) -> dict:
    seeds = (0,) if ctx.quick else SEEDS
    models = ctx.models or MODELS
    res: dict[str, dict[int, dict]] = {}
    for name in models:
        res[name] = {}
        for s in seeds:
            try:
                res[name][s] = one(ctx, name, s)
            except Exception as e:  # noqa: BLE001 - report it, fail the bench at the end
                ctx.problems.append(f"zoo_seeds: {name} seed {s} failed: {str(e)[:200]}")
                res[name][s] = {"error": str(e)[:200]}
    rows = []
    for name, per in res.items():
        ok = [r for r in per.values() if "error" not in r]
        accs = " , ".join(f"{_pct(r.get('float'))} / {_pct(r.get('qat'))}" if "error" not in r else "failed"
                          for r in per.values())
        mean_q = statistics.mean(r["qat"] for r in ok) if ok else None
        mean_f = statistics.mean(r["float"] for r in ok) if ok else None
        exports = sorted({f"{r['export_mismatches']} mismatches ({r['export_tolerance']})" for r in ok})
        worst = max((r.get("export_max_abs_diff") or 0.0 for r in ok), default=None)
        train_s = [r["train_s"] for r in ok if r.get("train_s") is not None]
        rows.append([name, accs, _pct(mean_f), _pct(mean_q), "; ".join(exports),
                     f"{worst:.2g}" if worst is not None else "-",
                     f"{min(train_s):.0f}-{max(train_s):.0f}" if train_s else "-"])
        for r in ok:
            ctx.expect_zero(f"zoo_seeds: {name}: PyTorch vs execute_onnx", r["export_mismatches"])
    body = table(["model", f"float / QAT test accuracy %, seeds {', '.join(map(str, seeds))}", "float mean %",
                  "QAT mean %", "export (PyTorch vs execute_onnx)", "largest export difference", "train s"], rows)
    n_train = sorted({r.get("n_train") for per in res.values() for r in per.values() if r.get("n_train")})
    body += ("\n\nEach run: `codesign flow MODEL --until export --set seed=N` (a seed sets the data split and the "
             "initialisation). The float column is a float twin of the same architecture trained with the same "
             "schedule. Digits upsampled to 28x28 stand in for MNIST offline"
             + (f" ({', '.join(f'{n:,}' for n in n_train)} training images)" if n_train else "")
             + ", so these are not comparable with FINN's MNIST figures.")
    if ctx.quick:
        body += " **Quick mode: seed 0, 3 epochs; not representative accuracies.**"
    section(ctx, "zoo-seeds", "Zoo models with BatchNorm, binary and float scales, over seeds", body)
    (ctx.runs / "bench_zoo_seeds.json").write_text(json.dumps(res, indent=1, default=str))
    return res
