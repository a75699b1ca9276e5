"""Study runner: kill/resume, several workers on one SQLite storage, the HTML/CSV report.

The runner tests (kill/resume, two workers) run ``codesign.study.run_study`` in subprocesses with the
design evaluation replaced by a fast stand-in (``FAKE``), so they test the storage/resume logic in
seconds; ``test_real_trials_and_report`` runs real tiny trials (1 epoch on 200 digits samples: train,
prune, export, energy) in-process, and the ``slow`` variants run real trials in subprocesses.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from codesign import study

ROOT = Path(__file__).resolve().parent.parent


def _write_study(path: Path, name: str, trials: int, continuous: bool = False) -> Path:
    """``continuous``: prune.sparsity drawn from [0, 0.5] without a step, so no trial re-proposes an earlier
    point (on the 24-point grid two of four pid-seeded random draws repeat now and then)."""
    sparsity = {"low": 0.0, "high": 0.5} if continuous else {"low": 0.0, "high": 0.5, "step": 0.25}
    path.write_text(yaml.safe_dump({
        "name": name, "base": "digits_mlp", "trials": trials, "sampler": "random", "seed": 1,
        "objectives": ["accuracy", "energy_pj"],
        "set": {"train.epochs": 1, "data.n_samples": 200, "prune.finetune_epochs": 1},
        "space": {"quant.weight.scheme": ["fixed", "pot"], "quant.weight.bits": [3, 4],
                  "prune.sparsity": sparsity, "prune.criterion": ["l1", "energy"]},
    }))
    return path


FAKE = """
import os, signal, sys, time
from pathlib import Path
from optuna.storages import RDBStorage
from codesign import study

KILL_AT = sys.argv[4] if len(sys.argv) > 4 else ""
FAKE_S = float(sys.argv[3])
armed = []  # trial id of the third trial this process creates: the one to die in


def die(point, trial_id=None):
    if KILL_AT == point and armed and (trial_id is None or trial_id == armed[0]):
        os.kill(os.getpid(), signal.SIGKILL)


def patch(name, before=None, after=None):
    orig = getattr(RDBStorage, name)

    def wrapped(self, *a, **k):
        if before:
            before(*a)
        r = orig(self, *a, **k)
        if after:
            after(r, *a)
        return r
    setattr(RDBStorage, name, wrapped)


created = []
def on_create(frozen, *a):
    created.append(frozen._trial_id)
    if len(created) == 3:
        armed.append(frozen._trial_id)
        die("create")


# the methods Optuna's cached storage calls on its RDBStorage
patch("_create_new_trial", after=on_create)
patch("record_heartbeat", after=lambda r, tid: die("heartbeat", tid))
patch("_set_trial_param", after=lambda r, tid, *a: die("param", tid))
patch("set_trial_state_values", before=lambda tid, *a: die("tell", tid),
      after=lambda r, tid, *a: die("told", tid))


def fake(cfg, run_dir, objectives):
    run_dir.mkdir(parents=True, exist_ok=True)
    if armed:
        (run_dir / "partial.txt").write_text("half")
        die("evaluate")
    time.sleep(FAKE_S)
    (run_dir / "done.txt").write_text(cfg.name)
    s = cfg.prune.sparsity if cfg.prune.enabled else 0.0
    e = 400.0 * (1 - s) * (0.4 if cfg.quant.weight.scheme == "pot" else 1.0) * cfg.quant.weight.bits / 4
    return {"accuracy": 0.95 - 0.2 * s * s, "energy_pj": e, "params": 100.0}


study.evaluate = fake
if len(sys.argv) > 5:  # the real command line, on the storage URL sys.argv[5]
    from codesign import cli
    sys.argv = ["codesign", "-q", "study", sys.argv[1], "--out", sys.argv[2], "--storage", sys.argv[5]]
    cli.main()
else:
    study.run_study(sys.argv[1], Path(sys.argv[2]))
"""


def _cmd(cfg: Path, out: Path, fake_s: float | None = 1.0, kill_at: str = "") -> list[str]:
    if fake_s is None:
        return [sys.executable, "-m", "codesign", "-q", "study", str(cfg), "--out", str(out)]
    return [sys.executable, "-c", FAKE, str(cfg), str(out), str(fake_s), kill_at]


def _marker(out: Path, t) -> Path:
    d = out / t.user_attrs["run_dir"]
    return d / "done.txt" if (d / "done.txt").exists() else d / "export" / "model.onnx"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _states(db: Path) -> dict[int, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as c:
            return dict(c.execute("select number, state from trials").fetchall())
    except sqlite3.OperationalError:  # tables not created yet
        return {}


def _trials(out: Path):
    import optuna

    sc = study.StudyConfig.model_validate(yaml.safe_load((out / "study.yaml").read_text()))
    return optuna.load_study(study_name=sc.name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


KILL_POINTS = ("create", "heartbeat", "param", "evaluate", "tell", "told")


def _kill_and_resume(tmp: Path, fake_s: float | None, kill_at: str = "") -> dict:
    """A 4-trial study killed (SIGKILL), then run again to the end. With ``kill_at`` the worker kills
    itself at that point of its third trial (see ``FAKE``): right after the trial is created, after its
    first heartbeat, after a parameter is stored, inside the evaluation, just before / after the result
    is stored. Without it, the test kills the worker from outside once 2 trials are complete."""
    # continuous space: with a re-proposed third and fourth point (reused results, no evaluation) the
    # kill at "evaluate" would never come (seen once in CI)
    cfg, out = _write_study(tmp / "s.yaml", "resume", 4, continuous=True), tmp / "out"
    p = subprocess.Popen(_cmd(cfg, out, fake_s, kill_at), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    t0 = time.time()
    try:
        if kill_at:
            p.wait(timeout=300)
            assert p.returncode == -signal.SIGKILL, (
                f"the kill at {kill_at!r} did not land: {p.stderr.read().decode()[-2000:]}")
        while not kill_at and sum(s == "COMPLETE" for s in _states(out / "study.db").values()) < 2:
            assert p.poll() is None, f"study ended early: {p.stderr.read().decode()[-2000:]}"
            assert time.time() - t0 < 600, "study too slow"
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    before = {t.number: t for t in _trials(out) if t.state.name == "COMPLETE"}
    mtimes = {n: _marker(out, t).stat().st_mtime for n, t in before.items()}
    # a hang here (a trial left RUNNING forever) fails on the timeout instead of blocking the suite
    r = subprocess.run(_cmd(cfg, out, fake_s), cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120 if fake_s else 900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return {"out": out, "before": before, "mtimes": mtimes, "after": _trials(out)}


def _check_resumed(res: dict, n_before: int = 2) -> None:
    before, after, out = res["before"], res["after"], res["out"]
    assert len(before) >= n_before
    complete = {t.number: t for t in after if t.state.name == "COMPLETE"}
    assert len(complete) == 4
    assert not [t for t in after if t.state.name == "RUNNING"]  # the killed trial was failed, not left running
    for n, t in before.items():  # finished trials are kept as they were, not re-run
        assert n in complete
        assert complete[n].user_attrs == t.user_attrs
        assert complete[n].values == t.values
        assert complete[n].datetime_complete == t.datetime_complete
        assert _marker(out, t).stat().st_mtime == res["mtimes"][n]
    evaluated = [t for t in complete.values() if "duplicate_of" not in t.user_attrs]
    dirs = [t.user_attrs["run_dir"] for t in evaluated]
    assert len(set(dirs)) == len(evaluated)
    for f in ("report.html", "trials.csv", "pareto.csv", "accuracy_vs_energy.png"):
        assert (out / f).stat().st_size > 0, f


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_kill_and_resume_completes_only_missing_trials(tmp_path, kill_at):
    res = _kill_and_resume(tmp_path, 0.2, kill_at)
    _check_resumed(res)
    failed = [t for t in res["after"] if t.state.name == "FAIL"]
    if kill_at == "told":  # the result was stored before the kill: nothing to fail or re-run
        assert not failed and len(res["before"]) == 3
    else:  # the killed trial (the third) was failed by the resumed worker and its place re-run
        assert len(failed) == 1 and failed[0].number == 2
        assert "is gone" in failed[0].system_attrs["codesign:failed_reason"]


def test_kill_and_resume_from_outside(tmp_path):
    _check_resumed(_kill_and_resume(tmp_path, 0.5))


@pytest.mark.slow
def test_kill_and_resume_real_trials(tmp_path):
    res = _kill_and_resume(tmp_path, None)
    _check_resumed(res)
    for t in res["after"]:
        if t.state.name == "COMPLETE":
            assert (res["out"] / t.user_attrs["run_dir"] / "energy" / "energy.json").exists()


def test_real_trials_and_report(tmp_path):
    """Two real tiny trials in-process (train -> prune -> export -> energy), then the report files."""
    cfg, out = _write_study(tmp_path / "s.yaml", "real", 2), tmp_path / "out"
    study.run_study(cfg, out)
    res = {"out": out}
    complete = [t for t in _trials(out) if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    for t in complete:
        assert (out / t.user_attrs["run_dir"] / "energy" / "energy.json").exists()
        assert t.user_attrs["energy_pj"] > 0 and 0 <= t.user_attrs["accuracy"] <= 1
    _report_files(res, 2)


def _report_files(res: dict, n: int) -> None:
    out = res["out"]
    for f in ("report.html", "trials.csv", "pareto.csv", "accuracy_vs_energy.png"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "accuracy_vs_energy.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Pareto" in html
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state") and sum(",COMPLETE," in r for r in rows) == n
    assert len((out / "pareto.csv").read_text().splitlines()) >= 2


@pytest.mark.parametrize("fake_s", [0.5, pytest.param(None, marks=pytest.mark.slow)])
def test_two_workers_share_one_storage(tmp_path, fake_s):
    cfg, out = _write_study(tmp_path / "s.yaml", "shared", 6 if fake_s else 4), tmp_path / "out"
    procs = [subprocess.Popen(_cmd(cfg, out, fake_s), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err.decode()[-2000:]
    trials = _trials(out)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == (6 if fake_s else 4)
    evaluated = [t for t in complete if "duplicate_of" not in t.user_attrs]  # re-proposed points reuse results
    dirs = [t.user_attrs["run_dir"] for t in evaluated]
    assert len(set(dirs)) == len(evaluated)  # no design point evaluated twice into one folder
    if fake_s:
        assert len({t.user_attrs["worker_pid"] for t in complete}) == 2  # both workers did trials
    # surplus trials (asked while the others were finishing) were never evaluated
    for t in trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs.get("surplus") and not (out / "trials" / f"{t.number:04d}").exists()


def _running(st, **system_attrs):
    import datetime

    from optuna.trial import FrozenTrial, TrialState

    start = datetime.datetime.now() - datetime.timedelta(seconds=system_attrs.pop("age", 0))
    tmpl = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=start,
                       datetime_complete=None, params={}, distributions={}, user_attrs={},
                       system_attrs={f"codesign:{k}": v for k, v in system_attrs.items()},
                       intermediate_values={}, trial_id=-1)
    tid = st._storage.create_new_trial(st._study_id, template_trial=tmpl)
    return st._storage.get_trial(tid)


def test_dead_worker_trial_is_failed(tmp_path):
    import optuna

    sc = study.StudyConfig(name="dead", trials=1, sampler="random")
    st = study.open_study(sc, tmp_path)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that is certainly gone
    host = study._host()
    gone = _running(st, host=host, pid=p.pid)
    alive = _running(st, host=host, pid=os.getppid(), pid_start=study._proc_start(os.getppid()))
    # a live pid that belongs to another process now (the dead worker's pid was reused)
    reused = _running(st, host=host, pid=os.getppid(), pid_start=study._proc_start(os.getppid()) - 1)
    # a worker elsewhere that died before its first heartbeat: failed once older than the grace period
    silent = _running(st, host="elsewhere", pid=1, age=120)
    young = _running(st, host="elsewhere", pid=1)
    legacy = _running(st, age=120)  # no identity and no heartbeat (trials from before this fix)
    beating = _running(st, host="elsewhere", pid=1, age=120)
    st._storage.record_heartbeat(beating._trial_id)  # alive by its heartbeat (stale only after grace)
    assert sorted(study.fail_dead_trials(st, grace_s=60)) == sorted([gone.number, reused.number, silent.number,
                                                                     legacy.number])
    states = {x.number: x.state for x in st.get_trials()}
    assert [n for n, s in states.items() if s == optuna.trial.TrialState.RUNNING] == \
        [alive.number, young.number, beating.number]
    reasons = {x.number: x.system_attrs.get("codesign:failed_reason") for x in st.get_trials()}
    assert "is gone" in reasons[gone.number] and "no heartbeat" in reasons[silent.number]


def test_study_config_errors(tmp_path):
    from codesign.errors import ConfigError

    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nobjectives: [accuracy, speed]\n")
    with pytest.raises(ConfigError, match="objectives"):
        study.load_study_config(p)
    p.write_text("name: x\nspace: {prune.sparsity: 0.5}\n")
    with pytest.raises(ConfigError, match="space.prune.sparsity"):
        study.load_study_config(p)
    sc = study.load_study_config(ROOT / "studies" / "digits_energy.yaml")
    assert sc.objectives == ["accuracy", "energy_pj"] and "prune.criterion" in sc.space


# ------------------------------------------------------------------------------------ PostgreSQL
def test_three_workers_on_postgresql_one_killed_mid_trial(tmp_path):
    """A real PostgreSQL server (tests/pg_server.py), three `codesign study FILE --storage postgresql://...`
    workers; one is killed with SIGKILL while it runs a trial and started again. The study ends with exactly
    the requested complete trials; the killed trial is failed (by the others or by the restarted worker) and
    its place taken by a new one; no complete trial is lost, changed or counted twice."""
    import optuna
    from pg_server import postgres

    n = 8
    cfg, out = _write_study(tmp_path / "s.yaml", "pg", n), tmp_path / "out"

    def start(url: str) -> subprocess.Popen:
        return subprocess.Popen([*_cmd(cfg, out, 1.0), url], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    with postgres() as url:
        procs = [start(url) for _ in range(3)]
        victim, t0, mine = procs[0], time.time(), []
        while not mine:  # wait for a trial of the victim that is running, after at least one complete trial
            assert time.time() - t0 < 300 and victim.poll() is None, "the victim finished without a running trial"
            time.sleep(0.2)
            try:
                trials = optuna.load_study(study_name="pg", storage=url).get_trials()
            except Exception:  # noqa: BLE001 - schema or study not created yet
                continue
            if any(t.state.name == "COMPLETE" for t in trials):
                mine = [t for t in trials if t.state.name == "RUNNING"
                        and t.system_attrs.get("codesign:pid") == victim.pid]
        done_before = {t.number: t for t in trials if t.state.name == "COMPLETE"}
        victim.kill()
        victim.wait()
        procs[0] = start(url)
        for p in procs:
            _, e = p.communicate(timeout=600)
            assert p.returncode == 0, e.decode()[-2000:]
        after = optuna.load_study(study_name="pg", storage=url).get_trials()
    by_number = {t.number: t for t in after}
    assert len(by_number) == len(after)  # no trial number twice
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert len(complete) == n and not [t for t in after if t.state.name == "RUNNING"]
    killed = by_number[mine[0].number]
    assert killed.state.name == "FAIL" and "is gone" in killed.system_attrs["codesign:failed_reason"]
    for k, t in done_before.items():  # finished before the kill: kept as they were
        assert by_number[k].state.name == "COMPLETE" and by_number[k].values == t.values
    evaluated = [t for t in complete if "duplicate_of" not in t.user_attrs]
    assert len({t.user_attrs["run_dir"] for t in evaluated}) == len(evaluated)  # no result counted twice
    assert all((out / t.user_attrs["run_dir"] / "done.txt").exists() for t in evaluated)
    assert len({t.user_attrs["worker_pid"] for t in complete}) >= 3  # the restarted worker took part too
