"""What a user brings to codesign, made here from scikit-learn digits (offline): ``digits.npz`` (flat 64-vectors)
and ``digits_img.npz`` (1x8x8), each with x_train, y_train, x_test, y_test (inputs ``pixel / 8 - 1`` in [-1, 1],
the input quantizer's range), and the float models of ``net.py`` trained in plain PyTorch: ``mlp.pt``,
``cnn.pt``, ``resnet.pt`` (state_dicts).

    python examples/byom/prepare.py            # writes next to this file; --out DIR elsewhere
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _net_module():
    spec = importlib.util.spec_from_file_location("byom_example_net", HERE / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train_float(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> None:
    """Plain PyTorch training (Adam 3e-3, batch 64), as a user would do it; leaves the model in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def prepare(out: Path, models: tuple[str, ...] = ("mlp", "cnn", "resnet"), epochs: int = 20) -> dict[str, float]:
    """Write the .npz files and the trained weights of ``models`` into ``out``; return their float test accuracies."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    x, y = (d.data / 8.0 - 1.0).astype(np.float32), d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0)
    np.savez(out / "digits.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    img = (-1, 1, 8, 8)
    np.savez(out / "digits_img.npz", x_train=xtr.reshape(img), y_train=ytr, x_test=xte.reshape(img), y_test=yte)
    net = _net_module()
    seed_of = {"mlp": 0, "cnn": 1, "resnet": 2}
    acc = {}
    for name in models:
        torch.manual_seed(seed_of[name])
        model, shape = (net.MLP(), (-1, 64)) if name == "mlp" else (net.CNN(), img) if name == "cnn" \
            else (net.ResNet(), img)
        train_float(model, xtr.reshape(shape), ytr, epochs)
        torch.save(model.state_dict(), out / f"{name}.pt")
        with torch.no_grad():
            acc[name] = float((model(torch.as_tensor(xte.reshape(shape))).argmax(1).numpy() == yte).mean())
    return acc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn", "resnet"], choices=["mlp", "cnn", "resnet"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name, a in prepare(args.out, models=tuple(args.models), epochs=args.epochs).items():
        print(f"{name}: float test accuracy {a:.4f} -> {args.out / (name + '.pt')}")


if __name__ == "__main__":
    main(sys.argv[1:])
