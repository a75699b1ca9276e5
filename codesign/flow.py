"""The flow: an explicit list of steps, each with a check after it (FINN-style).

Each step is a stage module with ``run_stage(rd, cfg) -> dict``. After a step runs, its check reads the
figures it returned and stops the flow with a clear error if a hard guarantee failed (for example any
mismatch between the exported graph and PyTorch, or between the RTL and the golden model).

Resume: a step that passed its check is recorded in the run's manifest with a key (a hash of the config
sections it and the steps before it read, and the codesign version). ``run_flow`` re-run on the same run
directory reuses each leading step whose record is there, whose key is unchanged and whose files still
have the sizes and SHA-256 the manifest lists; from the first step that fails any of that, every step
runs again. A step that starts forgets its own record and those of all later steps, so a run killed
inside a step (SIGKILL included) resumes from the last step that finished.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from codesign import config as config_mod
from codesign.config import Config
from codesign.errors import CodesignError, VerificationError
from codesign.run import RunDir, atomic_write_text

console = Console(stderr=True)


def _zero(key: str, what: str) -> Callable[[dict[str, Any]], str | None]:
    def check(fig: dict[str, Any]) -> str | None:
        v = fig.get(key)
        if v is None:
            return f"{what}: the stage did not report {key}"
        return None if v == 0 else f"{what}: {v} mismatches (must be 0)"

    return check


def _no_check(fig: dict[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    help: str
    check: Callable[[dict[str, Any]], str | None] = _no_check
    enabled: Callable[[Config], bool] = field(default=lambda cfg: True)


STEPS: list[Step] = [
    Step("train", "codesign.train", "quantization-aware training (Brevitas)"),
    Step("prune", "codesign.prune", "structured pruning + fine-tuning", enabled=lambda c: c.prune.enabled),
    Step("export", "codesign.export", "QONNX export + cleanup, checked against PyTorch",
         _zero("torch_vs_qonnx_mismatches", "PyTorch vs QONNX")),
    Step("golden", "codesign.golden", "numpy integer golden model, checked against qonnx execute_onnx",
         _zero("qonnx_mismatches", "golden vs execute_onnx")),
    Step("rtl", "codesign.rtl", "Verilog generation"),
    Step("verify", "codesign.verify", "cocotb simulation, bit-exact against the golden model",
         _zero("mismatches", "RTL vs golden")),
    Step("fpga", "codesign.fpga", "yosys + nextpnr bitstream and reports"),
    Step("energy", "codesign.energy", "energy estimate per layer and per inference"),
]
STEP_NAMES = [s.name for s in STEPS]


def get_step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise CodesignError(f"unknown stage {name!r}; stages: {', '.join(STEP_NAMES)}")


def load_stage(step: Step) -> Callable[[RunDir, Config], dict[str, Any]]:
    try:
        mod = importlib.import_module(step.module)
    except ModuleNotFoundError as e:
        if e.name == step.module:
            raise CodesignError(f"stage '{step.name}' is not available in this version") from None
        raise
    return mod.run_stage


def run_config(rd: RunDir) -> Config:
    """The resolved config saved in a run directory."""
    p = rd.require("config.yaml", "train")
    return config_mod.load(p)


def save_config(rd: RunDir, cfg: Config) -> None:
    atomic_write_text(rd.path("config.yaml"), cfg.to_yaml())
    rd.add("config.yaml", "flow")


# config sections read first by a later step (a change there re-runs that step and the ones after it)
SECTION_STEP = {"prune": "prune", "rtl": "rtl", "verify": "verify", "fpga": "fpga", "energy": "energy"}


def step_key(cfg: Config, step: Step) -> str:
    """Hash of what ``step`` and the steps before it read from the config, and of the codesign version."""
    from codesign import __version__

    later = set(STEP_NAMES[STEP_NAMES.index(step.name) + 1:])
    d = {k: v for k, v in cfg.model_dump(mode="json").items()
         if k != "description" and SECTION_STEP.get(k) not in later}
    key: dict[str, Any] = {"config": d, "version": __version__}
    if cfg.model.module is not None or cfg.data.dataset == "npz":  # the user's files are inputs too
        from codesign.importer import user_file_hashes

        key["user_files"] = user_file_hashes(cfg)
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_step(rd: RunDir, cfg: Config, step: Step) -> dict[str, Any]:
    fn = load_stage(step)
    t0 = time.time()
    console.rule(f"[bold]{step.name}[/]: {step.help}")
    rd.start_stage(step.name, STEP_NAMES[STEP_NAMES.index(step.name) + 1:])
    figures = fn(rd, cfg) or {}
    seconds = time.time() - t0
    problem = step.check(figures)
    timings = rd.report().get("flow", {}).get("seconds", {})
    timings[step.name] = round(seconds, 2)
    rd.record("flow", {"seconds": timings})
    if problem:
        raise VerificationError(f"step {step.name} failed its check: {problem}")
    rd.finish_stage(step.name, step_key(cfg, step))
    console.print(f"[green]✓[/] {step.name} ({seconds:.1f} s)")
    return figures


def reusable(rd: RunDir, cfg: Config, step: Step) -> bool:
    """Whether ``step`` finished in ``rd`` with this config, its files intact and its check still passing."""
    if rd.stage_intact(step.name, step_key(cfg, step)) is not None:
        return False
    return step.check(rd.report().get(step.name, {})) is None


def run_flow(cfg: Config, out: Path | None = None, until: str | None = None, skip: tuple[str, ...] = (),
             start: str | None = None, resume: bool = True) -> RunDir:
    """Run the steps in order (from ``start``, up to and including ``until``) into ``out``.

    ``resume``: reuse the leading steps that already finished in ``out`` (see the module docstring);
    ``False`` runs every step again."""
    if until is not None:
        get_step(until)
    rd = RunDir(out or Path("runs") / cfg.name)
    save_config(rd, cfg)
    rd.record("model", cfg.name)
    started = start is None
    for step in STEPS:
        started = started or step.name == start
        if not started or step.name in skip or not step.enabled(cfg):
            continue
        if step.name == "energy" and importlib.util.find_spec(step.module) is None:
            console.print("[yellow]energy stage not available yet; skipped[/]")
            continue
        if resume and reusable(rd, cfg, step):
            console.print(f"[green]✓[/] {step.name} (reused: finished before with this config, files intact)")
        else:
            resume = False  # everything after a step that runs runs too
            run_step(rd, cfg, step)
        if step.name == until:
            break
    return rd
