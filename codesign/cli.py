"""``codesign`` command line: one subcommand per stage, and ``flow`` that chains them.

Every stage command takes a run directory (``runs/<name>`` by default) and reads the previous
stage's artifacts from it, so stages can be re-run alone.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from codesign import __version__
from codesign import config as config_mod
from codesign.errors import CodesignError, VerificationError

app = typer.Typer(
    name="codesign",
    help="FPGA/accelerator co-design: QAT (power-of-two, sparsity) -> QONNX -> golden model -> "
    "Verilog -> cocotb bit-exact verification -> open-source bitstream -> energy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Inspect configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()
err = Console(stderr=True, soft_wrap=True)

RunArg = Annotated[Path, typer.Argument(help="run directory (made by `codesign flow` or `codesign train`)")]
DesignArg = Annotated[Path, typer.Argument(
    help="a run directory, or a folder written by `codesign rtl MODEL.onnx --out DIR`")]


def _cleaned(model: Path, out: Path, channels_last: bool = False) -> Path:
    """``model``, or, when it is not cleaned yet (a QONNX file made elsewhere), its cleaned copy
    ``out/model.onnx`` (codesign.graph.clean), which the design's interface.json then names. ``channels_last``
    (``--io stream``: the line buffers stream channels-last feature maps): conv layers converted to channels-last,
    the graph input left as it is."""
    import onnx

    from codesign.graph.clean import clean_qonnx, is_clean
    from codesign.run import atomic_path

    try:
        proto = onnx.load(str(model))
    except Exception as e:  # noqa: BLE001 - a corrupt or missing file is a user error
        raise CodesignError(f"cannot read ONNX model {model}: {e}") from None
    if is_clean(proto):
        return model
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.onnx") as tmp:
        onnx.save(clean_qonnx(proto, channels_last=channels_last, input_channels_last=False), str(tmp))
    console.print(f"cleaned {model} -> {out / 'model.onnx'} (qonnx cleanup, Gemm -> MatMul, conv bias split)")
    return out / "model.onnx"


def _rtl_folder(target: Path) -> bool:
    """A folder with a generated design (interface.json) that is not a run directory."""
    return (target / "interface.json").exists() and not (target / "config.yaml").exists()
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="override a config key: section.key=value (repeatable)")]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings only")] = False,
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
) -> None:
    if version:
        console.print(f"codesign {__version__}")
        raise typer.Exit()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("codesign").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not verbose:  # third-party loggers that set their own INFO level (cocotb's runner) stay quiet
        for h in logging.getLogger().handlers:
            h.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.startswith("codesign"))
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore")  # third-party deprecation noise (brevitas, qonnx, torch.onnx)


def _load(name: str | None, sets: list[str] | None) -> config_mod.Config:
    overrides = dict(config_mod.parse_override(s) for s in sets or [])
    return config_mod.load(name, overrides)


def _run_stage(stage: str, run_dir: Path) -> None:
    from codesign import flow
    from codesign.run import RunDir

    rd = RunDir(run_dir)
    cfg = flow.run_config(rd)
    figures = flow.run_step(rd, cfg, flow.get_step(stage))
    _print_figures(stage, figures)


def _print_figures(title: str, figures: dict) -> None:
    t = Table(title=title, show_header=False)
    for k, v in figures.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict | list):
            continue
        t.add_row(k, str(v))
    console.print(t)


# ---- the pipeline ---------------------------------------------------------------------------
@app.command()
def flow(
    model: Annotated[str | None, typer.Argument(help="zoo model name or config YAML (default: digits_mlp)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<name>)")] = None,
    until: Annotated[str | None, typer.Option(help="stop after this stage")] = None,
    skip_fpga: Annotated[bool, typer.Option("--skip-fpga", help="stop after verification")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="run every stage again (default: reuse the stages "
                                        "that finished in --out with the same config and intact files)")] = False,
    set_: SetOpt = None,
) -> None:
    """Run the whole flow: train, (prune), export, golden, rtl, verify, fpga, energy.

    Re-run on the same --out (after a crash, a kill, or with a changed config), it resumes: the stages
    that finished with the same config and whose files still match the manifest's SHA-256 are reused."""
    from codesign import flow as flow_mod
    from codesign.report import print_summary

    cfg = _load(model, set_)
    skip = ("fpga", "energy") if skip_fpga else ()
    rd = flow_mod.run_flow(cfg, out, until=until, skip=skip, resume=not fresh)
    print_summary(rd)


@app.command()
def train(
    model: Annotated[str | None, typer.Argument(help="zoo model name or config YAML")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<name>)")] = None,
    set_: SetOpt = None,
) -> None:
    """Quantization-aware training (Brevitas, power-of-two scales / shift weights)."""
    from codesign import flow as flow_mod

    cfg = _load(model, set_)
    flow_mod.run_flow(cfg, out, until="train", resume=False)


@app.command()
def prune(
    run_dir: RunArg,
    criterion: Annotated[str | None, typer.Option(help="l1 | l2 | fpgm | taylor | random | bn_gamma | energy")] = None,
    sparsity: Annotated[float | None, typer.Option(help="fraction of hidden neurons/filters removed")] = None,
    schedule: Annotated[str | None, typer.Option(help="oneshot | iterative | agp | energy_aware (Yang et al.)")] = None,
    granularity: Annotated[str | None, typer.Option(
        help="unit (whole neurons/filters removed) | "
             "weight (single weights zeroed: free in fully parallel RTL)")] = None,
    energy_ratio: Annotated[float | None, typer.Option(
        help="energy_aware: stop at this many times lower energy")] = None,
    steps: Annotated[int | None, typer.Option(help="pruning steps of iterative/agp")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="fine-tuning epochs (QAT)")] = None,
    finetune_lr: Annotated[float | None, typer.Option(help="fine-tuning learning rate (default train.lr)")] = None,
    scope: Annotated[str | None, typer.Option(help="layer (same fraction per layer) | global")] = None,
    budget_params: Annotated[int | None, typer.Option(help="budget mode: at most N parameters")] = None,
    budget_pj: Annotated[float | None, typer.Option(
        help="budget mode: at most E pJ per inference (energy model)")] = None,
    slimming_l1: Annotated[float | None, typer.Option(help="bn_gamma: L1 penalty on the BatchNorm gammas")] = None,
) -> None:
    """Pruning with fine-tuning: structured (whole neurons/filters removed) or per weight, by a criterion or
    energy-aware (Yang et al.); options override `prune:` of the run's config."""
    from codesign import flow as flow_mod
    from codesign.run import RunDir

    rd = RunDir(run_dir)
    cfg = flow_mod.run_config(rd)
    upd = {k: v for k, v in dict(criterion=criterion, sparsity=sparsity, schedule=schedule, granularity=granularity,
                                 energy_ratio=energy_ratio, steps=steps,
                                 finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, scope=scope,
                                 budget_params=budget_params, budget_pj=budget_pj,
                                 slimming_l1=slimming_l1).items() if v is not None}
    if budget_params is not None:
        upd["budget_pj"] = None
    if budget_pj is not None:
        upd["budget_params"] = None
    if upd or not cfg.prune.enabled:
        cfg = config_mod.from_dict({**cfg.model_dump(), "prune": {**cfg.prune.model_dump(), **upd, "enabled": True}},
                                   "command line")
        flow_mod.save_config(rd, cfg)
    _print_figures("prune", flow_mod.run_step(rd, cfg, flow_mod.get_step("prune")))


@app.command()
def export(run_dir: RunArg) -> None:
    """Export the trained model to QONNX (raw + cleaned) and check it against PyTorch."""
    _run_stage("export", run_dir)


@app.command()
def golden(
    target: Annotated[Path, typer.Argument(help="a run directory, or a QONNX .onnx file")],
    inputs: Annotated[Path | None, typer.Option(help="input .npy (real values on the input grid)")] = None,
    out: Annotated[Path | None, typer.Option(help="output .npy")] = None,
    codes: Annotated[bool, typer.Option(help="write integer codes instead of real values")] = False,
    trace: Annotated[Path | None, typer.Option(help="write every intermediate tensor into DIR")] = None,
    input_precision: Annotated[str | None, typer.Option(
        help="grid of a graph input that no quantizer defines, hls4ml syntax, e.g. 'ap_fixed<16,6>'")] = None,
) -> None:
    """Run the exact integer golden model (on a run directory, or on any QONNX file)."""
    if target.suffix == ".onnx":
        from codesign.golden import golden_cli

        if inputs is None or out is None:
            raise CodesignError("with a .onnx file, --inputs X.npy and --out Y.npy are required")
        golden_cli(target, inputs, out, codes, trace, input_precision)
    else:
        _run_stage("golden", target)


@app.command()
def rtl(
    target: Annotated[Path, typer.Argument(help="a run directory, or a QONNX .onnx file")],
    out: Annotated[Path | None, typer.Option(help="output folder (default RUN_DIR/rtl)")] = None,
    strategy: Annotated[str | None, typer.Option(help="latency (fully parallel) | resource (folded)")] = None,
    reuse: Annotated[int | None, typer.Option(help="reuse factor for the folded architecture")] = None,
    multiplier: Annotated[str | None, typer.Option(help="dsp | shiftadd, for non-power-of-two weights")] = None,
    io: Annotated[str | None, typer.Option(help="vector (one input vector per beat) | stream (one pixel per beat, "
                                                "conv/pool layers on line buffers)")] = None,
    share: Annotated[bool | None, typer.Option("--share/--no-share", help="fully parallel layers: compute shift-add "
                                               "terms that several outputs have in common once (default: on)")] = None,
    pipeline: Annotated[int | None, typer.Option(help="register stages per adder tree (default 1); beyond one per "
                                                      "adder level, up to 2 more inside each requantizer")] = None,
    copies: Annotated[int | None, typer.Option(help="fully parallel layers: register copies of every pipeline "
                                                    "register that several outputs read (default 1): cuts the "
                                                    "fan-out of input registers in deep pipelines")] = None,
    popcount: Annotated[str | None, typer.Option(
        help="auto | on | off: fully parallel layers of +-c weights as popcounts (hw/cs_popcount.v) over the input "
        "bit planes (auto: fan-in >= 256)")] = None,
    flow_control: Annotated[str | None, typer.Option(
        help="stall (backpressure enables every register, default) | credit (valid-only pipeline, output FIFO, "
        "registered credit ready)")] = None,
    input_precision: Annotated[str | None, typer.Option(
        help="grid of a graph input that has no quantizer, hls4ml syntax: 'ap_fixed<16,6>' (config "
        "quant.input_precision)")] = None,
) -> None:
    """Generate Verilog for the accelerator (a run directory, or any QONNX file: float pre-/post-processing
    around the first and last quantizer stays on the host, BatchNorm and float scales become thresholds)."""
    upd = {k: v for k, v in dict(strategy=strategy, reuse=reuse, multiplier=multiplier, io=io, share=share,
                                 popcount=popcount,
                                 pipeline=pipeline, copies=copies, flow_control=flow_control).items()
           if v is not None}
    if target.suffix == ".onnx":
        from codesign.rtl import generate

        if out is None:
            raise CodesignError("with a .onnx file, --out DIR is required")
        iface = generate(_cleaned(target, out, channels_last=io == "stream"), out, input_precision=input_precision,
                         **upd)
        console.print(f"wrote {out} (latency {iface['latency_cycles']} cycles, II {iface['ii']})")
        return
    from codesign import flow as flow_mod
    from codesign.run import RunDir

    if out is not None:  # a run directory's stages write into it: never ignore --out silently
        raise CodesignError(f"--out applies to a .onnx file; a run directory's RTL is written to {target}/rtl "
                            "(copy the run directory first to keep both designs)")
    rd = RunDir(target)
    cfg = flow_mod.run_config(rd)
    if upd or input_precision:
        d = {**cfg.model_dump(), "rtl": {**cfg.rtl.model_dump(), **upd}}
        if input_precision:
            d["quant"] = {**cfg.quant.model_dump(), "input_precision": input_precision}
        cfg = config_mod.from_dict(d, "command line")
        flow_mod.save_config(rd, cfg)
    _print_figures("rtl", flow_mod.run_step(rd, cfg, flow_mod.get_step("rtl")))


@app.command()
def verify(
    run_dir: DesignArg,
    vectors: Annotated[int | None, typer.Option(help="random vectors (default from config: 100000)")] = None,
    sim: Annotated[str | None, typer.Option(help="verilator | icarus")] = None,
    waves: Annotated[bool | None, typer.Option("--waves/--no-waves", help="dump waveforms (FST) and toggle counts "
                                               "(config verify.waves)")] = None,
    gate_level: Annotated[str | None, typer.Option(
        "--gate-level", help="simulate the yosys netlist instead of the RTL: generic | ecp5 | ice40 (vendor cell "
        "models) | none")] = None,
) -> None:
    """Simulate the RTL in cocotb and compare with the golden model, bit for bit (a run directory, or a folder
    from `codesign rtl MODEL.onnx --out DIR`: the golden model of the ONNX file its interface.json names)."""
    from codesign import flow as flow_mod
    from codesign.run import RunDir

    run_dir = run_dir.resolve()  # the simulator runs in its own folder: relative paths would not reach it
    if _rtl_folder(run_dir):
        from codesign.config import VerifyConfig
        from codesign.verify import summary
        from codesign.verify import verify as verify_fn

        v = VerifyConfig()
        res = verify_fn(run_dir, None, vectors=vectors if vectors is not None else v.random_vectors,
                        simulator=sim or v.simulator, out_dir=run_dir.parent / f"{run_dir.name}_verify",
                        gate_level=False if gate_level in (None, "none") else gate_level)
        console.print(summary(res))
        if not res["ok"]:
            raise VerificationError(f"RTL vs golden: {res['mismatches']} of {res['vectors']} vectors mismatch"
                                    + "".join(f"; {c}" for c in res["checks_failed"]))
        return

    rd = RunDir(run_dir)
    cfg = flow_mod.run_config(rd)
    gl: bool | str | None = None
    if gate_level is not None:
        gl = gate_level.strip().lower()
        gl = False if gl in ("none", "off", "false", "rtl") else True if gl == "true" else gl
    upd = {k: v for k, v in dict(random_vectors=vectors, simulator=sim, gate_level=gl, waves=waves).items()
           if v is not None}
    if upd:
        cfg = config_mod.from_dict({**cfg.model_dump(), "verify": {**cfg.verify.model_dump(), **upd}}, "command line")
    _print_figures("verify", flow_mod.run_step(rd, cfg, flow_mod.get_step("verify")))


@app.command()
def fpga(
    run_dir: DesignArg,
    target: Annotated[str | None, typer.Option(help="ecp5-85f | ice40-up5k | xilinx-estimate")] = None,
    board: Annotated[str | None, typer.Option(help="none | ulx3s | icebreaker")] = None,
    clock_mhz: Annotated[float | None, typer.Option(help="target clock in MHz")] = None,
    router: Annotated[str | None, typer.Option(help="nextpnr router: router1 (default) | router2 (large, "
                                               "congested designs that router1 does not finish)")] = None,
    seed: Annotated[int | None, typer.Option(help="nextpnr placement seed (default 1)")] = None,
    reseed: Annotated[int | None, typer.Option(
        help="when router1 makes no headway on a placement (under 10% of its first 10,000 iterations route an "
             "arc for good), place again with the next seed, up to this many times (default 2; 0: route the "
             "first placement whatever it takes)")] = None,
    placement: Annotated[str | None, typer.Option(
        help="nextpnr placement: auto (default: board tops wirelength-driven first, out-of-context builds "
             "timing-driven) | timing | wirelength (large designs that congest when placed timing-driven)")] = None,
    placer: Annotated[str | None, typer.Option(
        help="nextpnr placer: heap (default) | static (electrostatic: spreads large designs that the router "
             "cannot finish on a heap placement, e.g. the hls4ml jet tagger fully parallel)")] = None,
) -> None:
    """Synthesize, place and route with yosys + nextpnr; write the bitstream and reports (a plain RTL folder
    is built into DIR_fpga/TARGET with the config defaults for what is not given)."""
    from codesign import flow as flow_mod
    from codesign.run import RunDir

    if _rtl_folder(run_dir):
        from codesign.config import FPGAConfig
        from codesign.fpga.builder import build

        given = dict(target=target, board=board, clock_mhz=clock_mhz, router=router, seed=seed, reseed=reseed,
                     placement=placement, placer=placer)
        f = FPGAConfig(**{k: v for k, v in given.items() if v is not None})
        out = run_dir.parent / f"{run_dir.name}_fpga" / f.target
        build(run_dir, out, target=f.target, board=f.board, clock_mhz=f.clock_mhz, seed=f.seed, progress=True,
              router=f.router, reseed=f.reseed, placement_mode=f.placement, placer=f.placer)  # prints its table
        return

    rd = RunDir(run_dir)
    cfg = flow_mod.run_config(rd)
    upd = {k: v for k, v in dict(target=target, board=board, clock_mhz=clock_mhz, router=router, seed=seed,
                                 reseed=reseed, placement=placement, placer=placer).items() if v is not None}
    if upd:
        cfg = config_mod.from_dict({**cfg.model_dump(), "fpga": {**cfg.fpga.model_dump(), **upd}}, "command line")
    _print_figures("fpga", flow_mod.run_step(rd, cfg, flow_mod.get_step("fpga")))


@app.command()
def energy(
    run_dir: DesignArg,
    activity: Annotated[bool | None, typer.Option("--activity/--no-activity", help="also simulate the RTL on the "
                                                  "test set and weigh toggles with yosys cell counts (needs "
                                                  "verilator/icarus + yosys; config energy.activity)")] = None,
    vectors: Annotated[int | None, typer.Option(help="test vectors simulated for --activity (config energy.vectors, "
                                                "default 1000)")] = None,
) -> None:
    """Estimate energy per layer and per inference (analytic; with --activity also from simulation toggles)."""
    from codesign import flow as flow_mod
    from codesign.run import RunDir

    if _rtl_folder(run_dir):
        from codesign.energy import design_energy

        if activity:
            raise CodesignError("--activity needs a run directory (the test set comes from its export stage)")
        _print_figures("energy", design_energy(run_dir, run_dir.parent / f"{run_dir.name}_energy"))
        return

    rd = RunDir(run_dir)
    cfg = flow_mod.run_config(rd)
    upd = {k: v for k, v in dict(activity=activity, vectors=vectors).items() if v is not None}
    if upd:
        cfg = config_mod.from_dict({**cfg.model_dump(), "energy": {**cfg.energy.model_dump(), **upd}}, "command line")
    _print_figures("energy", flow_mod.run_step(rd, cfg, flow_mod.get_step("energy")))


@app.command()
def hls(
    run_dir: RunArg,
    vectors: Annotated[int, typer.Option(help="random on-grid vectors besides the test set")] = 10_000,
) -> None:
    """Write the hls4ml Vitis HLS project for vendor tools and check its C simulation (g++) against the golden model."""
    from codesign import flow as flow_mod
    from codesign.hls import run_stage
    from codesign.run import RunDir

    rd = RunDir(run_dir)
    _print_figures("hls", run_stage(rd, flow_mod.run_config(rd), random_vectors=vectors))


@app.command()
def study(
    config: Annotated[Path, typer.Argument(help="study YAML (see codesign/study.py or docs/studies.md)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="study folder (default studies/<name>)")] = None,
    workers: Annotated[int, typer.Option(help="parallel worker processes on this machine")] = 1,
    storage: Annotated[str | None, typer.Option(
        help="Optuna storage URL shared by every worker, e.g. postgresql://user@dbhost:5432/studies (default: "
             "the study YAML's storage, else sqlite:///<study folder>/study.db)")] = None,
) -> None:
    """Run or resume a design-space / energy-aware pruning study (Optuna, SQLite or any SQLAlchemy URL).

    Workers on several machines: start the same command on each with the same --storage (a PostgreSQL
    server all of them reach) and a --out folder of their own; trials of a worker that dies are failed and
    replaced by the others."""
    from codesign.study import run_study

    d = run_study(config, out, workers, storage=storage)
    console.print(f"study folder {d}: trials.csv, pareto.csv, report.html")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory or a study folder")]) -> None:
    """Print the figures of a run (report.json); for a study folder, write its HTML report."""
    from codesign.report import print_summary, study_report
    from codesign.run import RunDir

    if (run_dir / "study.yaml").exists():
        r = study_report(run_dir)
        console.print(f"{run_dir}/report.html: {r['trials']} trials, {r['pareto']} on the Pareto front")
        return
    if not (run_dir / "report.json").exists():
        raise CodesignError(f"{run_dir}/report.json not found: not a run directory or study folder")
    print_summary(RunDir(run_dir))


@app.command()
def sensitivity(
    model: Annotated[str | None, typer.Argument(help="zoo model name or config YAML")] = None,
    budget: Annotated[int | None, typer.Option(
        help="total weight bits: suggest per-layer bit widths within it")] = None,
    epochs: Annotated[int, typer.Option(help="fine-tuning epochs per variant")] = 3,
    acts: Annotated[bool, typer.Option(help="also lower activation bits")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON")] = None,
    set_: SetOpt = None,
) -> None:
    """Per-layer precision sensitivity: lower one layer at a time, measure the accuracy drop, suggest bit widths."""
    from codesign.run import atomic_write_json
    from codesign.sensitivity import analyze, format_table

    r = analyze(_load(model, set_), finetune_epochs=epochs, acts=acts, budget_bits=budget)
    typer.echo(format_table(r))
    if json_out:
        atomic_write_json(json_out, r)


@app.command()
def models() -> None:
    """List the model zoo with parameter counts."""
    from codesign.zoo import param_count

    rows = []
    for name in config_mod.zoo_names():
        cfg = config_mod.load(name)
        w = cfg.quant.weight
        pr = f"{cfg.prune.sparsity:.0%} {cfg.prune.criterion}" if cfg.prune.enabled else "-"
        wl = w.scheme if w.scheme in ("binary", "ternary") else f"{w.scheme}{w.bits}"
        rows.append((name, cfg.data.dataset, _arch(cfg), wl, pr, f"{param_count(cfg):,}",
                     cfg.description.split(",")[0].split(":")[0].split(" (")[0]))
    t = Table(title="model zoo (models/*.yaml); params before pruning")
    for i, col in enumerate(("name", "dataset", "architecture", "weights", "pruned", "params")):
        t.add_column(col, no_wrap=True, min_width=max(len(col), *(len(r[i]) for r in rows)),
                     justify="right" if col == "params" else "left")
    t.add_column("description", overflow="fold")
    for r in rows:
        t.add_row(*r)
    console.print(t)


def _arch(cfg: config_mod.Config) -> str:
    m = cfg.model
    bn = " bn" if m.batchnorm else ""
    if m.builder == "mlp":
        return "mlp " + "-".join(str(h) for h in m.hidden) + bn
    return f"{m.builder} ch " + "-".join(str(c) for c in m.channels) + (
        " fc " + "-".join(str(h) for h in m.hidden) if m.hidden else "") + bn


@config_app.command("show")
def config_show(
    model: Annotated[str | None, typer.Argument(help="zoo model name or config YAML")] = None,
    set_: SetOpt = None,
) -> None:
    """Print the resolved config (defaults filled in, overrides applied)."""
    typer.echo(_load(model, set_).to_yaml(), nl=False)


_TERMINATED = threading.Event()  # SIGTERM (kill, a CI runner or a scheduler stopping the job) was received


def _on_sigterm(signum: int, frame: object) -> None:
    _TERMINATED.set()  # typer/click turn the interrupt into an exit code or Abort: the flag tells SIGTERM apart
    _kill_descendants()  # now: unwinding kills only the direct children and orphans theirs (make's compilers)
    raise KeyboardInterrupt


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; elsewhere none): the simulators, compilers and make
    processes that cocotb's runner starts for ``verify`` are not in the FPGA tool registry."""
    from pathlib import Path

    children: dict[int, list[int]] = {}
    try:
        entries = [d for d in Path("/proc").iterdir() if d.name.isdigit()]
    except OSError:
        return []
    for d in entries:
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_descendants() -> None:
    """SIGKILL every process below this one (yosys/nextpnr, verify's Verilator, make, compilers and
    simulation). No lock taken: also safe from the signal handler."""
    import os
    import signal

    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _interrupted() -> None:
    from codesign.fpga.toolchain import stop_running_tools

    stop_running_tools()  # and no tool starts after this (a board build thread)
    _kill_descendants()
    term = _TERMINATED.is_set()
    err.print("terminated" if term else "interrupted")
    sys.exit(143 if term else 130)


def main() -> None:
    """Entry point: user errors print one line and exit non-zero, without a traceback. SIGTERM and Ctrl-C stop
    the tool processes codesign started (yosys, nextpnr, Verilator and the simulations) before exiting
    (143 / 130)."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rv = app(standalone_mode=False)
    except CodesignError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        sys.exit(e.exit_code)
    except (click.exceptions.Exit, typer.Exit) as e:
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        _interrupted()
    # usage errors: a bad option, a missing argument
    except (click.ClickException, typer.exceptions.TyperException) as e:
        if hasattr(e, "show"):
            e.show()
        else:
            err.print(f"error: {e}")
        sys.exit(getattr(e, "exit_code", 2) or 2)
    if rv == 130 or _TERMINATED.is_set():  # typer returns an interrupt as exit code 130 (standalone_mode=False)
        _interrupted()
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
