"""``python -m bench pipeline``: deep pipelining of fully parallel designs on ECP5-85F.

Per (model, flow_control, pipeline depth): the RTL (``codesign.rtl.generate``), its verification
(cocotb + Verilator against the golden model, backpressure on: mismatches, measured latency), and per
seed the out-of-context build (``codesign.fpga.builder.build``, yosys + nextpnr, routed, target clock
``--clock-mhz``): LUT4 / FF and nextpnr's fmax after routing; the median over the seeds.

``--models`` (default digits_mlp_pot,digits_mlp_pot_pruned), ``--configs`` (``flow:depth`` or
``flow:depthxC`` with C register copies (``rtl.copies``), default stall:5,credit:5,credit:8), ``--seeds``
(default 1). Each build is cached in
``<runs>/pipeline/<model>_<flow>_p<depth>/fpga_s<seed>`` (the builder skips unchanged steps) and every
result is kept in ``<runs>/bench_pipeline.json``, so an interrupted sweep resumes. Not part of ``all``:
one routed build of a 17k-FF design takes minutes on 2 cores. ``--quick``: RTL and verification only.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

from bench.common import Ctx, log, run_dir, section, table

MODELS = ("digits_mlp_pot", "digits_mlp_pot_pruned")
CONFIGS = ("stall:5", "credit:5", "credit:8")


def configs(spec: str) -> list[tuple[str, int, int]]:
    """``"stall:5,credit:10x4"`` -> [("stall", 5, 1), ("credit", 10, 4)] (flow control, pipeline, copies)."""
    out = []
    for item in (s for s in spec.split(",") if s):
        flow, depth = item.split(":")
        if flow not in ("stall", "credit"):
            raise ValueError(f"--configs: flow control {flow!r} is not stall or credit")
        depth, _, copies = depth.partition("x")
        out.append((flow, int(depth), int(copies or 1)))
    return out


def measure(ctx: Ctx, model: str, flow: str, depth: int, seeds: list[int], vectors: int,
            done: dict[str, Any], copies: int = 1) -> dict[str, Any]:
    from codesign.rtl import generate
    from codesign.verify import verify

    run = run_dir(ctx, model, until="export")
    onnx = run / "export" / "model.onnx"
    key = _key(model, flow, depth, copies)
    d = ctx.runs / "pipeline" / f"{model}_{flow}_p{depth}{_copies(copies)}"
    iface = generate(onnx, d / "rtl", pipeline=depth, flow_control=flow, copies=copies)
    h = hashlib.sha256(b"".join((d / "rtl" / f).read_bytes() for f in iface["files"])).hexdigest()[:16]
    r = done.get(key) or {}
    if r.get("rtl_sha256") != h:  # a changed design: measure again
        r = {"model": model, "flow_control": flow, "pipeline": depth, "copies": copies, "rtl_sha256": h, "fmax": {}}
    r["latency"] = iface["latency_cycles"]
    if r.get("mismatches") is None:
        log(f"pipeline: verify {key} ({vectors} vectors, backpressure)")
        v = verify(d / "rtl", onnx, vectors=vectors, simulator="verilator")
        r.update(mismatches=v["mismatches"], vectors=v["vectors"], verify_ok=v["ok"],
                 latency_measured=v["latency_cycles"]["measured_max"], ii_measured=v["ii"]["measured_max"])
    ctx.expect_zero(f"pipeline: {key}", r["mismatches"])
    done[key] = r
    _save(ctx.runs / "bench_pipeline.json", key, r)
    if ctx.quick or not ctx.pnr:
        return r
    from codesign.fpga.builder import build

    for seed in seeds:
        if str(seed) in r["fmax"]:
            continue
        log(f"pipeline: yosys + nextpnr {key} seed {seed} ({ctx.clock_mhz:g} MHz target)")
        b = build(d / "rtl", d / f"fpga_s{seed}", target="ecp5-85f", board="none", clock_mhz=ctx.clock_mhz,
                  seed=seed, progress=False)
        r.update(luts=b.get("luts"), ffs=b.get("ffs"))
        r["fmax"][str(seed)] = b.get("fmax_mhz")
        done[key] = r
        _save(ctx.runs / "bench_pipeline.json", key, r)
    return r


def _copies(copies: int) -> str:
    return f"x{copies}" if copies > 1 else ""


def _key(model: str, flow: str, depth: int, copies: int) -> str:
    """``model/flow/depth[xC]``: the result's key in ``bench_pipeline.json``."""
    return f"{model}/{flow}/{depth}{_copies(copies)}"


def _save(path: Path, key: str, r: dict[str, Any]) -> None:
    """Store one result in ``path``, keeping what other runs stored meanwhile (two sweeps of different
    models can share a runs directory), written through a temporary file."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[key] = r
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored, indent=1))
    tmp.replace(path)


def render(ctx: Ctx, rows: list[dict[str, Any]]) -> None:
    out = []
    for r in rows:
        f = [v for v in r["fmax"].values() if v is not None]
        out.append([r["model"], r["flow_control"], r["pipeline"], r.get("copies", 1), r.get("luts"),
                    r.get("ffs"),
                    " / ".join(f"{v:.1f}" for v in f) or "-", statistics.median(f) if f else None,
                    r["latency"], r.get("mismatches")])
    body = table(["model", "flow control", "pipeline", "register copies", "LUT4", "FF", "fmax per seed (MHz)",
                  "median fmax (MHz)", "latency (cycles)", "mismatches"], out)
    body += (f"\n\nECP5-85F out of context (`codesign.fpga.builder.build`, nextpnr routed, target "
             f"{ctx.clock_mhz:g} MHz; LUT4 and FF of the whole build, the out-of-context wrapper's input shift "
             "register, output register and XOR reduction included, as in `fpga.json`); verification: cocotb + "
             "Verilator, random + corner vectors, input gaps and output backpressure in the second half.")
    section(ctx, "pipeline", "Deep pipelining (flow control, pipeline depth)", body)


def run(ctx: Ctx) -> dict:
    models = ctx.models or MODELS
    todo = configs(ctx.configs or ",".join(CONFIGS))
    seeds = list(ctx.seeds)
    vectors = 2000 if ctx.quick else 20000
    path = ctx.runs / "bench_pipeline.json"
    done: dict[str, Any] = json.loads(path.read_text()) if path.exists() and ctx.reuse else {}
    rows = []
    for model in models:
        for flow, depth, copies in todo:
            rows.append(measure(ctx, model, flow, depth, seeds, vectors, done, copies))  # stores its result
    render(ctx, rows)
    return {"rows": rows, "path": str(Path(path))}
