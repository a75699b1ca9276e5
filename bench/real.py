"""``python -m bench real``: QONNX models made elsewhere, end to end.

Models: the two public files in models/qonnx (FINN's TFC_2W2A, hls4ml's QKeras jet tagger with the input
grid ``ap_fixed<16,6>``) and Brevitas BNN-PYNQ TFC/SFC nets (random weights, seed 0, randomized BatchNorm:
:func:`codesign.real_models.bnn_pynq`), then CNV_1W1A with the stream architecture. For each model:

1. golden: the golden model against qonnx ``execute_onnx`` (:func:`codesign.golden.compare.compare`) on
   inputs on the input grid (k/255 images where the graph pre-processes its input on the host);
2. rtl: the fully parallel (``latency``) and the folded (``resource``) design in Verilator
   (:func:`codesign.verify.run_codes`) on random codes of the core input grid plus corner vectors,
   compared with the IR (:meth:`codesign.rtl.ir.Model.run`); latency, II, build and simulation seconds;
3. forms: which epilogue form ``rtl.epilogue: auto`` picks per layer, and for layers that have both forms
   the yosys ``synth_ecp5`` cells of each layer module generated with ``epilogue="thresholds"`` and with
   ``epilogue="mulshift"`` (full mode).

Any RTL-vs-IR mismatch makes the bench fail (exit status 1) after the doc section is written. Each
Verilator run happens in a child process with a time limit; a design over it is reported with the time.
The section is rewritten after every step, so an interrupted run leaves the steps it finished.
``--quick``: the jet tagger and the TFC_2W2A file, 100 golden inputs, 500 RTL vectors, no synthesis.
``--models``: only these models (comma separated, names as in the tables). ``--resume``: keep the steps
an earlier run recorded in ``<runs>/bench_real.json`` and run the others; ``--render``: only rewrite the
section from that file.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Ctx, log, section, table
from bench.synth import summarize
from codesign.errors import UnsupportedError

GOLDEN_N = 1_000
QUICK_GOLDEN_N = 100
QUICK_RTL_N = 500
SYNTH_LIMIT_S = 600


@dataclass(frozen=True)
class Spec:
    name: str
    source: str  # "file" (models/qonnx) or "bnn" (Brevitas bnn_pynq, random weights)
    folded: dict[str, Any] = field(default_factory=dict)
    io: str = "vector"
    synth: bool = False  # thresholds vs multiply-shift in yosys (full mode)
    rtl_n: int = 100_000  # RTL vectors (full mode)
    sim_limit_s: int = 600  # a Verilator build + simulation longer than this is stopped and reported as such

    @property
    def folder(self) -> str:
        """Its folder under runs/.../real (the file TFC_2W2A.onnx and the Brevitas TFC_2W2A are two models)."""
        return self.name.replace(".", "_")

    @property
    def precision(self) -> str | None:
        from codesign.real_models import JET_PRECISION

        return JET_PRECISION if self.name.startswith("qkeras_jettagging") else None


_FOLD_TFC = {"strategy": "resource", "reuse": 64, "pipeline": 2}
SPECS = (
    Spec("qkeras_jettagging.onnx", "file", {"strategy": "resource", "reuse": 16, "pipeline": 3}),
    Spec("TFC_2W2A.onnx", "file", _FOLD_TFC, synth=True),
    Spec("TFC_1W1A", "bnn", _FOLD_TFC),
    Spec("TFC_1W2A", "bnn", _FOLD_TFC, synth=True),
    Spec("TFC_2W2A", "bnn", _FOLD_TFC, synth=True),
    # the folded SFC Verilator build alone takes about 300 s
    Spec("SFC_1W1A", "bnn", _FOLD_TFC, sim_limit_s=1_200),
    Spec("SFC_1W2A", "bnn", _FOLD_TFC, sim_limit_s=1_200),
    Spec("SFC_2W2A", "bnn", _FOLD_TFC, sim_limit_s=1_200),
    Spec("CNV_1W1A", "bnn", io="stream", rtl_n=10_000, sim_limit_s=3_600),
)
QUICK = ("qkeras_jettagging.onnx", "TFC_2W2A.onnx")


# ---------------------------------------------------------------------------------------------- helpers
def in_child(fn: Callable[[], Any], limit_s: float) -> tuple[str, Any, float]:
    """``fn()`` in a forked child (its own process group) stopped after ``limit_s`` seconds:
    -> (``ok`` | ``error`` | ``timeout``, result or message, wall seconds)."""
    mp = multiprocessing.get_context("fork")
    rd, wr = mp.Pipe(duplex=False)

    def target() -> None:
        os.setsid()
        try:
            wr.send(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            wr.send(("error", f"{type(e).__name__}: {str(e)[:600]}"))

    t0 = time.perf_counter()
    p = mp.Process(target=target)
    p.start()
    wr.close()
    status, val = "timeout", None
    if rd.poll(limit_s):
        try:
            status, val = rd.recv()
        except EOFError:
            status, val = "error", f"the child process died (exit code {p.exitcode})"
    else:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.join()
    return status, val, time.perf_counter() - t0


def model_path(ctx: Ctx, spec: Spec) -> Path:
    """The raw QONNX file of ``spec`` (a public file, or the bnn_pynq export, made once per run folder)."""
    from codesign.real_models import QONNX, bnn_pynq

    if spec.source == "file":
        return QONNX / spec.name
    folder = ctx.runs / "real" / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.onnx"
    if not path.exists() or not ctx.reuse:
        log(f"real: exporting Brevitas {spec.name} (random weights, seed 0)")
        bnn_pynq(spec.name, folder, seed=0)
    return path


def lowered(path: Path, spec: Spec):
    from codesign.graph.clean import clean_qonnx
    from codesign.rtl import lower

    # --io stream: conv layers channels-last (the line buffers stream channels-last maps), the input as it is,
    # as `codesign rtl --io stream` cleans a foreign conv graph
    cleaned = clean_qonnx(path, channels_last=spec.io == "stream", input_channels_last=False)
    return lower(cleaned, spec.name.removesuffix(".onnx"), input_precision=spec.precision)


def rtl_vectors(fmt, n_inputs: int, n: int, seed: int = 1) -> np.ndarray:
    """``n`` random codes on the grid of ``fmt`` plus the corners: all lowest, all highest, and the two
    alternating patterns of lowest/highest."""
    rng = np.random.default_rng(seed)
    x = rng.integers(fmt.lo, fmt.hi + 1, (n + 4, n_inputs))
    alt = np.arange(n_inputs) % 2 == 0
    x[n], x[n + 1] = fmt.lo, fmt.hi
    x[n + 2] = np.where(alt, fmt.lo, fmt.hi)
    x[n + 3] = np.where(alt, fmt.hi, fmt.lo)
    return x


# ---------------------------------------------------------------------------------------------- steps
def golden_inputs(ctx: Ctx, spec: Spec, gm) -> tuple[np.ndarray, str]:
    """The golden step's inputs (also those of the side-by-side step) and a description of their grid."""
    from codesign.real_models import mnist_like, on_grid

    n = QUICK_GOLDEN_N if ctx.quick else GOLDEN_N
    sp = gm.input_spec
    if sp.host_pre:  # the graph quantizes its input itself: images of k/255 pixels
        dims = gm.model.graph.input[0].type.tensor_type.shape.dim
        return (mnist_like(n, 0, shape=tuple(d.dim_value for d in dims[1:])),
                "k/255 images (host pre-processing in the graph)")
    return on_grid(gm, n, 0), f"{'s' if sp.signed else 'u'}{sp.bits} x 2^{sp.scale_exp} codes" + (
        f" ({spec.precision})" if spec.precision else "")


def _against_reference(gm, y: np.ndarray, ref: np.ndarray) -> dict:
    """Outputs ``y`` against ``execute_onnx``'s ``ref`` by the golden stage's criterion: exact on a quantizer
    grid, else within the float-tail bound (``codesign.golden.compare.tail_differences``); plus the exact count."""
    from codesign.golden.compare import on_quantizer_grid, tail_differences

    diff, over, flips = tail_differences(y, ref)
    exact = int(np.sum(diff != 0))
    return {"mismatches": exact if on_quantizer_grid(gm) else int(over.sum()), "differ_exactly": exact,
            "max_abs_diff": float(diff.max()) if len(diff) else 0.0, "top_class_differs": flips}


def side_step(ctx: Ctx, spec: Spec, path: Path) -> dict:
    """The golden step's inputs through three implementations, each against ``execute_onnx``: the golden model,
    codesign's fully parallel RTL in Verilator (host pre-processing -> RTL -> host post-processing, as a host
    would run it) and hls4ml's C simulation (``convert_from_onnx_model`` with its QONNX-derived precisions,
    Vitis backend, ``io_parallel``; ``compile()`` + ``predict()``)."""
    from codesign.golden import GoldenModel
    from codesign.golden.compare import qonnx_reference
    from codesign.golden.stage import run_batched
    from codesign.verify import run_codes
    from codesign.verify.core import load_interface

    gm = GoldenModel(path, input_precision=spec.precision)
    x, _ = golden_inputs(ctx, spec, gm)
    ref = qonnx_reference(ctx.runs / "real" / f"{spec.folder}.reference.onnx", x)
    golden = np.asarray(run_batched(gm, x), dtype=np.float64).reshape(len(x), -1)
    res: dict[str, Any] = {"inputs": len(x), "golden": _against_reference(gm, golden, ref)}
    rtl = ctx.runs / "real" / spec.folder / "rtl_parallel"
    try:
        iface = load_interface(rtl)
        codes = np.asarray(gm.preprocess(x)).reshape(len(x), -1)
        yr, _ = run_codes(rtl, iface.input.to_bits_codes(codes), simulator="verilator")
        core = gm.tensors[gm.core_output].shape[1:]
        y = gm.postprocess(np.asarray(iface.output.from_bits_codes(yr)).reshape(len(x), *core))
        res["rtl"] = _against_reference(gm, y, ref)
        res["rtl"]["vs_golden"] = int(np.sum(np.any(np.asarray(y, dtype=np.float64).reshape(len(x), -1) != golden,
                                                    axis=1)))
    except Exception as e:  # noqa: BLE001 - reported in the table and as a bench failure
        res["rtl"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    try:
        from codesign.hls import convert

        t0 = time.perf_counter()
        hm = convert(ctx.runs / "real" / f"{spec.folder}.reference.onnx", ctx.runs / "real" / spec.folder / "hls4ml")
        hm.compile()
        compile_s = time.perf_counter() - t0
        xin = np.ascontiguousarray(x.reshape(len(x), -1) if len(np.shape(x)) > 2 else x, dtype=np.float64)
        y = np.asarray(hm.predict(xin), dtype=np.float64)
        res["hls4ml"] = {**_against_reference(gm, y, ref), "compile_s": compile_s}
    except Exception as e:  # noqa: BLE001 - hls4ml refusing a model is a result
        res["hls4ml"] = {"refused": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    return res


def golden_step(ctx: Ctx, spec: Spec, path: Path) -> dict:
    import onnx

    from codesign.golden import GoldenModel
    from codesign.golden.compare import compare, qonnx_reference
    from codesign.golden.stage import run_batched
    from codesign.graph.clean import clean_qonnx

    t0 = time.perf_counter()
    gm = GoldenModel(path, input_precision=spec.precision)
    x, grid = golden_inputs(ctx, spec, gm)
    out = run_batched(gm, x)
    golden_s = time.perf_counter() - t0
    ref_model = gm.model if gm.mixed else clean_qonnx(gm.model)  # as tests/test_golden_real.py
    ref_path = ctx.runs / "real" / f"{spec.folder}.reference.onnx"
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(ref_model, str(ref_path))
    t1 = time.perf_counter()
    ref = qonnx_reference(ref_path, x)
    c = compare(gm, x, out, ref)
    return {"inputs": len(x), "grid": grid, "golden_s": golden_s, "reference_s": time.perf_counter() - t1, **c}


def rtl_step(ctx: Ctx, spec: Spec, model, arch: str) -> dict:
    """Generate ``arch`` (``parallel`` or ``folded``), simulate it in Verilator in a child process."""
    from codesign.rtl import generate
    from codesign.verify import run_codes

    opts: dict[str, Any] = dict(spec.folded) if arch == "folded" else {"strategy": "latency"}
    if spec.io != "vector":
        opts["io"] = spec.io
    out = ctx.runs / "real" / spec.folder / f"rtl_{arch}"
    t0 = time.perf_counter()
    iface = generate(model, out, **opts)
    gen_s = time.perf_counter() - t0
    n_in = int(np.prod(model.input_shape))
    x = rtl_vectors(model.input_fmt, n_in, QUICK_RTL_N if ctx.quick else spec.rtl_n)
    t1 = time.perf_counter()
    chunk = max(1, 2_000_000 // n_in)  # the IR's windows in int64: CNV on 10k vectors at once needs > 20 GB
    want = np.concatenate([np.asarray(model.run(x[i:i + chunk])).reshape(len(x[i:i + chunk]), -1)
                           for i in range(0, len(x), chunk)])
    ir_s = time.perf_counter() - t1
    verilog_mb = sum((out / f).stat().st_size for f in iface["files"]) / 1e6
    r: dict[str, Any] = {"options": opts, "vectors": len(x), "latency_iface": iface["latency_cycles"],
                         "ii_iface": iface["ii"], "generate_s": gen_s, "ir_s": ir_s, "verilog_mb": verilog_mb}
    limit = spec.sim_limit_s

    def sim() -> tuple[np.ndarray, dict]:
        y, st = run_codes(out, x, simulator="verilator")
        st.pop("taps", None)
        return y, st

    log(f"real: Verilator {spec.name} {arch} ({verilog_mb:.1f} MB Verilog), {len(x):,} vectors, limit {limit} s")
    status, val, wall = in_child(sim, limit)
    r["wall_s"] = wall
    if status != "ok":
        r["error"] = f"stopped after {wall:.0f} s (limit {limit} s)" if status == "timeout" else val
        return r
    y, st = val
    bad = np.flatnonzero(np.any(np.asarray(y).reshape(len(x), -1) != np.asarray(want).reshape(len(x), -1), axis=1))
    r.update({"mismatches": int(len(bad)), "first_bad": bad[:5].tolist(), "latency": st["latency"],
              "ii": st["ii"], **{f"{k}_s" if not k.endswith("cached") else k: v for k, v in st["seconds"].items()}})
    return r


def _layer_synth(folder: Path, layer: str, limit: float) -> dict:
    """yosys ``synth_ecp5 -top <layer>`` on the design's files but its top (a layer may use shared modules);
    reused when its stat file is newer than every file."""
    from codesign.rtl.synth import parse_stat

    files = _layer_files(folder, layer)
    stat = folder / f"stat_ecp5_{layer}.txt"
    if stat.exists() and all(stat.stat().st_mtime > (folder / f).stat().st_mtime for f in files):
        return {**summarize(parse_stat(stat.read_text()), "ecp5"), "seconds": None}
    t0 = time.perf_counter()
    err = _yosys(folder, f"read_verilog -sv {' '.join(files)}; synth_ecp5 -top {layer}; tee -q -o {stat.name} stat",
                 limit)
    if err:
        return {"error": err}
    return {**summarize(parse_stat(stat.read_text()), "ecp5"), "seconds": time.perf_counter() - t0}


def _layer_files(folder: Path, layer: str) -> list[str]:
    """The design's files a layer module needs: all but the top's and the other layers' (yosys reads every
    file it is given: a big neighbour, such as a popcount input layer, would cost time or crash yosys-wasm)."""
    iface = json.loads((folder / "interface.json").read_text())
    others = {f"{la['name']}.v" for la in iface.get("layers", []) if la["name"] != layer} | {f"{iface['top']}.v"}
    return [f for f in iface["files"] if f not in others]


def _yosys(folder: Path, script: str, limit: float) -> str | None:
    """Run a yosys script in ``folder``: None, or what went wrong."""
    from codesign.rtl.synth import yosys_cmd

    try:
        p = subprocess.run([yosys_cmd(), "-q", "-p", script], cwd=folder, capture_output=True, text=True,
                           timeout=limit)
    except subprocess.TimeoutExpired:
        return f"yosys stopped after {limit:.0f} s"
    return f"yosys failed: {(p.stdout + p.stderr)[-300:]}" if p.returncode else None


_GENERATED: set[Path] = set()
FOLDED_ONE_FORM = "none: folded layers keep the threshold ROM (choose_forms), both settings give the same Verilog"


def _layer_fmax(folder: Path, layer: str, limit: float) -> dict:
    """Placement fmax of one layer module (nextpnr-ecp5 ``--85k --out-of-context --no-route``, seed 1, as the
    peers bench): the layer inside codesign's out-of-context wrapper (registered input shift register and
    output register, :func:`codesign.fpga.wrappers.ooc_top`), so every path through it is register to register;
    in its own folder ``fmax_<layer>``, reused while no source file changed."""
    import re
    import shutil

    from bench.peers import place_fmax
    from codesign.fpga.wrappers import OOC_TOP, ooc_top
    from codesign.rtl.interface import Stream, load_interface

    iface = load_interface(folder)
    files = _layer_files(folder, layer)
    src = (folder / f"{layer}.v").read_text()
    w = {m.group(2): int(m.group(1)) + 1 for m in re.finditer(r"wire \[(\d+):0\] (in_data|out_data)", src)}
    port = {"tdata": "", "tvalid": "", "tready": None, "signed": False, "scale_exp": 0, "shape": ()}
    lay = replace(iface, top=layer, input=Stream(**{**port, "tdata": "in_data", "tvalid": "in_valid",
                                                   "tready": "in_ready", "fields": w["in_data"], "bits": 1}),
                  output=Stream(**{**port, "tdata": "out_data", "tvalid": "out_valid", "tready": "out_ready",
                                   "fields": w["out_data"], "bits": 1}))
    sub = folder / f"fmax_{layer}"
    sub.mkdir(exist_ok=True)
    for f in files:
        if not (sub / f).exists() or (sub / f).read_bytes() != (folder / f).read_bytes():
            shutil.copy2(folder / f, sub / f)
    top = sub / f"{OOC_TOP}.v"
    if not top.exists() or top.read_text() != ooc_top(lay):
        top.write_text(ooc_top(lay))
    srcs = [*files, top.name]
    pnr_in = sub / "pnr_in.json"
    if not (pnr_in.exists() and all(pnr_in.stat().st_mtime > (sub / f).stat().st_mtime for f in srcs)):
        err = _yosys(sub, f"read_verilog -sv {' '.join(srcs)}; synth_ecp5 -top {OOC_TOP} -json pnr_in.json", limit)
        if err:
            return {"error": err}
    r = place_fmax(sub, (1,))
    return {"fmax_mhz": r["median_mhz"]} if r["median_mhz"] else {"error": f"nextpnr: {r}"}


def forms_step(ctx: Ctx, spec: Spec, model, synth: str = "", prev: dict | None = None) -> dict:
    """Per layer with a threshold epilogue: its thresholds per channel, whether a multiply-shift form exists,
    the cost estimates and ``auto``'s pick; ``synth``: yosys cells of the layer module in each form, of
    the ``first`` layer or of the ``rest`` (measurements in ``prev`` are kept)."""
    from codesign.rtl import generate
    from codesign.rtl.formats import MulShift, Thresholds
    from codesign.rtl.frontend.forms import choose_forms, mulshift_cost, threshold_cost

    auto = choose_forms(model, "auto", folded=False)
    ms = choose_forms(model, "mulshift", folded=False)
    layers = []
    for ly, la, lm in zip(model.layers, auto.layers, ms.layers, strict=True):
        th = getattr(ly, "requant", None)
        if not isinstance(th, Thresholds):
            continue
        has_ms = isinstance(lm.requant, MulShift)
        old = next((d for d in (prev or {}).get("layers", []) if d["layer"] == ly.name), {})
        layers.append({**old, "layer": ly.name, "levels": th.levels, "mulshift_form": has_ms,
                       "cost_thresholds": threshold_cost(th, ly),
                       "cost_mulshift": mulshift_cost(lm.requant, lm) if has_ms else None,
                       "auto": "mulshift" if isinstance(la.requant, MulShift) else "thresholds"})
    res: dict[str, Any] = {"layers": layers}
    todo = [d for d in layers if d["mulshift_form"]]
    first = model.layers[0].name
    todo = [d for d in todo if (d["layer"] == first) == (synth == "first")]
    if not synth or not todo:
        return res
    base = ctx.runs / "real" / spec.folder
    # the first layers in the folded design: fully parallel, a 784-input layer is a popcount or adder tree
    # of 784 x 64 input bits per bit plane, bigger than the device, the same in both forms and hours of yosys
    arch = "folded" if synth == "first" else "parallel"
    opts = dict(spec.folded) if arch == "folded" else {"strategy": "latency"}
    dirs = {}
    for form in ("thresholds", "mulshift"):
        dirs[form] = base / f"rtl_{arch}_{form}"
        if dirs[form] not in _GENERATED:  # once per bench run (the first layers are synthesized last)
            generate(model, dirs[form], **{**opts, "epilogue": form})
            _GENERATED.add(dirs[form])
    for d in todo:
        d["design"] = (f"folded (reuse {spec.folded['reuse']}, pipeline {spec.folded.get('pipeline', 0)})"
                       if arch == "folded" else "fully parallel")
        if arch == "folded":  # choose_forms keeps the threshold ROM of folded layers: one form to measure
            d["synth_mulshift"] = {"skipped": FOLDED_ONE_FORM}
        for form in ("thresholds",) if arch == "folded" else ("thresholds", "mulshift"):
            log(f"real: synth_ecp5 {spec.name} {d['layer']} ({form})")
            d[f"synth_{form}"] = _layer_synth(dirs[form], d["layer"], SYNTH_LIMIT_S)
            log(f"real: nextpnr placement {spec.name} {d['layer']} ({form})")
            d[f"synth_{form}"]["place"] = _layer_fmax(dirs[form], d["layer"], SYNTH_LIMIT_S)
    return res


# ---------------------------------------------------------------------------------------------- driver
def run(ctx: Ctx) -> dict:
    names = ctx.models or (QUICK if ctx.quick else tuple(s.name for s in SPECS))
    specs = [s for s in SPECS if s.name in names]
    unknown = set(names) - {s.name for s in SPECS}
    if unknown:
        raise ValueError(f"bench real: unknown models {sorted(unknown)}; known: {[s.name for s in SPECS]}")
    saved = {k: os.environ.get(k) for k in ("CODESIGN_SIM_CACHE", "OBJCACHE")}
    # Verilator builds: a cache of this bench (a rerun reuses a build and says so), no ccache (cold builds)
    os.environ["CODESIGN_SIM_CACHE"] = str(ctx.runs / "real" / "sim-cache")
    os.environ["OBJCACHE"] = ""
    res: dict[str, dict] = {s.name: {} for s in specs}
    if ctx.resume or ctx.render_only:  # keep the steps an earlier run finished
        res.update({k: v for k, v in _saved(ctx).items() if k in res})
    state: dict[str, list] = {"pending": [], "failed": [], "kept": [], "not_run": []}
    try:
        _run(ctx, specs, res, state)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    bad = list(state["failed"])
    bad += [f"{m} golden: {d['golden']['qonnx_mismatches']} mismatches vs execute_onnx" for m, d in res.items()
            if d.get("golden", {}).get("qonnx_mismatches")]
    bad += [f"{m} {a}: {r['mismatches']} mismatches (first vectors {r['first_bad']})"
           for m, d in res.items() for a, r in d.get("rtl", {}).items() if r.get("mismatches")]
    bad += [f"{m} {a}: RTL not verified: {r['error']}" for m, d in res.items() for a, r in d.get("rtl", {}).items()
            if r.get("error") and not r.get("over_limit") and not r.get("unsupported")]
    for m, d in res.items():
        r = d.get("side", {}).get("rtl", {})
        if "error" in r or r.get("mismatches") or r.get("vs_golden"):
            bad.append(f"{m} side by side: RTL vs execute_onnx/golden: {r}")
    if bad:
        raise RuntimeError("bench real: " + "; ".join(bad))
    return res


def _done(kind: str, arch: str, d: dict) -> bool:
    """Whether ``d`` (a model's results, from an earlier run with ``--resume``) holds step ``kind``/``arch``."""
    if kind in ("golden", "forms", "side"):
        return kind in d
    if kind == "rtl":
        r = d.get("rtl", {}).get(arch)
        return bool(r) and ("mismatches" in r or r.get("over_limit") or r.get("unsupported"))
    layers = [ly for ly in d.get("forms", {}).get("layers", []) if ly["mulshift_form"]]
    first = layers[0]["layer"] if layers else None
    todo = [ly for ly in layers if (ly["layer"] == first) == (arch == "first")]
    return bool(todo) and all("synth_mulshift" in ly for ly in todo)


def _saved(ctx: Ctx) -> dict[str, dict]:
    """The steps an earlier run recorded: ``<runs>/bench_real.json``, else the copy kept in the repository
    (docs/results/bench_real.json, written by full runs), so that a fresh checkout can resume a long run."""
    from bench.audit import RESULTS

    here = ctx.runs / "bench_real.json"
    if here.exists():
        return json.loads(here.read_text())
    kept = RESULTS / "bench_real.json"
    return json.loads(kept.read_text())["models"] if kept.exists() else {}


def _save(ctx: Ctx, res: dict[str, dict]) -> None:
    """After every step: ``<runs>/bench_real.json`` and, for a full run that writes the doc, the repository's
    copy (the figures of the section, with the command; no path of this machine)."""
    import datetime as dt

    from bench import results

    ctx.runs.mkdir(parents=True, exist_ok=True)
    (ctx.runs / "bench_real.json").write_text(json.dumps(res, indent=1, default=str))
    if ctx.write_doc and not ctx.quick:
        results._write("bench_real", {"command": ctx.command,
                                      "measured": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                      "models": json.loads(json.dumps(res, default=str))})


def _run(ctx: Ctx, specs: list[Spec], res: dict[str, dict], state: dict) -> None:
    quick = ctx.quick
    # the order: cheap and small first, the big fully parallel SFC builds and CNV last
    steps: list[tuple[str, Spec, str]] = []
    small = [s for s in specs if not s.name.startswith(("SFC", "CNV"))]
    big = [s for s in specs if s.name.startswith("SFC")]
    cnv = [s for s in specs if s.name.startswith("CNV")]
    steps += [("golden", s, "") for s in small + big]
    steps += [("forms", s, "") for s in small + big]
    steps += [("rtl", s, a) for s in small for a in ("parallel", "folded")]
    steps += [("side", s, "") for s in small]  # golden, RTL, hls4ml on the same inputs vs execute_onnx
    steps += [("rtl", s, a) for s in big[:1] for a in ("folded", "parallel")]  # how long an SFC build takes
    steps += [(k, s, a) for s in cnv for k, a in (("forms", ""), ("rtl", "parallel"))]  # lowering CNV
    synth = sorted((s for s in small + big if s.synth and not quick), key=lambda s: s.name == "TFC_1W2A")
    steps += [("synth", s, "rest") for s in synth]  # the hidden layers (about 40 s of yosys per layer and form)
    steps += [("synth", s, "first") for s in synth]  # the big input layers
    steps += [("rtl", s, "folded") for s in big[1:]]
    steps += [("golden", s, "") for s in cnv]
    steps += [("rtl", s, "parallel") for s in big[1:]]
    models: dict[str, Any] = {}
    state["pending"] = [f"{k} {s.name} {a}".strip() for k, s, a in steps]
    for kind, spec, arch in steps:
        d = res[spec.name]
        what = f"{kind} {spec.name} {arch}".strip()
        state["pending"].remove(what)
        if "error" in d and kind != "golden":  # the model could not be lowered
            continue
        if _done(kind, arch, d):  # --resume: an earlier run measured it
            state["kept"].append(what)
            continue
        if getattr(ctx, "render_only", False):
            state["not_run"].append(what)
            continue
        if kind == "rtl" and arch == "parallel" and spec.name.startswith("SFC"):
            over = next((m for m, r in res.items() if r.get("rtl", {}).get("parallel", {}).get("over_limit")), None)
            if over:
                lim = next(s.sim_limit_s for s in SPECS if s.name == over)
                d.setdefault("rtl", {})["parallel"] = {"skipped": f"not run: {over} fully parallel went over the "
                                                                  f"{lim} s limit"}
                _render(ctx, res, state)
                continue
        log(f"real: {what}")
        try:
            path = model_path(ctx, spec)
            if kind == "golden":
                d["golden"] = golden_step(ctx, spec, path)
            elif kind == "side":
                d["side"] = side_step(ctx, spec, path)
            else:
                if spec.name not in models:
                    t0 = time.perf_counter()
                    models[spec.name] = lowered(path, spec)
                    d["lower_s"] = time.perf_counter() - t0
                m = models[spec.name]
                if kind == "forms":
                    d["forms"] = forms_step(ctx, spec, m)
                elif kind == "synth":
                    d["forms"] = forms_step(ctx, spec, m, synth=arch, prev=d.get("forms"))
                else:
                    r = rtl_step(ctx, spec, m, arch)
                    r["over_limit"] = "stopped after" in r.get("error", "")
                    d.setdefault("rtl", {})[arch] = r
        except Exception as e:  # noqa: BLE001 - an unsupported model is a result to report
            traceback.print_exc()
            msg = f"{type(e).__name__}: {str(e)[:500]}"
            if not isinstance(e, UnsupportedError):
                state["failed"].append(f"{what}: {msg}")
            if kind in ("golden", "synth"):
                d[f"{kind}_error"] = msg
            elif kind == "rtl":
                d.setdefault("rtl", {})[arch] = {"error": msg, "unsupported": isinstance(e, UnsupportedError)}
            else:
                d["error"] = msg
        _save(ctx, res)
        _render(ctx, res, state)
    # the steps after the last measured one may all have been kept (--resume): the section is final now
    state["pending"] = state["not_run"] if ctx.render_only else []
    _render(ctx, res, state)


# ---------------------------------------------------------------------------------------------- report
def _s(v: Any) -> str | None:
    return None if v is None else f"{v:.1f}"


def _stopped_at(work: Path) -> str:
    """Where a stopped Verilator run was, from its work folder (``run_codes``' ``<rtl>_sim``): the build's
    duration (wrapper written -> build.log's last write) and how many vectors had come out."""
    wrapper, blog, slog, out = (work / f for f in ("codesign_stream_tb.v", "build.log", "sim.log", "out.txt"))
    if not (wrapper.exists() and blog.exists()) or blog.stat().st_mtime < wrapper.stat().st_mtime:
        return ""
    if not slog.exists() or slog.stat().st_mtime < blog.stat().st_mtime:
        return "; stopped in the Verilator build"
    n = sum(1 for _ in out.open("rb")) if out.exists() else 0
    return (f"; the Verilator build took {blog.stat().st_mtime - wrapper.stat().st_mtime:.0f} s, the simulation had "
            f"returned {n:,} vectors when stopped")


def _side_cells(r: dict) -> list[Any]:
    if "refused" in r:
        return [f"refused: {r['refused'][:120]}", "-", "-"]
    if "error" in r:
        return [f"**failed**: {r['error'][:120]}", "-", "-"]
    return [r["mismatches"], f"{r['max_abs_diff']:.3g}", r["top_class_differs"]]


def _render(ctx: Ctx, res: dict[str, dict], state: dict) -> None:
    g_rows, r_rows, f_rows, s_rows, errors = [], [], [], [], []
    for name, d in res.items():
        sd = d.get("side")
        if sd:
            s_rows.append([name, sd["inputs"], *_side_cells(sd["golden"]), *_side_cells(sd["rtl"]),
                           *_side_cells(sd["hls4ml"]), _s(sd["hls4ml"].get("compile_s"))])
        if "error" in d:
            errors.append(f"**{name}**: not supported: `{d['error']}`")
        if "golden_error" in d:
            errors.append(f"**{name}** golden model: `{d['golden_error']}`")
        g = d.get("golden")
        if g:
            tail = g.get("qonnx_tail_max_abs_diff")
            g_rows.append([name, g["grid"], g["inputs"], g["qonnx_mismatches"], g["qonnx_compare"],
                           f"{tail:.3g}" if tail is not None else "-", g.get("qonnx_top_class_differs", "-"),
                           _s(g["golden_s"]), _s(g["reference_s"])])
        for arch, r in d.get("rtl", {}).items():
            o = r.get("options", {})
            label = ("fully parallel" if arch == "parallel" else
                     f"folded (reuse {o.get('reuse')}, pipeline {o.get('pipeline')})")
            if o.get("io") == "stream":
                label += ", io stream"
            if "skipped" in r:
                r_rows.append([name, label] + ["-"] * 9 + [r["skipped"]])
                continue
            if "error" in r:
                note = r["error"] + (_stopped_at(ctx.runs / "real" / name.replace(".", "_") / f"rtl_{arch}_sim")
                                     if r.get("over_limit") else "")
                r_rows.append([name, label, r.get("vectors"), "**not checked**", r.get("latency_iface"),
                               r.get("ii_iface"), "-", "-", "-", "-", r.get("verilog_mb"), note])
                continue
            lat = f"{r['latency_iface']} / {r['latency']}"
            ii = f"{r['ii_iface']} / {r['ii']}"
            build = f"{r['build_s']:.1f}{' (cached)' if r.get('build_cached') else ''}"
            vps = r["vectors"] / r["sim_s"] if r.get("sim_s") else None
            r_rows.append([name, label, r["vectors"], r["mismatches"], lat, ii, build, _s(r.get("build_cpu_s")),
                           _s(r["sim_s"]), round(vps) if vps else None, r["verilog_mb"], ""])
        for ly in d.get("forms", {}).get("layers", []):
            design = ly.get("design") or ("fully parallel" if ly.get("synth_thresholds") else "-")
            row = [name, ly["layer"], design, ly["levels"], ly["mulshift_form"], ly["cost_thresholds"],
                   ly["cost_mulshift"], ly["auto"]]
            for form in ("thresholds", "mulshift"):
                s = ly.get(f"synth_{form}")
                if s is None:
                    row += ["-", "-", "-", "-"]
                elif "error" in s or "skipped" in s:
                    row += [s.get("error") or s["skipped"], "-", "-", "-"]
                else:
                    pl = s.get("place") or {}
                    row += [s["LUT4"], s["CCU2"], s["FF"],
                            _s(pl["fmax_mhz"]) if pl.get("fmax_mhz") else pl.get("error", "-")[:120]]
            f_rows.append(row)
        if "synth_error" in d:
            errors.append(f"**{name}** synthesis: `{d['synth_error']}`")
    body = "#### Golden model vs qonnx `execute_onnx`\n\n"
    body += table(["model", "inputs on the grid of", "inputs", "mismatches", "comparison", "largest float-tail diff",
                   "top class differs", "golden s", "execute_onnx s"], g_rows)
    body += ("\n\nTFC/SFC rows without `.onnx` are Brevitas `bnn_pynq` exports with random weights (seed 0) and "
             "randomized BatchNorm statistics (`codesign.real_models.bnn_pynq`); `.onnx` rows are the public files "
             "in models/qonnx. The reference runs the cleaned model, as tests/test_golden_real.py does.")
    body += "\n\n#### RTL vs the IR in Verilator\n\n"
    body += table(["model", "architecture", "vectors", "mismatches", "latency (interface / measured)",
                   "II (interface / measured)", "Verilator build s (wall)", "build CPU s", "sim s (wall)",
                   "vectors/s", "Verilog MB", "note"], r_rows)
    runs = [s for s in SPECS if s.name in res]
    n_rtl = (f"{QUICK_RTL_N:,}" if ctx.quick else
             ", ".join(f"{n:,} ({', '.join(s.name for s in runs if s.rtl_n == n)})"
                       for n in sorted({s.rtl_n for s in runs}, reverse=True)))
    limits = ", ".join(f"{lim:,} s ({', '.join(s.name for s in runs if s.sim_limit_s == lim)})"
                       for lim in sorted({s.sim_limit_s for s in runs}))
    body += (f"\n\nVectors: {n_rtl} random codes of the core input grid plus 4 corners (all lowest, all highest, "
             "both alternating patterns), through `codesign.verify.run_codes` (stream testbench, input gaps and "
             "output backpressure in the second half), compared with `Model.run` of the IR. Builds are cold: this "
             f"bench's own build cache, ccache off; `(cached)` marks a build reused from an earlier run of the bench. "
             f"Each build + simulation runs in a child process stopped after a time limit: {limits}.")
    body += ("\n\n#### The same inputs through codesign's golden model, codesign's RTL and hls4ml, against "
             "`execute_onnx`\n\n")
    body += table(["model", "inputs", "golden: mismatches", "golden: largest diff", "golden: top class differs",
                   "RTL: mismatches", "RTL: largest diff", "RTL: top class differs", "hls4ml: mismatches",
                   "hls4ml: largest diff", "hls4ml: top class differs", "hls4ml compile s"], s_rows)
    body += ("\n\nThe golden model's inputs (above) through each implementation, compared with `execute_onnx` on "
             "the cleaned model. Mismatches: vectors whose output differs, exactly where the output is a quantizer's, "
             "beyond the float-tail bound (2^-14 of max(1, |output|)) where the graph ends in float post-processing. "
             "RTL: the fully parallel design of the table above in Verilator, fed by the golden model's host "
             "pre-processing and followed by its host post-processing, as a host would run it (it also equals the "
             "golden model's outputs bit for bit, or the bench fails). hls4ml: `hls4ml.converters."
             "convert_from_onnx_model` (Vitis backend, `io_parallel`, precisions from `config_from_onnx_model` "
             "with `granularity='name'`, default `fixed<32,16>`: `codesign.hls.convert`), `compile()` and "
             "`predict()` on the same inputs; a refusal is reported as such.")
    body += "\n\n#### Threshold epilogues: multiply-shift form, `auto`'s pick and ECP5 cells\n\n"
    body += table(["model", "layer", "design synthesized", "thresholds per channel", "multiply-shift form exists",
                   "estimate thresholds "
                   "(adder bits)", "estimate mul-shift", "`auto` picks", "LUT4 thresholds", "CCU2 thresholds",
                   "FF thresholds", "fmax MHz thresholds", "LUT4 mul-shift", "CCU2 mul-shift", "FF mul-shift",
                   "fmax MHz mul-shift"], f_rows)
    body += ("\n\nOne row per fully parallel layer with a threshold epilogue (BatchNorm or a float scale before a "
             "quantizer). A layer with one threshold per channel (1-bit activations) keeps it: it has no "
             "multiply-shift form (`codesign.rtl.frontend.forms`). The estimates are the adder-bit costs `auto` "
             "compares. Cells: yosys (YoWASP) `synth_ecp5 -top <layer>` of that layer's module alone (adder tree and "
             "epilogue), generated with `epilogue=\"thresholds\"` and with `epilogue=\"mulshift\"`: the hidden layers"
             " from the fully parallel design. The first layers are not compared: fully parallel, a 784-input first "
             "layer sums 784 x 64 input bits per bit plane (the same in both forms, bigger than the ECP5-85F and "
             "hours of yosys), and in the folded design of the RTL table a layer keeps its threshold ROM (no "
             "multiply-shift form), so only that form's cells are given; `-` where not synthesized. fmax: "
             "nextpnr-ecp5 `--85k --out-of-context --no-route` (placement estimate, seed 1, as the peers bench) of "
             "the layer module inside codesign's out-of-context wrapper (`codesign.fpga.wrappers.ooc_top`: registered"
             " inputs and outputs, so the layer's logic lies between two registers); the cell counts are of the layer"
             " alone.")
    if ctx.quick:
        body += "\n\nQuick mode: two models, fewer vectors, no synthesis."
    if errors:
        body += "\n\n#### Not supported / errors\n\n" + "\n".join(f"- {e}" for e in errors)
    if ctx.render_only:
        body += ("\n\nRendered from runs/bench/bench_real.json or docs/results/bench_real.json (`--render`), "
                 "nothing measured by this command: every figure above was measured by earlier runs of this bench "
                 "(`python -m bench real`, continued by `python -m bench real --resume` runs)"
                 + (", stopped where the next section says." if state["pending"] else "."))
    elif state["kept"]:
        body += ("\n\nResumed (`--resume`): these steps were measured by an earlier run of the bench (kept in "
                 "runs/bench/bench_real.json, or in its copy docs/results/bench_real.json when the checkout is "
                 "fresh): " + ", ".join(state["kept"]) + ".")
    if state["pending"]:
        body += ("\n\n**Incomplete**: this section is rewritten after every step; when it was last written these "
                 "steps had not run: " + ", ".join(state["pending"]) + ".")
    section(ctx, "real", "Real QONNX models made elsewhere", body)
