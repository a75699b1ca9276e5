"""``python -m bench accuracy``: float vs quantized vs pruned vs golden-model accuracy of the offline zoo,
next to published numbers."""

from __future__ import annotations

import json

from bench.common import Ctx, log, report, run_dir, section, table

MODELS = ("digits_mlp", "digits_mlp_pot", "digits_mlp_pot_pruned", "digits_cnn", "mnist1d_cnn", "jet_mlp")
QUICK_MODELS = ("digits_mlp", "digits_mlp_pot_pruned")  # --quick: one plain and one pruned model
PUBLISHED = {
    "digits_mlp": "-",
    "mnist1d_cnn": "CNN ~94% (MNIST-1D paper, Greydanus 2020); MLP ~68%",
    "jet_mlp": "hls4ml jet tagger 75-77% quantized (real LHC jets; ours is a synthetic stand-in)",
    "tfc": "FINN TFC 2W2A 96.6% (MNIST)",
}


def _pct(v):
    return None if v is None else f"{100 * v:.1f}%"


def run(ctx: Ctx) -> dict:
    rows, out = [], {}
    for name in QUICK_MODELS if ctx.quick else MODELS:
        try:
            rd = run_dir(ctx, name, until="golden")
        except Exception as e:  # noqa: BLE001
            log(f"accuracy: {name} failed: {e}")
            ctx.problems.append(f"accuracy: {name} failed: {str(e)[:200]}")
            rows.append([name, "failed", "failed", "failed", "failed", "failed", f"error: {str(e)[:100]}"])
            continue
        r = report(rd)
        tr, pr, gd = r.get("train", {}), r.get("prune", {}), r.get("golden", {})
        out[name] = {"float": tr.get("accuracy_float"), "quantized": tr.get("accuracy_quantized"),
                     "pruned": pr.get("accuracy_after"), "golden": gd.get("accuracy"),
                     "epochs": tr.get("epochs_run"), "parameters": tr.get("parameters")}
        o = out[name]
        rows.append([name, o["parameters"], _pct(o["float"]), _pct(o["quantized"]), _pct(o["pruned"]),
                     _pct(o["golden"]), PUBLISHED.get(name, "-")])
    if not ctx.quick:
        rows.append(["tfc", "-", "n/a offline", "n/a offline", "-", "-", PUBLISHED["tfc"] +
                     "; needs the MNIST download"])
    body = table(["model", "parameters", "float", "quantized (QAT)", "pruned + fine-tuned",
                  "golden model (integer)", "published"], rows)
    body += ("\n\nFrom each run's report.json: `train.accuracy_float`, `train.accuracy_quantized`, "
             "`prune.accuracy_after`, `golden.accuracy` (test split). The golden column is the integer model "
             "that the RTL reproduces bit-exactly. The digits test split has 359 images (one image = 0.28%), so "
             "equal percentages across the digits models are not a copy error. The float column is a float "
             "pre-training of the same architecture (`train.float_epochs`) or a float twin trained with the same "
             "schedule (report key `train.float_source`). jet_mlp is trained on a synthetic, offline stand-in for "
             "the LHC jet data set, so its accuracy is not comparable with the published jet-tagging numbers.")
    if ctx.quick:
        body += (f" **Quick mode: {', '.join(QUICK_MODELS)} only, trained for 3 epochs; these are not representative "
                 "accuracies.**")
    section(ctx, "accuracy", "Accuracy of the model zoo", body)
    (ctx.runs / "bench_accuracy.json").write_text(json.dumps(out, indent=1))
    return out
