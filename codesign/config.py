"""Run configuration: YAML files validated with pydantic.

A config names the dataset, the model architecture, the quantization scheme (per layer if wanted),
training, pruning, RTL, verification and FPGA options. Every section has defaults, so a zoo file
only says what differs. Unknown keys, wrong types and impossible values raise
:class:`~codesign.errors.ConfigError` naming the key path, e.g.
``quant.weight.bits: must be >= 1 (got -3)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from codesign.errors import ConfigError
from codesign.resources import models_dir

ZOO_DIR = models_dir()
DEFAULT_MODEL = "digits_mlp"

Rounding = Literal["ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO", "HALF_UP"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    dataset: Literal["digits", "mnist1d", "wine", "breast_cancer", "mnist", "fashion_mnist", "jets",
                     "synthetic_jets", "npz"] = "digits"
    path: str | None = Field(None, description="dataset npz: the .npz file with arrays x_train, y_train, x_test, "
                             "y_test (relative to the YAML's folder); the validation split comes out of x_train")
    layout: Literal["flat", "image", "signal"] = "flat"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    n_samples: int | None = Field(None, ge=10, description="subsample (for quick runs)")
    resize: int | None = Field(None, ge=2, le=64, description="image datasets (digits, mnist, fashion_mnist): "
                               "resample the square image to resize x resize pixels (bilinear, half-pixel centres, "
                               "deterministic), e.g. 28 turns the 8x8 digits into MNIST-sized 28x28 inputs")
    scale: Literal["signed", "unit"] = Field("signed", description="input value range: 'signed' = the dataset's "
                                             "[-1, 1] scaling (see codesign.data); 'unit' = (x + 1) / 2, in [0, 1] "
                                             "(raw pixel intensities, as FINN's MNIST models take them)")


class ModelConfig(_Strict):
    builder: Literal["mlp", "cnn1d", "cnn2d"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [32])
    channels: list[int] = Field(default_factory=lambda: [8, 16])
    kernel: int = Field(3, ge=1)
    stride: int = Field(1, ge=1)
    padding: int = Field(1, ge=0)
    pool: int = Field(2, ge=1)
    batchnorm: bool = Field(False, description="a BatchNorm between every hidden Linear/Conv (then bias-less) and "
                            "its activation quantizer, trained and exported as a BatchNormalization node (not folded; "
                            "the RTL turns it into integer thresholds). The output layer keeps its bias, no BatchNorm")
    input_affine: tuple[float, float] | None = Field(
        None, description="[a, b]: float pre-processing x * a + b before the input quantizer (exported as Mul + Add; "
        "the RTL runs it on the host), e.g. [2, -1] maps data.scale 'unit' inputs in [0, 1] onto [-1, 1]")
    # --- bring your own PyTorch model (codesign.importer); the builder fields above are then ignored ---
    module: str | None = Field(None, description="'file.py:ClassName': a float torch.nn.Module of the user's, "
                               "traced with torch.fx and mapped onto codesign's quantized layers (file relative "
                               "to the YAML's folder)")
    weights: str | None = Field(None, description="model.module: its trained state_dict (torch.save), relative to "
                                "the YAML's folder; empty: the constructor's random initialisation")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="model.module: constructor keyword arguments")
    input_shape: list[int] | None = Field(None, description="model.module: one sample's shape, e.g. [64] or "
                                          "[1, 8, 8] (must match the data)")
    units: dict[str, int] = Field(default_factory=dict, description="model.module: output units (neurons / "
                                  "filters) of some layers, e.g. {fc1: 24}, smaller than the module's own after "
                                  "structured pruning (the prune stage writes it; the kept weights are in its "
                                  "model.pt)")

    @model_validator(mode="after")
    def _positive(self) -> ModelConfig:
        for name in ("hidden", "channels"):
            for i, v in enumerate(getattr(self, name)):
                if v < 1:
                    raise ValueError(f"{name}[{i}] must be >= 1 (got {v})")
        for k, v in self.units.items():
            if v < 1:
                raise ValueError(f"units.{k} must be >= 1 (got {v})")
        if self.units and self.module is None:
            raise ValueError("units: only for an imported model (model.module); zoo models use hidden / channels")
        return self


class WeightQuant(_Strict):
    """Weight quantizer. ``fixed``: n-bit signed integers times a power-of-two scale.
    ``pot``: every weight is 0 or +-2^e; ``bits`` is the code width (sign + exponent code, one
    code for zero), so e spans 2^(bits-1)-1 consecutive exponents. ``ternary``: {0, +-s}, s a power of two.
    ``binary``: +-1 (BNN: sign with a straight-through estimator, latent weights clipped to [-1, 1]; constant
    scale 1; exported as ``BipolarQuant``; ``bits`` is ignored). ``float``: n-bit signed integers times a float
    (not power-of-two) scale from the max |w| statistic (Brevitas ``Int8WeightPerTensorFloat``)."""

    scheme: Literal["fixed", "pot", "binary", "ternary", "float"] = "fixed"
    bits: int = Field(8, ge=1, le=16)
    narrow: bool = True
    rounding: Rounding = "ROUND"
    per_channel: bool = Field(False, description="fixed/ternary/float: one scale per output channel (power-of-two "
                              "for fixed and ternary, float for float) instead of one per tensor")

    @model_validator(mode="after")
    def _check(self) -> WeightQuant:
        if self.scheme == "pot" and self.bits < 2:
            raise ValueError(f"power-of-two weights need bits >= 2 (sign + exponent code), got {self.bits}")
        if self.scheme in ("fixed", "float") and self.bits < 2:
            raise ValueError(f"{self.scheme} weights need bits >= 2, got {self.bits}")
        if self.per_channel and self.scheme in ("pot", "binary"):
            raise ValueError(f"per_channel: not available for {self.scheme} weights")
        return self


class ActQuant(_Strict):
    """Activation (or input) quantizer. Unsigned hidden activations follow a ReLU; signed ones have no ReLU
    (the quantizer's clamp is the non-linearity, a quantized hardtanh as in FINN's models). ``bits: 1`` with
    ``signed: true`` is a bipolar (+-1) sign activation (BNN, Brevitas ``SignedBinaryActPerTensorConst``:
    straight-through estimator, constant scale 1, exported as ``BipolarQuant``); 1-bit unsigned is {0, s}."""

    bits: int = Field(8, ge=1, le=16)
    signed: bool = False
    narrow: bool = False
    rounding: Rounding = "ROUND"
    scale: Literal["po2", "float"] = Field("po2", description="hidden activations: 'po2' = a learned power-of-two "
                                           "scale (fixed point); 'float' = a learned float scale (Brevitas "
                                           "*ActPerTensorFloat). Both start from runtime statistics. The input "
                                           "quantizer's scale is always the constant power of two covering [-1, 1]")
    learned: bool = Field(True, description="hidden activations: true = the scale is a parameter learned by "
                          "backpropagation after a statistics warm-up (a log2 parameter with straight-through rounding "
                          "for 'po2', as LSQ with a power-of-two step; a learned clipping range for 'float', as "
                          "PACT); false = the scale follows the running maximum of the activations and is not "
                          "learned (plain fixed-range QAT), the baseline bench.learned_scales compares with")

    @property
    def bipolar(self) -> bool:
        return self.bits == 1 and self.signed


class LayerQuant(_Strict):
    weight: WeightQuant | None = None
    act: ActQuant | None = None
    bias_bits: int | None = Field(None, ge=2, le=32)


class PTQConfig(_Strict):
    """Post-training quantization options (``quant.method: ptq``, an imported float model); see
    :mod:`codesign.ptq`. All off / ``nearest`` is plain calibration (Brevitas ``calibration_mode``)."""

    equalize: bool = Field(False, description="cross-layer equalization of the float twin before quantizing (Nagel et "
                           "al. 2019, DFQ; Brevitas brevitas.graph.equalize.EqualizeGraph)")
    bias_correction: bool = Field(False, description="after quantizing, add each layer's mean output error on the "
                                  "calibration data to its bias (or a following BatchNorm's mean) (Nagel et al. 2019, "
                                  "empirical bias correction; codesign.ptq.bias_correct)")
    rounding: Literal["nearest", "gptq", "gpfq"] = Field(
        "nearest", description="weight rounding: nearest (the quantizer's own), gptq (Frantar et al. 2022, Brevitas "
        "brevitas.graph.gptq.gptq_mode) or gpfq (Lybrand & Saab 2021, Brevitas brevitas.graph.gpfq.gpfq_mode); "
        "both keep the quantizer's power-of-two scale and integer grid")
    data_free: bool = Field(False, description="no training data: calibrate on inputs synthesized to match the "
                            "BatchNorm running statistics (ZeroQ, Cai et al. 2020; codesign.ptq.synthesize); the model "
                            "needs a BatchNorm")
    data_free_steps: int = Field(500, ge=1, description="data_free: Adam steps of the input synthesis")


class QuantConfig(_Strict):
    input: ActQuant = Field(default_factory=lambda: ActQuant(bits=8, signed=True))
    weight: WeightQuant = Field(default_factory=WeightQuant)
    act: ActQuant = Field(default_factory=ActQuant)
    bias_bits: int = Field(16, ge=2, le=32)
    method: Literal["qat", "ptq"] = Field("qat", description="qat: quantization-aware training; ptq (model.module "
                                          "only): no training, activation scales calibrated on training batches")
    calibration_batches: int = Field(8, ge=1, description="ptq: training batches (train.batch_size) calibrated on")
    ptq: PTQConfig = Field(default_factory=PTQConfig, description="ptq: equalization, bias correction, optimized "
                           "rounding, data-free calibration")
    layers: dict[str, LayerQuant] = Field(default_factory=dict, description="per-layer overrides by layer name")
    input_precision: str | None = Field(
        None, description="the grid of a QONNX graph input that has no quantizer and no finn_datatype annotation, in "
        "hls4ml syntax (e.g. 'ap_fixed<16,6>', 'ufixed<8,0>'): models brought from elsewhere "
        "(golden, rtl, verify, hls)")

    @model_validator(mode="after")
    def _check_precision(self) -> QuantConfig:
        if self.input_precision is not None:
            from codesign.graph.analysis import parse_precision

            parse_precision(self.input_precision)  # ValueError names the syntax
        return self


class KDConfig(_Strict):
    enabled: bool = False
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    teacher: str | list[str] | None = Field(
        None, description="path to a float teacher model.pt, or a list of paths (multi-teacher: their softened "
        "outputs are averaged); trained in the run if empty")
    teacher_hidden: list[int] | list[list[int]] | None = Field(
        None, description="hidden widths of the teacher trained in the run, or a list of them (one teacher each, "
        "averaged); default: the float twin")
    feature: bool = Field(False, description="add a feature loss on the penultimate features (feature_loss)")
    feature_loss: Literal["hint", "pkt", "cc"] = Field(
        "hint", description="with feature: 'hint' = FitNets (MSE through a learned regressor), 'pkt' = "
        "probabilistic knowledge transfer (Passalis & Tefas), 'cc' = correlation congruence (Peng et al.); "
        "see codesign/distill.py")
    feature_weight: float = Field(1.0, ge=0)


class TrainConfig(_Strict):
    epochs: int = Field(60, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["cosine", "constant"] = "cosine"
    patience: int = Field(20, ge=0, description="early stopping on validation accuracy; 0 disables")
    float_epochs: int = Field(0, ge=0, description="float pre-training epochs before QAT fine-tuning")
    inq: list[float] | None = Field(None, description="INQ schedule: cumulative fractions quantized, "
                                    "e.g. [0.5, 0.75, 0.875, 1.0]")
    kd: KDConfig = Field(default_factory=KDConfig)


class PruneConfig(_Strict):
    enabled: bool = False
    criterion: Literal["l1", "l2", "bn_gamma", "taylor", "fpgm", "random", "energy"] = "l1"
    sparsity: float = Field(0.5, ge=0, lt=1, description="fraction of hidden units/filters removed")
    granularity: Literal["unit", "weight"] = Field(
        "unit", description="unit: whole neurons/filters removed physically; "
        "weight: single weights masked to exactly 0 (shapes unchanged)")
    schedule: Literal["oneshot", "iterative", "agp", "energy_aware"] = "oneshot"
    steps: int = Field(4, ge=1)
    finetune_epochs: int = Field(60, ge=0, description="QAT fine-tuning epochs after pruning (split over the steps)")
    finetune_lr: float | None = Field(None, gt=0, description="fine-tuning learning rate (default: train.lr)")
    scope: Literal["global", "layer"] = "layer"
    coupled: list[list[str]] = Field(default_factory=list, description="groups of layers whose outputs are joined "
                                     "(residual Add): pruned together, same units removed from every member")
    slimming_l1: float = Field(1e-4, ge=0, description="bn_gamma: L1 penalty on the BatchNorm gammas "
                               "(network slimming)")
    slimming_epochs: int = Field(30, ge=1, description="bn_gamma: sparsity-training epochs with BatchNorm "
                                 "before folding")
    budget_params: int | None = Field(None, ge=1, description="budget mode: at most this many parameters "
                                      "(overrides sparsity)")
    budget_pj: float | None = Field(None, gt=0, description="budget mode: at most this many pJ per inference "
                                    "(energy model)")
    energy_ratio: float = Field(2.5, gt=1, description="schedule energy_aware: stop at this many times lower estimated "
                                "energy (budget_pj overrides)")
    step_fraction: float = Field(0.15, gt=0, lt=1, description="schedule energy_aware: fraction of a layer's remaining "
                                 "units/weights removed per step (halved on the layer after a failed step)")
    local_epochs: int = Field(5, ge=0, description="schedule energy_aware: fine-tuning epochs after each step")
    guard: Literal["accuracy", "loss"] = Field(
        "accuracy", description="schedule energy_aware: a step is kept if validation "
        "accuracy stays within local_drop, or validation loss within local_loss")
    local_drop: float = Field(0.03, ge=0, le=1, description="schedule energy_aware, guard accuracy: "
                              "allowed validation accuracy drop")
    local_loss: float = Field(0.05, ge=0, description="schedule energy_aware, guard loss: "
                              "allowed validation loss increase (nats)")


class RTLConfig(_Strict):
    strategy: Literal["latency", "resource"] = "latency"
    reuse: int = Field(1, ge=1)
    multiplier: Literal["dsp", "shiftadd"] = "shiftadd"
    pipeline: int = Field(1, ge=0, description="register stages in each adder tree (0 = combinational)")
    share: bool = Field(True, description="fully parallel layers: compute shift-add terms that several outputs have "
                        "in common once (common-subexpression sharing, as da4ml does); false = one tree per output")
    copies: int = Field(1, ge=1, description="fully parallel layers: registered copies of each pipeline register "
                        "that several outputs read, output j reading copy j * copies // outputs (input registers "
                        "and shared terms otherwise fan out to every output's adder tree; copies cut that fan-out "
                        "for deep pipelines, for copies - 1 times those registers); shift-add terms are shared "
                        "within a group only")
    io: Literal["vector", "stream"] = Field(
        "vector", description="top-level input: 'vector' = one whole input vector per beat; 'stream' = one pixel "
        "(its channels) per beat in raster order, the leading conv/pool layers stream over line buffers and a "
        "collector feeds the vector layers (hls4ml io_stream; latency strategy only; see docs/rtl-backend.md)")
    timing_regs: bool = Field(False, description="resource strategy: timing registers in folded layers (for slow "
                              "fabrics, iCE40): the operand register twice (a fabric register, then the multiplier's "
                              "input register: the input multiplexer and the route to a DSP in separate cycles), each "
                              "lane's requantizer reads a register (the accumulator itself when input-serial), and the "
                              "last-step flag is a register (no step comparator on the ready chain between layers); "
                              "+2 cycles of latency with pipeline >= 1 (+1 without operand register), II unchanged")
    debug_taps: bool = Field(False, description="expose every layer's output (dbg_<layer>_tdata/tvalid) for debugging")
    axis_slice: bool = Field(False, description="register slice (skid buffer) on the output stream: +1 cycle, "
                             "cuts tready paths")
    flow_control: Literal["stall", "credit"] = Field(
        "stall", description="fully parallel designs: 'stall' = every pipeline register is enabled by "
        "!out_valid || out_ready (backpressure stalls the datapath; the enable fans out to every register); "
        "'credit' = valid-only pipeline: the datapath advances every cycle, an output FIFO of latency + 2 entries "
        "(hw/cs_credit_fifo.v) absorbs the vectors in flight and s_axis_tready is a registered credit count "
        "(+1 cycle latency, same AXI-Stream protocol; latency strategy, vector io, chain networks)")
    popcount: Literal["auto", "on", "off"] = Field(
        "auto", description="fully parallel layers whose weights are all +-c (binary, or ternary with zeros): 'on' = "
        "each output as c * sum over the input bit planes p of s_p 2^p (popcount(X_p & P) - popcount(X_p & N)) + "
        "bias, popcounts (hw/cs_popcount.v) over constant masks instead of an adder tree (a few lines per output "
        "instead of one per product; no tree pipeline stages inside); 'auto' = that form from a fan-in of 256 up "
        "(SFC/CNV-sized layers); 'off' = adder trees everywhere")
    epilogue: Literal["auto", "thresholds", "mulshift"] = Field(
        "auto", description="form of a float epilogue (BatchNorm, float scales) in fully parallel layers: integer "
        "'thresholds' (comparators), 'mulshift' (acc * m + b >> s, clipped; where an exact one exists) or 'auto' "
        "(the cheaper per layer by an adder-bit estimate). Both are proven equal to the reference; folded layers use "
        "threshold ROMs")

    @model_validator(mode="after")
    def _check(self) -> RTLConfig:
        if self.strategy == "latency" and self.reuse != 1:
            raise ValueError(f"reuse={self.reuse} needs strategy 'resource' (latency is fully parallel)")
        if self.flow_control == "credit" and (self.strategy != "latency" or self.io != "vector"):
            raise ValueError("flow_control 'credit' needs strategy 'latency' and io 'vector' (fully parallel layers)")
        return self


class VerifyConfig(_Strict):
    simulator: Literal["verilator", "icarus"] = "verilator"
    random_vectors: int = Field(100_000, ge=0)
    backpressure: bool = True
    style: Literal["stream", "loop"] = Field("stream", description="stream: HDL-side vector streaming (fast); "
                                             "loop: cocotb drives every cycle")
    gate_level: bool | Literal["generic", "ecp5", "ice40"] = Field(
        False, description="simulate the yosys post-synthesis netlist instead of the RTL: generic (or true: "
        "yosys gates + simcells.v), ecp5 (synth_ecp5 + vendor cell models) or ice40 (synth_ice40 -dsp)")
    seed: int = 0
    waves: bool = Field(False, description="also simulate the test set with a waveform dump (FST, or VCD without "
                        "lz4) and count toggles per layer (verify/sim/waves/)")
    verilator_opt: str | None = Field(None, description="make variables for Verilator's C++ compile, e.g. "
                                      "'OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O1'; null: codesign.verify.sim."
                                      "VERILATOR_OPT (fastest build + 100k-vector run measured)")


class EnergyConfig(_Strict):
    activity: bool = Field(False, description="also the activity-based estimate: simulate the RTL on the test set "
                           "and weigh toggles with yosys cell counts (needs a simulator and yosys)")
    vectors: int = Field(1000, ge=1, description="activity: test vectors simulated (the test set repeated if shorter)")


class FPGAConfig(_Strict):
    target: Literal["ecp5-85f", "ice40-up5k", "xilinx-estimate", "xilinx-vivado"] = "ecp5-85f"
    board: Literal["none", "ulx3s", "icebreaker"] = "none"
    clock_mhz: float = Field(50.0, gt=0, le=1000)
    seed: int = 1
    # nextpnr's router: router1 (nextpnr-ecp5's default, the better fmax where both were tried) or router2
    # (negotiated congestion; finishes congested designs router1 does not, such as the 8-bit streamed
    # byom CNN, at a lower fmax)
    router: Literal["router1", "router2"] = "router1"
    # router1 sometimes spends minutes ripping up what it routes on one placement (the default model's
    # out-of-context build on seed 1; `python -m bench pnr_seeds`): such a placement is placed again with
    # the next seed, up to this many times (codesign.fpga.reports.router1_stalled; 0: off)
    reseed: int = Field(2, ge=0, le=10)
    # nextpnr placement: auto (a board top wirelength-driven first, timing-driven again only if it misses the
    # board clock; an out-of-context build timing-driven), timing, or wirelength (--no-tmdriv; for large
    # designs whose timing-driven placement congests the router)
    placement: Literal["auto", "timing", "wirelength"] = "auto"
    # nextpnr placer: heap (analytic, nextpnr's default) or static (electrostatic: spreads a large design so
    # that the router finishes it; the hls4ml jet tagger fully parallel routes with static + router2)
    placer: Literal["heap", "static"] = "heap"


class Config(_Strict):
    name: str = DEFAULT_MODEL
    description: str = ""
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    rtl: RTLConfig = Field(default_factory=RTLConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    fpga: FPGAConfig = Field(default_factory=FPGAConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.model.batchnorm and self.prune.enabled and self.prune.criterion == "bn_gamma":
            raise ValueError("prune.criterion: bn_gamma (network slimming) trains its own BatchNorm twin; with "
                             "model.batchnorm rank by l1, l2, fpgm, taylor, energy or random (the BatchNorm channels "
                             "are removed with their layer's units)")
        if self.model.module is None:
            if self.quant.method == "ptq":
                raise ValueError("quant.method: ptq needs an imported float model (model.module)")
        else:
            if self.prune.enabled and self.prune.criterion == "bn_gamma":
                raise ValueError("prune.criterion: bn_gamma (network slimming) is not supported with model.module "
                                 "(an imported model) yet; use l1, l2, fpgm, taylor, energy or random")
            for flag, what in ((self.train.kd.enabled, "train.kd.enabled"), (self.train.inq is not None, "train.inq")):
                if flag:
                    raise ValueError(f"{what}: not supported with model.module (an imported model) yet")
        if self.quant.method != "ptq" and self.quant.ptq != PTQConfig():
            raise ValueError("quant.ptq: post-training options need quant.method: ptq")
        if self.data.dataset == "npz" and not self.data.path:
            raise ValueError("data.path: dataset npz needs the .npz file (arrays x_train, y_train, x_test, y_test)")
        return self

    def layer_weight(self, layer: str) -> WeightQuant:
        o = self.quant.layers.get(layer)
        return o.weight if o and o.weight else self.quant.weight

    def layer_act(self, layer: str) -> ActQuant:
        o = self.quant.layers.get(layer)
        return o.act if o and o.act else self.quant.act

    def layer_bias_bits(self, layer: str) -> int:
        o = self.quant.layers.get(layer)
        return o.bias_bits if o and o.bias_bits else self.quant.bias_bits

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=1000)


def _format_error(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {err['input']!r})"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return f"invalid config {source}: " + "; ".join(lines)


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.yaml"))


def resolve_path(name_or_path: str | Path | None) -> Path:
    """A zoo name (``digits_mlp``) or a path to a YAML file."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"config file {p} not found")
        return p
    z = ZOO_DIR / f"{name_or_path}.yaml"
    if not z.exists():
        raise ConfigError(f"unknown model {name_or_path!r}: not a file and not in the zoo ({', '.join(zoo_names())})")
    return z


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def load(name_or_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a zoo model or YAML file, apply dotted ``overrides`` ({"train.epochs": 5}), validate."""
    p = resolve_path(name_or_path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {p}: top level must be a mapping")
    data.setdefault("name", p.stem)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    _resolve_user_paths(data, p.parent)
    return from_dict(data, str(p))


def _resolve_user_paths(data: dict[str, Any], base: Path) -> None:
    """model.module / model.weights / data.path are relative to the YAML's folder: make them absolute (the run's
    saved config.yaml then still finds them)."""
    for section, key in (("model", "module"), ("model", "weights"), ("data", "path")):
        sec = data.get(section)
        v = sec.get(key) if isinstance(sec, dict) else None
        if not isinstance(v, str) or not v:
            continue
        file, sep, rest = v.rpartition(":") if key == "module" and ":" in v else (v, "", "")
        f = Path(file).expanduser()
        if not f.is_absolute():
            sec[key] = str((base / f).resolve()) + (f":{rest}" if sep else "")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` ("train.epochs") in ``data``; an integer part indexes a list ("model.hidden.0": the
    first hidden layer's width). A bad index or a non-list is a ConfigError naming the key."""
    parts = key.split(".")
    d: Any = data
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(d, list):
            if not p.lstrip("-").isdigit():
                raise ConfigError(f"override {key}: {'.'.join(parts[:i])} is a list; index it with an integer, "
                                  f"not {p!r}")
            j = int(p)
            if not 0 <= j < len(d):
                raise ConfigError(f"override {key}: index {j} out of range: {'.'.join(parts[:i])} has "
                                  f"{len(d)} entries {d}")
            if last:
                d[j] = value
            else:
                d = d[j]
            continue
        if not isinstance(d, dict):
            raise ConfigError(f"override {key}: {parts[i - 1]} is not a section")
        if last:
            d[p] = value
        else:
            d = d.setdefault(p, {})
            if not isinstance(d, dict | list):
                raise ConfigError(f"override {key}: {p} is not a section")


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=5`` -> ("train.epochs", 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)
