"""Train stage: quantization-aware training with Brevitas.

``train_model(cfg, dataset)`` builds the quantized network (:func:`codesign.quant.build_model`), optionally
pre-trains a float twin of the same architecture for ``train.float_epochs`` epochs and starts QAT from
its weights, then trains with Adam/SGD, a cosine (or constant) learning rate and early stopping on
validation accuracy (the best epoch is restored). Everything is seeded by ``cfg.seed``.

Options: ``train.inq`` (incremental network quantization of po2 layers: at each stage the given
cumulative fraction of each po2 layer's weights, largest magnitudes first, is frozen at its po2
value while the rest train in float (``train.epochs`` is split evenly over the stages); the last stage
must be 1.0: every weight is then on the po2 grid and the stage fine-tunes with the straight-through
po2 quantizer) and ``train.kd`` (Hinton
knowledge distillation from a float teacher, optionally with a feature loss on the last hidden layer:
FitNets hint, PKT or correlation congruence, :mod:`codesign.distill`).

``train.accuracy_float`` is the test accuracy of a float model of the same architecture: the float
pre-training when ``float_epochs > 0``, else a float twin trained with the same schedule
(``train.float_source`` says which).

``train/model.pt``: ``{"config", "state_dict", "input_shape", "n_classes", "kind": "quant"}``
(docs/contracts.md); :func:`load_model` rebuilds the model from it. ``train/model_float.pt`` (same format,
``"kind": "float"``) is the float model behind ``accuracy_float``; usable as ``train.kd.teacher``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codesign import distill, quant
from codesign.config import Config, TrainConfig
from codesign.errors import CodesignError, ConfigError, StageInputError
from codesign.run import RunDir, atomic_path, atomic_write_json

if TYPE_CHECKING:
    from codesign.data import Dataset


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        outs.append(model(torch.as_tensor(x[i:i + batch], dtype=torch.float32)).double())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0))


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    return float(np.mean(predict(model, x).argmax(1) == y))


# ---------------------------------------------------------------------------------------------
# INQ
# ---------------------------------------------------------------------------------------------
class _InqState:
    """Per po2 layer: a mask of frozen weights and their frozen values."""

    def __init__(self, model: nn.Module):
        self.layers = {n: m for n, m in model.named_modules()
                       if isinstance(getattr(getattr(m, "weight_quant", None), "tensor_quant", None),
                                     quant.PotTensorQuant)}
        self.masks = {n: torch.zeros_like(m.weight, dtype=torch.bool) for n, m in self.layers.items()}
        self.values = {n: torch.zeros_like(m.weight) for n, m in self.layers.items()}
        self.set_partial(True)

    def set_partial(self, on: bool) -> None:
        for n, m in self.layers.items():
            m.weight_quant.tensor_quant.inq_mask = self.masks[n] if on else None

    def freeze(self, fraction: float) -> None:
        for n, m in self.layers.items():
            w = m.weight.data
            k = int(round(fraction * w.numel()))
            mask = torch.zeros(w.numel(), dtype=torch.bool)
            if k > 0:
                # keep already frozen weights frozen; add the largest remaining magnitudes
                prev = self.masks[n].flatten()
                score = w.abs().flatten().clone()
                score[prev] = float("inf")
                mask[torch.topk(score, k).indices] = True
            mask = mask.view_as(w)
            q, _ = quant.pot_quantize(w, m.weight_quant.tensor_quant.pot_bits)
            w[mask & ~self.masks[n]] = q[mask & ~self.masks[n]]
            self.masks[n].copy_(mask)
            self.values[n].copy_(w)

    @torch.no_grad()
    def restore_frozen(self) -> None:
        for n, m in self.layers.items():
            m.weight.data[self.masks[n]] = self.values[n][self.masks[n]]

    def zero_frozen_grads(self) -> None:
        for n, m in self.layers.items():
            if m.weight.grad is not None:
                m.weight.grad[self.masks[n]] = 0.0


# ---------------------------------------------------------------------------------------------
# training loop
# ---------------------------------------------------------------------------------------------
def _penultimate(feats: dict[str, Any], order: list[str]) -> torch.Tensor | None:
    last_fc = [n for n in order if n.startswith("fc")][-1]
    prev = order[order.index(last_fc) - 1] if order.index(last_fc) > 0 else None
    if prev is None or prev == "inp":
        return None
    f = feats[prev]
    return f.value if hasattr(f, "value") else f


def _feature_adapter(model: nn.Module, teacher: nn.Module, ds) -> nn.Module:
    """Maps the student's penultimate features onto the teacher's (the KD feature hint)."""
    with torch.no_grad():
        x0 = torch.as_tensor(ds.x_train[:2], dtype=torch.float32)
        _, fs = model(x0, return_features=True)
        _, ft = teacher(x0, return_features=True)
        s_dim = _penultimate(fs, model.order).shape[1]
        t_dim = _penultimate(ft, teacher.order).shape[1]
    return nn.Linear(s_dim, t_dim, bias=False) if s_dim != t_dim else nn.Identity()


def _optimizer(params: list, tc: TrainConfig, lr: float, total: int):
    """(optimizer, learning-rate schedule over ``total`` steps) per ``train.optimizer`` / ``train.schedule``."""
    if tc.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=tc.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=tc.weight_decay, nesterov=True)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total) if tc.schedule == "cosine"
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    return opt, sched


def _kd_loss(model: nn.Module, teachers: list[nn.Module], xb: torch.Tensor, yb: torch.Tensor, tc: TrainConfig,
             adapter: nn.Module | None) -> torch.Tensor:
    """Hinton knowledge-distillation loss, plus ``train.kd.feature_loss`` on the penultimate features when
    ``train.kd.feature`` (the FitNets hint maps the student's features through ``adapter``)."""
    out, fs = model(xb, return_features=True)
    with torch.no_grad():
        touts, fts = zip(*(t(xb, return_features=True) for t in teachers), strict=True)
    loss = distill.hinton(out, touts, yb, tc.kd.temperature, tc.kd.alpha)
    if tc.kd.feature:  # the feature loss follows the first teacher
        sf, tf_ = _penultimate(fs, model.order), _penultimate(fts[0], teachers[0].order)
        loss = loss + tc.kd.feature_weight * distill.feature_loss(tc.kd.feature_loss, sf, tf_, adapter)
    return loss


def _fit(model: nn.Module, ds, cfg: Config, epochs: int, seed: int, label: str, progress: bool,
         teacher: list[nn.Module] | None = None, inq: _InqState | None = None, lr: float | None = None
         ) -> list[dict[str, float]]:
    tc = cfg.train
    lr = lr or tc.lr
    rng = np.random.default_rng(seed)
    adapter = None
    params = list(model.parameters())
    if teacher is not None and tc.kd.enabled and tc.kd.feature and tc.kd.feature_loss == "hint":
        adapter = _feature_adapter(model, teacher[0], ds)
        params += list(adapter.parameters())
    n = len(ds.x_train)
    steps_per_epoch = max(1, math.ceil(n / tc.batch_size))
    opt, sched = _optimizer(params, tc, lr, max(1, epochs * steps_per_epoch))
    xt = torch.as_tensor(ds.x_train, dtype=torch.float32)
    yt = torch.as_tensor(ds.y_train, dtype=torch.long)
    hist: list[dict[str, float]] = []
    best_acc, best_state, best_epoch, bad = -1.0, None, -1, 0
    has_val = len(ds.y_val) > 0
    bar = _Bar(progress, f"{label}", epochs)
    try:
        for ep in range(epochs):
            model.train()
            perm = torch.as_tensor(rng.permutation(n))
            tot_loss, seen = 0.0, 0
            for i in range(0, n, tc.batch_size):
                idx = perm[i:i + tc.batch_size]
                xb, yb = xt[idx], yt[idx]
                if teacher is not None and tc.kd.enabled:
                    loss = _kd_loss(model, teacher, xb, yb, tc, adapter)
                else:
                    loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if inq is not None:
                    inq.zero_frozen_grads()
                opt.step()
                sched.step()
                if inq is not None:
                    inq.restore_frozen()
                tot_loss += loss.item() * len(idx)
                seen += len(idx)
            val_acc = accuracy(model, ds.x_val, ds.y_val) if has_val else accuracy(model, ds.x_train, ds.y_train)
            hist.append({"epoch": ep + 1, "loss": tot_loss / max(1, seen), "val_acc": val_acc,
                         "lr": opt.param_groups[0]["lr"]})
            bar.update(ep + 1, f"loss {tot_loss / max(1, seen):.3f} val {val_acc:.3f}")
            if val_acc > best_acc:
                best_acc, best_epoch, bad = val_acc, ep, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if tc.patience and bad >= tc.patience:
                    break
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    for h in hist:
        h["best"] = h["epoch"] == best_epoch + 1
    return hist


class _Bar:
    def __init__(self, on: bool, label: str, total: int):
        self.p = None
        if on and total > 0:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(),
                              TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                              TimeElapsedColumn(), transient=True)
            self.p.start()
            self.t = self.p.add_task(label, total=total, info="")

    def update(self, done: int, info: str) -> None:
        if self.p:
            self.p.update(self.t, completed=done, info=info)

    def close(self) -> None:
        if self.p:
            self.p.stop()


def _check_train_config(cfg: Config) -> None:
    inq = cfg.train.inq
    if inq is not None:
        if not inq or any(not (0 < f <= 1) for f in inq) or any(b < a for a, b in zip(inq, inq[1:], strict=False)):
            raise ConfigError(f"train.inq: must be non-decreasing fractions in (0, 1] (got {inq})")
        if inq[-1] != 1.0:
            raise ConfigError(f"train.inq: the last fraction must be 1.0 (got {inq[-1]})")


def _teachers(cfg: Config, ds, float_model: nn.Module | None, progress: bool) -> list[nn.Module]:
    """The KD teachers: loaded (``train.kd.teacher``: one path or several), trained in the run
    (``train.kd.teacher_hidden``: one list of widths or several), or the float twin."""
    kd = cfg.train.kd
    if kd.teacher:
        out = []
        for path in [kd.teacher] if isinstance(kd.teacher, str) else kd.teacher:
            t = load_model(path, float_ok=True)
            if tuple(t.input_shape) != tuple(ds.input_shape):
                raise ConfigError(f"train.kd.teacher: {path} takes inputs {t.input_shape}, data has {ds.input_shape}")
            out.append(t)
        return out
    if float_model is not None and kd.teacher_hidden is None:
        return [float_model]
    hidden = kd.teacher_hidden
    widths = [hidden] if hidden and isinstance(hidden[0], int) else hidden
    out = []
    for i, w in enumerate(widths):
        tcfg = cfg.model_copy(deep=True)
        tcfg.model.hidden = list(w)
        seed = cfg.seed + 7 + 100 * i
        torch.manual_seed(seed)
        t = quant.build_float_model(tcfg, ds.input_shape, ds.n_classes)
        _fit(t, ds, cfg, max(cfg.train.epochs, cfg.train.float_epochs), seed,
             "teacher" if len(widths) == 1 else f"teacher {i + 1}/{len(widths)}", progress)
        out.append(t)
    return out


def train_model(cfg: Config, dataset, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Train the quantized model of ``cfg`` on ``dataset``. Returns ``(model, history)``;
    ``history`` has ``float`` / ``qat`` epoch lists and the test accuracies."""
    if cfg.model.module is not None:  # an imported float model: qat from its weights, or ptq
        from codesign.importer import train_imported

        return train_imported(cfg, dataset, progress)
    _check_train_config(cfg)
    ds = dataset
    tc = cfg.train
    seed_everything(cfg.seed)
    model = quant.build_model(cfg, ds.input_shape, ds.n_classes)  # validates before training
    history: dict[str, Any] = {"float": [], "qat": []}
    float_model = None
    if True:  # the float model is always trained: it gives train.accuracy_float
        torch.manual_seed(cfg.seed)
        float_model = quant.build_float_model(cfg, ds.input_shape, ds.n_classes)
        f_epochs = tc.float_epochs if tc.float_epochs > 0 else tc.epochs
        history["float"] = _fit(float_model, ds, cfg, f_epochs, cfg.seed, "float", progress)
        history["float_source"] = "pretrain" if tc.float_epochs > 0 else "twin"
        history["accuracy_float"] = accuracy(float_model, ds.x_test, ds.y_test)
        if tc.float_epochs > 0:
            missing, _ = model.load_state_dict(float_model.state_dict(), strict=False)
            assert not any(k.endswith(("weight", "bias")) and "quant" not in k for k in missing), missing
    teacher = _teachers(cfg, ds, float_model, progress) if tc.kd.enabled else None
    seed_everything(cfg.seed + 1)
    if tc.inq:
        inq = _InqState(model)
        if not inq.layers:
            raise ConfigError("train.inq: needs power-of-two layers (quant.weight.scheme: pot)")
        per_stage = max(1, tc.epochs // len(tc.inq))
        for k, frac in enumerate(tc.inq):
            inq.freeze(frac)
            if frac >= 1.0:
                inq.set_partial(False)
            h = _fit(model, ds, cfg, per_stage, cfg.seed + 1 + k, f"INQ {frac:.3g}", progress,
                     teacher=teacher, inq=inq if frac < 1.0 else None)
            for e in h:
                e["inq"] = frac
            history["qat"] += h
        inq.set_partial(False)
    else:
        history["qat"] = _fit(model, ds, cfg, tc.epochs, cfg.seed + 1, "QAT", progress, teacher=teacher)
    history["accuracy_quantized"] = accuracy(model, ds.x_test, ds.y_test)
    object.__setattr__(model, "float_model", float_model)
    return model, history


def fine_tune(model: nn.Module, dataset: Dataset, cfg: Config, *, epochs: int, lr: float | None = None, seed: int = 0,
              label: str = "fine-tune", progress: bool = False) -> list[dict[str, float]]:
    """Continue training ``model`` in place with the training loop of :func:`train_model`.

    The loop is ``cfg.train``'s: its optimizer (Adam or SGD, ``train.weight_decay``), its schedule over
    ``epochs`` (cosine or constant), early stopping after ``train.patience`` epochs without progress, and
    the weights of the best validation epoch restored at the end. ``lr`` overrides ``train.lr``; ``seed``
    seeds the batch order (callers pass e.g. ``cfg.seed + step`` for one fine-tuning per pruning step).
    No distillation and no INQ freezing: those belong to :func:`train_model`. Quantized models fine-tune
    with QAT; weight masks, if any, are the caller's (e.g. ``codesign.prune.WeightMaskGuard``).

    ``epochs <= 0`` leaves the weights unchanged. The model is returned in eval mode. Returns the epoch
    history (``epoch``, ``loss``, ``val_acc``, ``lr``, ``best``), empty without epochs.
    """
    hist = _fit(model, dataset, cfg, epochs, seed, label, progress, lr=lr) if epochs > 0 else []
    model.eval()
    return hist


# ---------------------------------------------------------------------------------------------
# model.pt
# ---------------------------------------------------------------------------------------------
def save_model(path: str | Path, model: nn.Module, cfg: Config, input_shape, n_classes: int,
               kind: str = "quant") -> Path:
    blob = {"config": cfg.model_dump(mode="json"), "state_dict": model.state_dict(),
            "input_shape": list(input_shape), "n_classes": int(n_classes), "kind": kind}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def load_model(path: str | Path, float_ok: bool = False) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (``train/model.pt``, ``prune/model.pt``)."""
    from codesign.config import from_dict

    path = Path(path)
    if not path.exists():
        raise StageInputError(f"{path} not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CodesignError(f"{path}: not a codesign model file ({e})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
        raise CodesignError(f"{path}: not a codesign model file (needs config, state_dict, input_shape, n_classes)")
    cfg = from_dict(blob["config"], str(path))
    kind = blob.get("kind", "quant")
    if kind == "float":
        if not float_ok:
            raise CodesignError(f"{path}: is a float model; a quantized model is needed here")
        m = quant.build_float_model(cfg, blob["input_shape"], blob["n_classes"])
    else:
        m = quant.build_model(cfg, blob["input_shape"], blob["n_classes"])
    m.load_state_dict(blob["state_dict"])
    m.eval()
    return m


def plot_history(history: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    off = 0
    for phase in ("float", "qat"):
        h = history.get(phase) or []
        if not h:
            continue
        ep = list(range(off + 1, off + len(h) + 1))
        a1.plot(ep, [e["loss"] for e in h], label=phase)
        a2.plot(ep, [e["val_acc"] for e in h], label=phase)
        if phase == "float" and history.get("float_source") == "pretrain":
            off += len(h)
    a1.set_xlabel("epoch"), a1.set_ylabel("train loss"), a1.legend()
    a2.set_xlabel("epoch"), a2.set_ylabel("validation accuracy"), a2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def run_stage(rd: RunDir, cfg: Config) -> dict:
    from codesign import data as data_mod

    torch.set_num_threads(1)
    t0 = time.time()
    ds = data_mod.load(cfg.data, cfg.seed)
    model, hist = train_model(cfg, ds, progress=True)
    seconds = time.time() - t0
    d = rd.stage_dir("train")
    save_model(d / "model.pt", model, cfg, ds.input_shape, ds.n_classes)
    files = ["model.pt", "history.json", "history.png"]
    if getattr(model, "float_model", None) is not None:
        save_model(d / "model_float.pt", model.float_model, cfg, ds.input_shape, ds.n_classes, kind="float")
        files.append("model_float.pt")
    atomic_write_json(d / "history.json", hist)
    plot_history(hist, d / "history.png")
    for p in files:
        rd.add(d / p, "train")
    figures = {
        "accuracy_float": round(hist["accuracy_float"], 5),
        "float_source": hist.get("float_source"),
        "accuracy_quantized": round(hist["accuracy_quantized"], 5),
        "seconds": round(seconds, 2),
        "epochs_run": len(hist["qat"]),
        "pot_layers": model.pot_layers(),
        "method": hist.get("method", "qat"),
        "parameters": int(sum(p.numel() for n, p in model.named_parameters()
                              if n.endswith(("weight", "bias")) and "quant" not in n)),
    }
    for k in ("imported_layers", "float_twin_max_abs_diff", "calibration_samples", "ptq"):  # model.module only
        if k in hist:
            figures[k] = hist[k]
    rd.record("model", cfg.name)
    rd.record("train", figures)
    return figures
