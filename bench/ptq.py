"""Post-training quantization of imported float nets: PTQ variants vs QAT vs float, per scheme, over seeds.

    python -m bench.ptq [--seeds 0 1 2] [--models digits_mlp digits_cnn mnist1d_cnn] [--quick] [--no-doc]

Models, each a float ``nn.Module`` trained here in plain PyTorch (Adam 3e-3, batch 64; the seed sets the
initialization, the shuffling and, for mnist1d, the data split) and imported through ``model.module``
(:mod:`codesign.importer`): ``digits_mlp`` and ``digits_cnn`` are examples/byom/net.py's MLP (64-32-10) and CNN
(conv-BN-ReLU-pool x2, linear) on the digits split of examples/byom/prepare.py; ``mnist1d_cnn`` is a Conv1d-BN
net defined here (:data:`MNIST1D_NET`) on the zoo's mnist1d. Schemes: 8-bit fixed-point weights and
activations (power-of-two scales); 4-bit fixed-point weights (po2 scale) with 4-bit activations; 4-bit
power-of-two weights (``pot``: 0 or +-2^e) with 4-bit activations. Rows: the float net; PTQ variants
(``quant.method: ptq`` with ``quant.ptq`` options, :mod:`codesign.ptq`); QAT: ``quant.method: qat`` for
:data:`QAT_EPOCHS` epochs from the float weights. Test accuracy, mean +- std over seeds; verdicts computed from
the numbers. Rewrites ``<!-- bench:ptq -->`` in docs/benchmarks.md unless ``--no-doc``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import machine, write_section
from codesign import config, data
from codesign.errors import ConfigError
from codesign.importer import train_imported

ROOT = Path(__file__).resolve().parents[1]
BYOM = ROOT / "examples" / "byom"
FLOAT_EPOCHS = {"digits_mlp": 20, "digits_cnn": 20, "mnist1d_cnn": 30}
QAT_EPOCHS = 5
#: ZeroQ synthesis steps in the bench (config default 500): 200 reach the same accuracies on these nets at
#: a third of the time
DATA_FREE_STEPS = 200

MNIST1D_NET = '''
from torch import nn


class CNN1d(nn.Module):
    """mnist1d (1x40): conv(1->16,k5)-BN-ReLU-pool2, conv(16->32,k3)-BN-ReLU-pool2, linear 320->10."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
                                  nn.Conv1d(16, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
                                  nn.Flatten())
        self.head = nn.Linear(32 * 10, 10)

    def forward(self, x):
        return self.head(self.body(x))
'''

SCHEMES = {
    "8-bit fixed": {"quant.weight": {"scheme": "fixed", "bits": 8}, "quant.act.bits": 8},
    "4-bit fixed": {"quant.weight": {"scheme": "fixed", "bits": 4}, "quant.act.bits": 4},
    "4-bit pot": {"quant.weight": {"scheme": "pot", "bits": 4}, "quant.act.bits": 4},
}
NEAREST = "PTQ nearest"
ROWS: dict[str, dict | None] = {
    NEAREST: {},
    "PTQ + CLE": {"equalize": True},
    "PTQ + bias corr.": {"bias_correction": True},
    "PTQ + GPTQ": {"rounding": "gptq"},
    "PTQ + GPFQ": {"rounding": "gpfq"},
    "PTQ + CLE + GPTQ + bias corr.": {"equalize": True, "rounding": "gptq", "bias_correction": True},
    "PTQ data-free (ZeroQ)": {"data_free": True, "data_free_steps": DATA_FREE_STEPS},
    "QAT": None,
}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _train_float(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    prep = _load("bench_ptq_prepare", BYOM / "prepare.py")
    prep.train_float(model, x, y, epochs, seed=seed)


def setup(model: str, seed: int, work: Path) -> dict:
    """Train the float net of ``model`` for ``seed``; return the config dict that imports it."""
    torch.manual_seed(seed)
    if model.startswith("digits"):
        d = work / "digits"
        if not (d / "digits.npz").is_file():
            _load("bench_ptq_prepare", BYOM / "prepare.py").prepare(d, models=())
            (d / "net.py").write_text((BYOM / "net.py").read_text())
        net = _load("bench_ptq_net", d / "net.py")
        mlp = model == "digits_mlp"
        npz = d / ("digits.npz" if mlp else "digits_img.npz")
        with np.load(npz) as z:
            x, y = z["x_train"], z["y_train"]
        m = net.MLP() if mlp else net.CNN()
        _train_float(m, x, y, FLOAT_EPOCHS[model], seed)
        w = work / f"{model}_{seed}.pt"
        torch.save(m.state_dict(), w)
        return {"data": {"dataset": "npz", "path": str(npz)},
                "model": {"module": f"{d / 'net.py'}:{'MLP' if mlp else 'CNN'}", "weights": str(w)}}
    assert model == "mnist1d_cnn"
    (work / "net1d.py").write_text(MNIST1D_NET)
    net = _load("bench_ptq_net1d", work / "net1d.py")
    dc = {"dataset": "mnist1d", "layout": "signal"}
    ds = data.load(config.from_dict({"data": dc}).data, seed)
    m = net.CNN1d()
    _train_float(m, ds.x_train, ds.y_train, FLOAT_EPOCHS[model], seed)
    w = work / f"{model}_{seed}.pt"
    torch.save(m.state_dict(), w)
    return {"data": dc, "model": {"module": f"{work / 'net1d.py'}:CNN1d", "weights": str(w)}}


def run(models: list[str], seeds: list[int], rows: list[str]) -> dict:
    """res[model][scheme][row] = list of accuracies (one per seed); res[model]['float'] likewise."""
    torch.set_num_threads(1)
    res: dict = {m: {"float": [], **{s: {r: [] for r in rows} for s in SCHEMES}} for m in models}
    with tempfile.TemporaryDirectory(prefix="bench_ptq_") as tmp:
        work = Path(tmp)
        for model in models:
            for seed in seeds:
                base = setup(model, seed, work)
                for scheme, sq in SCHEMES.items():
                    for row in rows:
                        opts = ROWS[row]
                        over = {**base, "seed": seed, **sq}
                        if opts is None:
                            over.update({"quant.method": "qat", "train.epochs": QAT_EPOCHS, "train.patience": 0})
                        else:
                            over.update({"quant.method": "ptq", "quant.ptq": opts})
                        cfg = config.load(None, over)
                        ds = data.load(cfg.data, cfg.seed)
                        t0 = time.time()
                        try:
                            _, hist = train_imported(cfg, ds, progress=False)
                        except ConfigError as e:  # data-free on a net without BatchNorm
                            print(f"{model} seed {seed} {scheme} {row}: n/a ({e})", flush=True)
                            continue
                        if scheme == next(iter(SCHEMES)) and row == rows[0]:
                            res[model]["float"].append(hist["accuracy_float"])
                        res[model][scheme][row].append(hist["accuracy_quantized"])
                        print(f"{model} seed {seed} {scheme:12s} {row:30s} {hist['accuracy_quantized']:.4f} "
                              f"({time.time() - t0:.1f} s)", flush=True)
    return res


def _ms(v: list[float]) -> str:
    if not v:
        return "n/a"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{100 * statistics.mean(v):.2f} ± {100 * sd:.2f}"


def _sd(v: list[float]) -> float:
    return statistics.stdev(v) if len(v) > 1 else 0.0


def render(res: dict, seeds: list[int], rows: list[str], command: str) -> str:
    out = [f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}). Test accuracy in %, "
           f"mean ± std over seeds {', '.join(map(str, seeds))}. Each float net is trained here in plain PyTorch "
           f"({', '.join(f'{k} {v} epochs' for k, v in FLOAT_EPOCHS.items())}) and imported as it is "
           "(`model.module`); PTQ calibrates on `quant.calibration_batches` = 8 training batches of 64 (data-free: "
           f"512 inputs synthesized from the BatchNorm statistics, {DATA_FREE_STEPS} Adam steps); QAT fine-tunes "
           f"{QAT_EPOCHS} epochs from the float weights. 4-bit columns: 4-bit weights and 4-bit activations; "
           "`pot`: every weight 0 or ±2^e. All weights on codesign's grid (integer × power-of-two scale), checked "
           "after every PTQ run (`codesign.ptq.grid_check`)."]
    verdicts: list[str] = []
    for model, r in res.items():
        out.append("")
        out.append(f"| {model} (float {_ms(r['float'])}) | " + " | ".join(SCHEMES) + " |")
        out.append("|---" * (len(SCHEMES) + 1) + "|")
        for row in rows:
            out.append(f"| {row} | " + " | ".join(_ms(r[s][row]) for s in SCHEMES) + " |")
        fl = r["float"]
        for s in SCHEMES:
            base = r[s].get(NEAREST, [])
            for row in rows:
                v = r[s][row]
                if row == NEAREST or not v or not base or row == "QAT":
                    continue
                d = 100 * (statistics.mean(v) - statistics.mean(base))
                wins = sum(a > b for a, b in zip(v, base, strict=True))
                ties = sum(a == b for a, b in zip(v, base, strict=True))
                noise = 100 * max(_sd(v), _sd(base))
                if abs(d) <= noise or abs(d) < 1e-9:
                    word = "within spread"
                else:
                    n = wins if d > 0 else len(v) - wins - ties
                    word = f"{'better' if d > 0 else 'worse'} on {n}/{len(v)} seeds"
                verdicts.append(f"{model}, {s}, {row}: {d:+.2f} vs nearest ({word})")
        if fl and r["8-bit fixed"].get(NEAREST):
            gap = 100 * (statistics.mean(fl) - statistics.mean(r["8-bit fixed"][NEAREST]))
            verdicts.append(f"**{model}: 8-bit PTQ (nearest) is {gap:.2f} points below float: "
                            f"{'within' if gap <= 1.0 else 'NOT within'} 1 point.**")
        for s in ("4-bit fixed", "4-bit pot"):
            q = r[s].get("QAT", [])
            ptq = {row: statistics.mean(r[s][row]) for row in rows if row != "QAT" and r[s][row]}
            if q and ptq:
                best = max(ptq, key=ptq.get)
                verdicts.append(f"**{model}, {s}: QAT - best PTQ ({best}) = "
                                f"{100 * (statistics.mean(q) - ptq[best]):+.2f} points; QAT - PTQ nearest = "
                                f"{100 * (statistics.mean(q) - ptq.get(NEAREST, float('nan'))):+.2f}.**")
    out.append("")
    out.append("Verdicts (points, mean difference; \"within spread\": the difference is within the larger of the two "
               "standard deviations):")
    out.append("")
    out += [f"- {v}" for v in verdicts]
    out.append("")
    out.append("Methods: CLE = cross-layer equalization, Nagel et al. 2019 (DFQ), Brevitas "
               "`brevitas.graph.equalize.EqualizeGraph`; bias corr. = empirical bias correction, Nagel et al. 2019, "
               "`codesign.ptq.bias_correct`; GPTQ = Frantar et al. 2022, Brevitas `brevitas.graph.gptq.gptq_mode`; "
               "GPFQ = Lybrand & Saab 2021, Brevitas `brevitas.graph.gpfq.gpfq_mode`; data-free = ZeroQ, Cai et al. "
               "2020, `codesign.ptq.synthesize` (needs BatchNorm: n/a for the MLP); calibration = Brevitas "
               "`brevitas.graph.calibrate.calibration_mode`.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(FLOAT_EPOCHS), choices=list(FLOAT_EPOCHS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--quick", action="store_true", help="digits_mlp and digits_cnn, seed 0 only")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    a = ap.parse_args()
    if a.quick:
        a.models, a.seeds = ["digits_mlp", "digits_cnn"], [0]
    res = run(a.models, a.seeds, a.rows)
    text = render(res, a.seeds, a.rows, "python -m bench.ptq " + " ".join(shlex.quote(x) for x in sys.argv[1:]))
    print("\n" + text)
    if not a.no_doc:
        write_section("ptq", text)


if __name__ == "__main__":
    main()
