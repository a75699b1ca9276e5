"""``python -m bench rtl``: resources, latency/II of the generated RTL (fully parallel and folded) and
the Verilator build time of digits_mlp fully parallel (target <= 60 s)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.common import DIGITS, Ctx, log, run_dir, same_files, section, table
from bench.synth import synth_files

REUSE = 8


QUICK_MODEL = "digits_mlp_pot_pruned"  # --quick: the smallest design, both architectures, ECP5 only


def designs(ctx: Ctx) -> list[tuple[str, str, int]]:
    models = (QUICK_MODEL,) if ctx.quick else DIGITS
    return [(m, s, r) for m in models for s, r in (("latency", 1), ("resource", REUSE))]


def generate(run: Path, strategy: str, reuse: int, folder: str | None = None, **options) -> tuple[Path, dict, bool]:
    """Our RTL of ``run``'s export in ``run/bench_rtl/<strategy>``. The design is generated into a temporary
    folder every time (a changed generator changes the RTL of an unchanged ONNX); the old folder, with its
    synthesis / place-and-route results and their mtimes, is kept when every generated file is identical.
    ``folder``: another folder name under bench_rtl; ``options``: more ``codesign.rtl.generate`` arguments.
    -> (folder, interface, rewritten)."""
    from codesign.rtl import generate as gen

    out = run / "bench_rtl" / (folder or (strategy if reuse == 1 else f"{strategy}{reuse}"))
    onnx = run / "export" / "model.onnx"
    tmp = out.with_name(out.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    iface = gen(onnx, tmp, strategy=strategy, reuse=reuse, **options,
                onnx_rel=os.path.relpath(onnx.resolve(), out.resolve()))
    if out.is_dir() and same_files(tmp, out):
        shutil.rmtree(tmp)
        return out, iface, False
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out, iface, True


def verilator_build_s(rtl_dir: Path, onnx: Path) -> dict:
    """Cold Verilator build (fresh build folder, ccache disabled) through codesign.verify."""
    from codesign.verify import verify

    saved = os.environ.get("OBJCACHE")
    os.environ["OBJCACHE"] = ""  # codesign.verify.sim only sets ccache when OBJCACHE is unset
    broot = Path(tempfile.mkdtemp(prefix="bench-vbuild-"))
    try:
        res = verify(rtl_dir, onnx, vectors=1000, simulator="verilator", build_root=broot, localize=False)
    finally:
        shutil.rmtree(broot, ignore_errors=True)
        if saved is None:
            os.environ.pop("OBJCACHE", None)
        else:
            os.environ["OBJCACHE"] = saved
    return {"build_s": res["seconds"]["build"], "cached": res["seconds"]["build_cached"],
            "build_cpu": res["seconds"].get("build_cpu"),
            "mismatches": res["mismatches"]}


def run(ctx: Ctx) -> dict:
    results: list[dict] = []
    targets = ("ecp5",) if ctx.quick else ctx.targets
    todo = designs(ctx)
    for name, strategy, reuse in todo:
        run = run_dir(ctx, name, until="export")
        out, iface, _ = generate(run, strategy, reuse)
        r: dict = {"model": name, "strategy": strategy, "reuse": reuse, "latency": iface["latency_cycles"],
                   "ii": iface["ii"]}
        for t in ("ecp5", "xilinx"):
            if t in targets:
                log(f"rtl: yosys synth_{t} {name} {strategy} reuse {reuse}")
            try:  # a target not asked for is still reported when an up-to-date result exists
                got = synth_files(out, iface["files"], iface["top"], t, reuse=True, cached_only=t not in targets)
            except Exception as e:  # noqa: BLE001 - a failing synthesis is a result to report
                got = {"error": str(e)[:300]}
            if got is not None:
                r[t] = got
        results.append(r)
    vb = None
    if not ctx.quick:  # quick: `bench verify` and `bench flow` already build digits_mlp with Verilator
        log("rtl: Verilator build of digits_mlp fully parallel (cold, no ccache)")
        run = run_dir(ctx, "digits_mlp", until="export")
        out, _, _ = generate(run, "latency", 1)
        vb = verilator_build_s(out, run / "export" / "model.onnx")
        ctx.expect_zero("rtl: digits_mlp fully parallel, Verilator smoke run", vb["mismatches"])
    (ctx.runs / "bench_rtl.json").write_text(json.dumps({"designs": results, "verilator": vb}, indent=1))
    render(ctx, results, vb)
    return {"designs": results, "verilator": vb}


def render(ctx: Ctx, results: list[dict], vb: dict | None) -> None:
    rows = []
    for r in results:
        name, reuse = r["model"], r["reuse"]
        e, x = r.get("ecp5", {}), r.get("xilinx", {})
        rows.append([name, "fully parallel" if reuse == 1 else f"folded, reuse {reuse}", r["latency"], r["ii"],
                     e.get("LUT4"), e.get("CCU2"), e.get("LUT4eq"), e.get("FF"), e.get("MULT18"), e.get("seconds"),
                     x.get("LUT"), x.get("FF"), x.get("CARRY4"), x.get("DSP"), x.get("seconds")])
    body = table(["model", "architecture", "latency (cycles)", "II", "ECP5 LUT4", "CCU2", "LUT4 + 2 CCU2", "FF",
                  "MULT18", "synth_ecp5 s", "Xilinx LUT", "FF", "CARRY4", "DSP48", "synth_xilinx s"], rows)
    body += ("\n\nCounts are yosys (YoWASP) `synth_ecp5` / `synth_xilinx -flatten` `stat` of the flattened top, out "
             "of context (no I/O constraints); Xilinx LUT includes INV cells (LUT1s after mapping). A `-` in a "
             "synth-seconds column means the counts were reused from an earlier run on the same RTL files; a `-` "
             "in the counts means that target was not run. All designs are generated with `multiplier='shiftadd'`: "
             "fully parallel layers have constant weights (shift-add trees, no multipliers); folded layers read "
             "their weights from a ROM, so an 8-bit fixed-point folded layer has real variable multipliers "
             "(MULT18/DSP48: n_in per lane, 4 x 64 + 2 x 32 = 320 for digits_mlp), while folded power-of-two "
             "layers use barrel shifters instead.")
    if ctx.quick:
        body += (f" Quick mode: {QUICK_MODEL} only, ECP5 only, trained for a few epochs (weights differ from full "
                 "runs); no Verilator build measurement.")
    if vb is None:
        section(ctx, "rtl", "RTL resources and latency", body)
        return
    cpu = f", {vb['build_cpu']:.0f} CPU s" if vb.get("build_cpu") else ""
    body += (f"\n\nVerilator build of digits_mlp fully parallel (cocotb runner, cold: fresh build folder, ccache "
             f"disabled): **{vb['build_s']:.1f} s wall{cpu}** (target <= 60 s: "
             f"{'met' if vb['build_s'] <= 60 else 'NOT met in wall time on this loaded machine'}), "
             f"{vb['mismatches']} mismatches on the smoke run. The same cold build inside `bench verify` took "
             "the CPU time given there (`build CPU s`), which is what an idle machine needs at most.")
    section(ctx, "rtl", "RTL resources and latency", body)
