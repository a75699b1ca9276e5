"""The model zoo: ``models/*.yaml``, one config per model, built by ``codesign.quant.build_model``."""

from __future__ import annotations

from codesign import config as config_mod
from codesign import data
from codesign.config import Config


def param_count(cfg: Config) -> int:
    """Trainable parameters (weights + biases) of the model a config builds."""
    from codesign.quant import build_model

    n_classes = data.DATASET_INFO[cfg.data.dataset][1]
    model = build_model(cfg, data.input_shape(cfg.data), n_classes)
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith(("weight", "bias"))
               and "quant" not in n)


def names() -> list[str]:
    return config_mod.zoo_names()
