"""Studies: sweep or search over quantization, sparsity, pruning criterion and architecture options
with Optuna, for accuracy vs energy (vs LUTs) trade-offs.

A study YAML::

    name: digits_energy            # study folder: studies/<name> unless --out
    base: digits_mlp               # zoo name or config path, the starting config
    trials: 20
    storage: null                  # default sqlite:///<study dir>/study.db; any SQLAlchemy URL
                                   # (postgresql://...) shares one study between many machines
    sampler: nsga2                 # nsga2 | tpe | random | grid
    objectives: [accuracy, energy_pj]   # accuracy (max), energy_pj, luts, params, adder_bits (min)
    set: {train.epochs: 20}        # fixed overrides for every trial
    space:                         # dotted config keys
      quant.weight.scheme: [fixed, pot]          # a list: categorical
      quant.weight.bits: [3, 4, 6, 8]
      prune.sparsity: {low: 0.0, high: 0.8, step: 0.1}   # a range: float (or int with ints)
      prune.criterion: [l1, energy]
    budget: {energy_pj: 300}       # optional: a hardware budget (energy_pj, params, adder_bits, luts): an
                                   # Optuna constraint (Trial.set_constraint; NSGA-II and TPE sample towards
                                   # feasible points) and report.html / pareto.csv keep only trials within it
    width_search: {finetune_epochs: 2}   # optional: weight sharing (codesign.width): the space holds only width
                                   # keys (model.hidden.<i>, model.channels.<i>); a supernet (the base config) is
                                   # trained once and each trial slices its top-L1 units and fine-tunes
    heartbeat_s: 15                # a running trial's heartbeat period
    grace_s: 45                    # no heartbeat for this long: the trial's worker is dead

Space keys may index list-valued config keys: ``model.hidden.0`` is the first hidden layer's width,
``model.channels.1`` the second conv layer's (a bad index is a ConfigError naming the key).

Each trial runs train -> (prune) -> export (with its 0-mismatch check) in its own run folder
``<study>/trials/<number>/`` and costs the design with the analytic energy model on the RTL IR
(fast path); ``luts`` adds a yosys synthesis estimate (slower). Trials are stored as they finish: a
study killed mid-way and started again completes only the missing trials, and several workers
(``--workers N`` here, or the same command on other machines with a shared ``storage``) share one
study without running a trial twice.

A worker can die at any point (SIGKILL, power loss) without blocking the study: each trial is created
in one transaction together with its worker's host, pid and process start time, and a heartbeat runs
while it is evaluated. A RUNNING trial is failed (and its point re-run) as soon as its worker is known
to be gone: a dead pid on this host at once, elsewhere ``grace_s`` after its last heartbeat, or after
its start when it never sent one.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codesign import config as config_mod
from codesign.errors import CodesignError, ConfigError

OBJECTIVES = {"accuracy": "maximize", "energy_pj": "minimize", "luts": "minimize", "params": "minimize",
              "adder_bits": "minimize"}


class WidthSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    finetune_epochs: int = Field(2, ge=0)  # QAT epochs on each sliced candidate


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    base: str = config_mod.DEFAULT_MODEL
    trials: int = Field(20, ge=1)
    storage: str | None = None
    sampler: str = Field("nsga2", pattern="^(nsga2|tpe|random|grid)$")
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "energy_pj"])
    set: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    heartbeat_s: int = Field(15, ge=1)  # a running trial's worker writes a heartbeat this often
    grace_s: int = Field(45, ge=2)  # a trial without a heartbeat for this long is failed and replaced
    budget: dict[str, float] = Field(default_factory=dict)
    width_search: WidthSearch | None = None



def load_study_config(path: str | Path) -> StudyConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"study file {p} not found")
    data = yaml.safe_load(p.read_text()) or {}
    data.setdefault("name", p.stem)
    try:
        sc = StudyConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(config_mod._format_error(e, str(p))) from None
    bad = [o for o in sc.objectives if o not in OBJECTIVES]
    if bad:
        raise ConfigError(f"invalid study {p}: objectives: unknown {bad} (choose from {', '.join(OBJECTIVES)})")
    bad = [k for k in sc.budget if k not in OBJECTIVES or k == "accuracy"]
    if bad:
        raise ConfigError(f"invalid study {p}: budget: unknown cost {bad} "
                          "(choose from energy_pj, params, adder_bits, luts)")
    if "luts" in sc.budget and "luts" not in sc.objectives:
        raise ConfigError(f"invalid study {p}: budget.luts needs luts among the objectives (it is not measured else)")
    base = config_mod.load(sc.base, sc.set)  # validates base + fixed overrides early
    if sc.width_search is not None:
        from codesign import width

        if "luts" in sc.objectives:
            raise ConfigError(f"invalid study {p}: width_search costs the sliced model analytically; "
                              "objectives: accuracy, energy_pj, params, adder_bits (not luts)")
        full = width.full_widths(base)
        for key, spec in sc.space.items():
            try:
                layer = width.layer_of(base, key)
            except ConfigError as e:
                raise ConfigError(f"invalid study {p}: space.{key}: {e}") from None
            hi = max(spec) if isinstance(spec, list) else spec.get("high") if isinstance(spec, dict) else None
            if not isinstance(hi, int) or hi > full[layer]:
                raise ConfigError(f"invalid study {p}: space.{key}: widths must be integers <= {full[layer]}, "
                                  f"the supernet's (base config's) width")
    for key, spec in sc.space.items():
        probe = spec[0] if isinstance(spec, list) else spec.get("low") if isinstance(spec, dict) else None
        if probe is None:
            raise ConfigError(f"invalid study {p}: space.{key}: give a list of choices or {{low, high}}")
        config_mod.from_dict(_apply(base.model_dump(mode="json"), {key: probe}), f"{p} space.{key}")
    return sc


def _apply(d: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    for k, v in overrides.items():
        config_mod._set_dotted(d, k, v)
    return d


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            params[key] = trial.suggest_categorical(key, spec)
        elif all(isinstance(spec.get(k), int) for k in ("low", "high")) and not isinstance(spec.get("step"), float):
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=spec.get("step"))
            if spec.get("step"):
                params[key] = round(params[key], 10)  # 0.7000000000000001 -> 0.7
    return params


def trial_config(sc: StudyConfig, params: dict[str, Any], number: int) -> config_mod.Config:
    base = config_mod.load(sc.base, sc.set)
    over = dict(params)
    if float(params.get("prune.sparsity", 0) or 0) > 0:
        over.setdefault("prune.enabled", True)
    d = _apply(base.model_dump(mode="json"), over)
    d["name"] = f"{sc.name}-{number:04d}"
    return config_mod.from_dict(d, f"trial {number}")


def evaluate(cfg: config_mod.Config, run_dir: Path, objectives: list[str]) -> dict[str, float]:
    """Train -> (prune) -> export -> energy (and LUTs) for one design point."""
    import torch

    from codesign import energy, flow
    from codesign.rtl import lower
    from codesign.run import atomic_write_json
    from codesign.width import adder_bits

    torch.set_num_threads(1)
    rd = flow.run_flow(cfg, run_dir, until="export")
    rep = rd.report()
    acc = rep.get("prune", {}).get("accuracy_after", rep["train"]["accuracy_quantized"])
    ir = lower(rd.path("export", "model.onnx"))
    ops, io_bits = energy.from_ir(ir)
    e = energy.estimate(ops, strategy=cfg.rtl.strategy, io_bits=io_bits)
    atomic_write_json(rd.path("energy", "energy.json"), e)
    out = {"accuracy": float(acc), "energy_pj": float(e["pj_per_inference"]),
           "params": float(sum(int((op.weights != 0).sum()) for op in ops if op.weights is not None)),
           "adder_bits": float(adder_bits(ops))}
    if "luts" in objectives:
        out["luts"] = float(_luts(rd, cfg))
    return out


def supernet(sc: StudyConfig, study_dir: Path):
    """The width search's shared weights: the base config trained once, kept in ``<study>/supernet/model.pt``
    (the first worker trains it under a file lock; the others load it)."""
    import fcntl

    from codesign import data
    from codesign.train import load_model, save_model, train_model

    cfg = config_mod.load(sc.base, sc.set)
    d = study_dir / "supernet"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "model.pt"
    ds = data.load(cfg.data, cfg.seed)
    with open(d / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            model, _ = train_model(cfg, ds, progress=False)
            save_model(path, model, cfg, ds.input_shape, ds.n_classes)
    return load_model(path), cfg, ds


def evaluate_width(sc: StudyConfig, study_dir: Path, params: dict[str, Any], number: int) -> dict[str, float]:
    """A width-search trial (``width_search``): slice the trial's widths (top-L1 units) from the supernet,
    fine-tune ``finetune_epochs``, cost it analytically (:func:`codesign.width.evaluate`). ``accuracy`` is the
    validation accuracy (the search chooses on it, not on the test split); ``test_accuracy`` is recorded."""
    import torch

    from codesign import width

    torch.set_num_threads(1)
    net, cfg, ds = supernet(sc, study_dir)
    widths = {width.layer_of(cfg, k): int(v) for k, v in params.items()}
    r = width.evaluate(net, cfg, ds, widths, epochs=sc.width_search.finetune_epochs, seed=cfg.seed + number,
                       budget=sc.budget or None)
    return {"accuracy": r["val_acc"], "test_accuracy": r["test_acc"], "energy_pj": r["energy_pj"],
            "params": r["params"], "adder_bits": r["adder_bits"], "widths": width.widths_str(r["widths"])}


def _luts(rd, cfg: config_mod.Config) -> int:
    """LUT estimate: generate the RTL and synthesize it with yosys ``synth_ecp5`` (LUT4 + 2 per CCU2)."""
    from codesign.rtl import generate
    from codesign.rtl.synth import cell_counts

    out = rd.stage_dir("rtl")
    generate(rd.path("export", "model.onnx"), out, cfg.rtl)
    cells = cell_counts(out, "ecp5")
    return int(cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0))


def _storage_url(sc: StudyConfig, study_dir: Path) -> str:
    return sc.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"


def open_study(sc: StudyConfig, study_dir: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(10):  # workers starting together race to create the schema / the study
        try:
            storage = optuna.storages.RDBStorage(
                _storage_url(sc, study_dir), heartbeat_interval=sc.heartbeat_s, grace_period=sc.grace_s,
                engine_kwargs={"connect_args": {"timeout": 60}} if sc.storage is None else {})
            return _create(sc, storage)
        except Exception as e:  # sqlalchemy IntegrityError / OperationalError
            if attempt == 9 or type(e).__name__ not in ("IntegrityError", "OperationalError", "DuplicatedStudyError"):
                raise
            time.sleep(0.5 + 0.5 * attempt)
    raise AssertionError("unreachable")


def _create(sc: StudyConfig, storage):
    import optuna

    # each worker process seeds its sampler with (seed, pid): workers sharing a study must not draw
    # the same points; a study is therefore reproducible in its configuration, not trial by trial
    seed = (sc.seed * 1_000_003 + os.getpid()) % 2**31
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(8, sc.trials))),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler({k: v for k, v in sc.space.items() if isinstance(v, list)},
                                                    seed=seed),
    }
    return optuna.create_study(study_name=sc.name, storage=storage, load_if_exists=True,
                               directions=[OBJECTIVES[o] for o in sc.objectives], sampler=samplers[sc.sampler]())


def _count(study, *states) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _n_complete(study) -> int:
    import optuna

    return _count(study, optuna.trial.TrialState.COMPLETE)


def _host() -> str:
    import socket

    return socket.gethostname()


def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), None where unknown: with the pid
    it names one process, so a pid reused by a later process does not keep a dead worker's trial alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_alive(pid: int, start: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or _proc_start(pid) in (None, start)


def _identity() -> dict[str, Any]:
    return {"codesign:host": _host(), "codesign:pid": os.getpid(), "codesign:pid_start": _proc_start(os.getpid())}


def _new_trial(study):
    """A RUNNING trial created in one transaction together with its worker's identity (host, pid,
    process start time), so a worker killed at any point leaves either no trial or one that
    :func:`fail_dead_trials` can fail. (``Study.ask`` then ``set_trial_system_attr`` left a window in
    which a killed worker's trial had neither a pid nor a heartbeat and blocked the study forever.)"""
    import datetime

    import optuna
    from optuna.trial import FrozenTrial, TrialState

    tmpl = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None,
                       datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
                       distributions={}, user_attrs={}, system_attrs=_identity(), intermediate_values={},
                       trial_id=-1)
    return optuna.Trial(study, study._storage.create_new_trial(study._study_id, template_trial=tmpl))


def _heartbeat_ids(storage) -> set[int]:
    """Trials that have recorded at least one heartbeat (Optuna's heartbeat table)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    rdb = getattr(storage, "_backend", storage)  # Optuna wraps the RDBStorage in a cache
    with _create_scoped_session(rdb.scoped_session) as session:
        return {tid for (tid,) in session.query(models.TrialHeartbeatModel.trial_id).all()}


def _why_dead(t, beating: set[int], grace_s: float) -> str | None:
    """Why RUNNING trial ``t``'s worker is known to be gone, or None while it may be alive."""
    import datetime

    host, pid = t.system_attrs.get("codesign:host"), t.system_attrs.get("codesign:pid")
    if host == _host() and isinstance(pid, int) and pid != os.getpid() and \
            not _pid_alive(pid, t.system_attrs.get("codesign:pid_start")):
        return f"worker pid {pid} is gone"
    start = t.datetime_start  # aware (UTC) from the database, naive (local time) from Optuna's cache
    age = (datetime.datetime.now().astimezone() - start.astimezone()).total_seconds() if start else 0.0
    if t._trial_id not in beating and age > grace_s:
        # a worker on another host killed before its first heartbeat (or an old trial without identity)
        return f"no heartbeat {age:.0f} s after its start"
    return None


def fail_dead_trials(study, grace_s: float) -> list[int]:
    """Mark RUNNING trials as FAIL when their worker is gone: at once for a dead process on this host
    (pid and process start time are stored with the trial), by Optuna's heartbeat (``grace_period``
    without one) elsewhere, and a trial that never sent a heartbeat once it is older than the grace
    period. Returns the numbers of the trials failed here."""
    import warnings

    import optuna
    from optuna.storages import fail_stale_trials

    storage = study._storage
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental feature"
        fail_stale_trials(study)
    failed = []
    beating = _heartbeat_ids(storage) if running else set()
    for t in running:
        why = _why_dead(t, beating, grace_s)
        if why is None:
            continue
        try:
            storage.set_trial_system_attr(t._trial_id, "codesign:failed_reason", why)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(t.number)
        except Exception:  # another worker (or the heartbeat check above) got there first
            pass
    return failed


def _run_trial(study, sc: StudyConfig, study_dir: Path) -> str:
    """Create, evaluate and finish one trial (with a heartbeat while it runs); returns its final state
    name. A trial beyond the requested count (others are complete or running) is PRUNED unevaluated."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread

    TS = optuna.trial.TrialState
    trial = _new_trial(study)
    state, values = TS.COMPLETE, None
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            values = _objective(study, sc, study_dir, trial)
        except optuna.TrialPruned:
            state = TS.PRUNED
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            state = TS.FAIL
    study.tell(trial, values if state == TS.COMPLETE else None, state=state)
    return state.name


def _objective(study, sc: StudyConfig, study_dir: Path, trial) -> tuple[float, ...]:
    import optuna

    TS = optuna.trial.TrialState
    ahead = [t for t in study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.RUNNING)) if t.number < trial.number]
    if len(ahead) >= sc.trials:
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned("enough trials complete or running")
    params = suggest(trial, sc.space)
    for t in study.get_trials(deepcopy=False, states=(TS.COMPLETE,)):
        # samplers (NSGA-II on a small categorical space) re-propose points: reuse the result
        if t.params == trial.params and "duplicate_of" not in t.user_attrs:
            for k, v in t.user_attrs.items():
                trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of", t.number)
            _constrain(trial, sc, t.user_attrs)
            return tuple(t.values)
    cfg = trial_config(sc, params, trial.number)
    t0 = time.time()
    if sc.width_search is not None:
        res = evaluate_width(sc, study_dir, params, trial.number)
    else:
        res = evaluate(cfg, study_dir / "trials" / f"{trial.number:04d}", sc.objectives)
    _constrain(trial, sc, res)
    for k, v in res.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("seconds", round(time.time() - t0, 1))
    trial.set_user_attr("worker_pid", os.getpid())
    trial.set_user_attr("run_dir", f"trials/{trial.number:04d}")
    return tuple(res[o] for o in sc.objectives)


def _constrain(trial, sc: StudyConfig, res: dict[str, Any]) -> None:
    """The budget as Optuna constraints (cost - budget, <= 0 feasible; ``Trial.set_constraint``, read by
    ``NSGAIISampler`` and ``TPESampler``) and a ``feasible`` user attribute."""
    if not sc.budget:
        return
    for k, v in sc.budget.items():
        if hasattr(trial, "set_constraint"):  # Optuna >= 5; older versions: the feasible attribute only
            trial.set_constraint(k, float(res[k]) - float(v))
    trial.set_user_attr("feasible", all(float(res[k]) <= float(v) for k, v in sc.budget.items()))


def worker(sc: StudyConfig, study_dir: Path, progress: bool = True) -> int:
    """Run trials until the study has ``sc.trials`` complete ones; returns trials run by this worker.

    Several workers may share one storage: a trial that would exceed the requested count (because
    ``trials`` others are already complete or running) is marked PRUNED without being evaluated and the
    worker waits for the running ones; trials of dead workers are failed and replaced."""
    import optuna

    TS = optuna.trial.TrialState
    study = open_study(sc, study_dir)
    failed = fail_dead_trials(study, sc.grace_s)
    if failed and progress:
        print(f"[study {sc.name}] trials {failed} of dead workers marked failed", flush=True)
    ran = fails = 0
    while _n_complete(study) < sc.trials:
        if _count(study, TS.COMPLETE, TS.RUNNING) >= sc.trials:  # the others are finishing the study
            time.sleep(1.0)
            failed = fail_dead_trials(study, sc.grace_s)
            if failed and progress:
                print(f"[study {sc.name}] trials {failed} of dead workers marked failed", flush=True)
            continue
        state = _run_trial(study, sc, study_dir)
        if state == "PRUNED":  # lost a race with another worker for the last trial(s)
            continue
        ran += 1
        fails += state == "FAIL"
        if progress:
            print(f"[study {sc.name}] {_n_complete(study)}/{sc.trials} trials complete", flush=True)
        if fails > 2 * sc.trials:  # every trial failing: stop instead of looping forever
            raise CodesignError(f"study {sc.name}: too many failed trials; see {study_dir}/trials")
    return ran


def run_study(path: str | Path, out: Path | None = None, workers: int = 1, storage: str | None = None) -> Path:
    """Run (or resume) a study; writes trials.csv, pareto.csv, plots and report.html into the study folder.
    ``storage``: an Optuna storage URL that replaces the YAML's ``storage``."""
    sc = load_study_config(path)
    if storage:
        sc = sc.model_copy(update={"storage": storage})
    study_dir = (Path(out) if out else Path("studies") / sc.name).resolve()
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(sc.model_dump(), sort_keys=False))
    if workers <= 1:
        worker(sc, study_dir)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(sc, study_dir)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise CodesignError(f"{len(failed)} study worker(s) failed (exit codes {failed})")
    from codesign.report import study_report

    study_report(study_dir)
    return study_dir


def trials_table(study_dir: Path) -> list[dict[str, Any]]:
    """All trials of a study folder as rows (number, state, params, objectives, user attrs)."""
    import optuna

    sc = StudyConfig.model_validate(yaml.safe_load((study_dir / "study.yaml").read_text()))
    study = open_study(sc, study_dir)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name}
        row.update({f"param:{k}": round(v, 10) if isinstance(v, float) else v for k, v in t.params.items()})
        row.update(t.user_attrs)
        rows.append(row)
    pareto = {t.number for t in study.best_trials} if _n_complete(study) else set()
    for r in rows:
        r["pareto"] = r["number"] in pareto and r["state"] == optuna.trial.TrialState.COMPLETE.name \
            and r.get("feasible", True) is not False
    return rows
