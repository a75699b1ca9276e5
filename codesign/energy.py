"""Energy model: per layer and per inference.

Analytic estimate (``estimate``): count the operations the generated hardware performs for one
inference, by kind and width, and weigh them with a per-operation energy table (default
``energy_tables/horowitz45nm.yaml``: Horowitz, ISSCC 2014, 45 nm; replaceable by the user).

Per weight layer (dense or conv, ``P`` output positions, ``O`` output units, weight codes ``W[o, :]``):
  - every non-zero weight is one term; a term whose ``|w|`` is a power of two is a *shift* (wiring in
    a parallel design, ``shift_pj``), any other is a *multiply* of ``in_bits x w_bits``
    (``mult_pj`` scaled with the product of widths from the 8x8 and 32x32 points);
  - each term, and a non-zero bias, costs one *add* at the accumulator width (``add_pj`` interpolated
    linearly in width); zero weights cost nothing (they generate no logic);
  - requantization (round + clip) of each output costs one add at accumulator width;
  - each output is written to a register (``out_bits x reg_bit_pj``);
  - folded layers (``strategy=resource``) read every stored weight once from a ROM
    (``w_bits x rom_bit_pj`` each);
  - the input and output vectors cross the accelerator boundary (``io_bit_pj`` per bit).
Max-pooling costs ``window - 1`` comparisons (adds) at the activation width per output.
Borders of padded convolutions are counted as if the window were complete (a slight overestimate).

The same counting works on the RTL IR (``from_ir``: what the hardware will really contain) and on a
trained PyTorch ``QuantNet`` (``from_model``: used inside pruning loops, no export needed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DEFAULT_TABLE = Path(__file__).parent / "energy_tables" / "horowitz45nm.yaml"


@dataclass
class EnergyTable:
    name: str
    add_pj: dict[int, float]
    mult_pj: dict[int, float]
    shift_pj: float
    reg_bit_pj: float
    rom_bit_pj: float
    io_bit_pj: float
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> EnergyTable:
        from codesign.errors import ConfigError

        p = Path(path) if path else DEFAULT_TABLE
        try:
            d = yaml.safe_load(p.read_text())
            d["add_pj"] = {int(k): float(v) for k, v in d["add_pj"].items()}
            d["mult_pj"] = {int(k): float(v) for k, v in d["mult_pj"].items()}
            return cls(**d)
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"energy table {p}: {type(e).__name__}: {e}") from None

    def add(self, bits: int) -> float:
        (b0, e0), (b1, e1) = sorted(self.add_pj.items())[:2]
        return max(0.0, e0 + (e1 - e0) * (bits - b0) / (b1 - b0))

    def mult(self, a_bits: int, b_bits: int) -> float:
        (b0, e0), (b1, e1) = sorted(self.mult_pj.items())[:2]
        # e = c * (a*b)^k through both points
        k = math.log(e1 / e0) / math.log((b1 * b1) / (b0 * b0))
        return e0 * ((a_bits * b_bits) / (b0 * b0)) ** k


@dataclass
class LayerOps:
    """What one weight (or pool) layer computes per inference."""

    name: str
    kind: str
    positions: int  # output positions (1 for dense)
    weights: np.ndarray | None  # (units, fan_in) integer codes; None for pooling
    in_bits: int
    in_signed: bool
    out_bits: int
    bias_nonzero: np.ndarray | None = None  # (units,) bool
    requant: bool = True
    window: int = 1  # pooling window size
    units: int = 0


@dataclass
class LayerEnergy:
    name: str
    kind: str
    pj: float
    shifts: int = 0
    mults: int = 0
    adds: int = 0
    reg_bits: int = 0
    rom_bits: int = 0
    acc_bits: int = 0
    breakdown: dict[str, float] = field(default_factory=dict)


def _bits_for(lo: int, hi: int) -> int:
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def _is_pot(a: np.ndarray) -> np.ndarray:
    a = np.abs(a.astype(np.int64))
    return (a != 0) & ((a & (a - 1)) == 0)


def layer_energy(op: LayerOps, table: EnergyTable, strategy: str = "latency") -> LayerEnergy:
    if op.weights is None:  # pooling
        cmp = op.positions * op.units * max(op.window - 1, 0)
        e = cmp * table.add(op.in_bits) + op.positions * op.units * op.out_bits * table.reg_bit_pj
        return LayerEnergy(op.name, op.kind, e, adds=cmp, reg_bits=op.positions * op.units * op.out_bits,
                           breakdown={"add": cmp * table.add(op.in_bits), "reg": e - cmp * table.add(op.in_bits)})
    w = op.weights.astype(np.int64)
    units = w.shape[0]
    in_lo = -(1 << (op.in_bits - 1)) if op.in_signed else 0
    in_hi = (1 << (op.in_bits - 1)) - 1 if op.in_signed else (1 << op.in_bits) - 1
    pos_w, neg_w = np.clip(w, 0, None), np.clip(w, None, 0)
    acc_hi = int((pos_w * in_hi + neg_w * in_lo).sum(1).max(initial=0))
    acc_lo = int((pos_w * in_lo + neg_w * in_hi).sum(1).min(initial=0))
    acc_bits = _bits_for(acc_lo, acc_hi) + 1
    nz = w != 0
    pot = _is_pot(w)
    n_shift = int(pot.sum()) * op.positions
    n_mult_terms = nz & ~pot
    mult_e = 0.0
    if n_mult_terms.any():
        wb = np.array([_bits_for(int(v), int(v)) for v in w[n_mult_terms]])
        mult_e = float(sum(table.mult(op.in_bits, int(b)) for b in wb)) * op.positions
    n_mult = int(n_mult_terms.sum()) * op.positions
    n_bias = int(op.bias_nonzero.sum()) if op.bias_nonzero is not None else 0
    n_add = (int(nz.sum()) + n_bias + (units if op.requant else 0)) * op.positions
    reg_bits = units * op.positions * op.out_bits
    w_bits = _bits_for(int(w.min(initial=0)), int(w.max(initial=0)))
    rom_bits = w.size * w_bits if strategy == "resource" else 0
    bd = {"shift": n_shift * table.shift_pj, "mult": mult_e, "add": n_add * table.add(acc_bits),
          "reg": reg_bits * table.reg_bit_pj, "rom": rom_bits * table.rom_bit_pj}
    return LayerEnergy(op.name, op.kind, float(sum(bd.values())), shifts=n_shift, mults=n_mult, adds=n_add,
                       reg_bits=reg_bits, rom_bits=rom_bits, acc_bits=acc_bits, breakdown=bd)


def estimate(ops: list[LayerOps], table: EnergyTable | None = None, strategy: str = "latency",
             io_bits: int = 0) -> dict[str, Any]:
    """Energy per layer and per inference (pJ)."""
    table = table or EnergyTable.load()
    layers = [layer_energy(op, table, strategy) for op in ops]
    io = io_bits * table.io_bit_pj
    total = sum(le.pj for le in layers) + io
    return {"pj_per_inference": total, "io_pj": io, "table": table.name, "strategy": strategy,
            "per_layer": {le.name: round(le.pj, 4) for le in layers},
            "layers": [asdict(le) for le in layers]}


# ---------------------------------------------------------------------------------------------
# front-ends
# ---------------------------------------------------------------------------------------------
def from_ir(model) -> tuple[list[LayerOps], int]:
    """LayerOps of an RTL IR model (``codesign.rtl.ir.Model``), and the I/O bits per inference."""
    ops: list[LayerOps] = []
    for ly in model.layers:
        if ly.is_linear:
            w = ly.weights
            if ly.kind == "dense":
                mat, positions = w.T, 1
            else:
                mat = w.reshape(w.shape[0], -1)
                positions = ly.n_out // w.shape[0]
            ops.append(LayerOps(ly.name, ly.kind, positions, mat, ly.in_fmt.bits, ly.in_fmt.signed, ly.out_fmt.bits,
                                bias_nonzero=(ly.bias != 0) if ly.bias is not None else None,
                                requant=ly.requant is not None, units=mat.shape[0]))
        elif ly.kind == "maxpool":
            ch = ly.out_shape[-1] if ly.layout == "NHWC" else ly.out_shape[0]
            ops.append(LayerOps(ly.name, ly.kind, ly.n_out // ch, None, ly.in_fmt.bits, ly.in_fmt.signed,
                                ly.out_fmt.bits, requant=False, window=int(np.prod(ly.kernel)), units=ch))
    io_bits = int(np.prod(model.input_shape)) * model.input_fmt.bits + \
        int(np.prod(model.output_shape)) * model.output_fmt.bits
    return ops, io_bits


def from_model(model) -> tuple[list[LayerOps], int]:
    """LayerOps of a trained ``codesign.quant.QuantNet`` (weights as the integer codes Brevitas exports)."""
    import torch

    ops: list[LayerOps] = []
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [getattr(model, n).register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple((o.value if hasattr(o, "value") else o).shape)))
        for n in model.order]
    model.eval()
    with torch.no_grad():
        model(torch.zeros((1, *model.input_shape)))
    for h in hooks:
        h.remove()
    in_bits, in_signed = _act_bits(model.inp), True
    layers = model.weight_layers()
    for n in model.order:
        m = getattr(model, n)
        if n in layers:
            with torch.no_grad():
                qw = m.quant_weight()
                codes = torch.round(qw.value / qw.scale).to(torch.int64).numpy()
                bias_nz = (m.bias.detach().numpy() != 0) if m.bias is not None else None
            mat = codes.reshape(codes.shape[0], -1)
            positions = int(math.prod(shapes[n][2:])) if len(shapes[n]) > 2 else 1
            last = n == layers[-1]
            out_bits = 32 if last else _act_bits(getattr(model, _relu_after(model, n)))
            ops.append(LayerOps(n, "conv" if n.startswith("conv") else "dense", positions, mat, in_bits, in_signed,
                                out_bits, bias_nonzero=bias_nz, requant=not last, units=mat.shape[0]))
            in_bits, in_signed = out_bits, False
        elif n.startswith("pool"):
            ch = shapes[n][1]
            k = m.kernel_size if isinstance(m.kernel_size, int) else math.prod(m.kernel_size)
            window = k ** (len(shapes[n]) - 2) if isinstance(m.kernel_size, int) else k
            ops.append(LayerOps(n, "maxpool", int(math.prod(shapes[n][2:])), None, in_bits, in_signed, in_bits,
                                requant=False, window=window, units=ch))
    io_bits = int(math.prod(model.input_shape)) * _act_bits(model.inp) + model.n_classes * 32
    return ops, io_bits


def _relu_after(model, layer: str) -> str:
    i = model.order.index(layer)
    for n in model.order[i + 1:]:
        if n.startswith("relu"):
            return n
    raise ValueError(f"no activation after {layer}")


def _act_bits(mod) -> int:
    return int(mod.act_quant.bit_width().item()) if hasattr(mod, "act_quant") else 8


def unit_costs(model, table: EnergyTable | None = None, strategy: str = "latency") -> dict[str, np.ndarray]:
    """Energy (pJ) attributable to each output unit of each weight layer: its own row's terms and
    register, plus its column(s) in the next weight layer. The cost model of energy-aware pruning."""
    table = table or EnergyTable.load()
    ops, _ = from_model(model)
    weight_ops = [op for op in ops if op.weights is not None]
    costs: dict[str, np.ndarray] = {}
    for i, op in enumerate(weight_ops[:-1]):
        le = layer_energy(op, table, strategy)
        terms = (op.weights != 0).sum(1) + 1.0  # a unit's share grows with its non-zero terms
        own = le.pj * terms / terms.sum()
        nxt = weight_ops[i + 1]
        nle = layer_energy(nxt, table, strategy)
        cols_per_unit = nxt.weights.shape[1] // op.units
        share = nle.pj / max(nxt.weights.shape[1], 1) * cols_per_unit
        costs[op.name] = own + share
    return costs


# ---------------------------------------------------------------------------------------------
# stage
# ---------------------------------------------------------------------------------------------
def bar_chart(result: dict[str, Any], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codesign.run import atomic_path

    layers = result["layers"]
    names = [le["name"] for le in layers]
    kinds = ["mult", "shift", "add", "reg", "rom"]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.5))
    bottom = np.zeros(len(names))
    for k in kinds:
        vals = np.array([le["breakdown"].get(k, 0.0) for le in layers])
        if vals.any():
            ax.bar(names, vals, bottom=bottom, label=k)
            bottom += vals
    ax.set_ylabel("pJ per inference")
    ax.set_title(title or f"energy per layer ({result['pj_per_inference']:.1f} pJ total, {result['table']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run_stage(rd, cfg) -> dict[str, Any]:
    """Analytic energy of the generated accelerator (from ``export/model.onnx`` through the RTL IR)."""
    from rich.console import Console
    from rich.table import Table

    from codesign.rtl.frontend_qonnx import lower
    from codesign.run import atomic_write_json

    ir = lower(rd.require("export/model.onnx", "export"))
    ops, io_bits = from_ir(ir)
    res = estimate(ops, EnergyTable.load(), cfg.rtl.strategy, io_bits)
    out = rd.stage_dir("energy")
    atomic_write_json(out / "energy.json", res)
    rd.add(out / "energy.json", "energy")
    bar_chart(res, out / "energy.png", f"{cfg.name}: {res['pj_per_inference']:.1f} pJ per inference")
    rd.add(out / "energy.png", "energy")
    t = Table(title=f"energy per inference ({res['table']})")
    for c in ("layer", "pJ", "mults", "shifts", "adds", "acc bits"):
        t.add_column(c, justify="right")
    for le in res["layers"]:
        t.add_row(le["name"], f"{le['pj']:.2f}", str(le["mults"]), str(le["shifts"]), str(le["adds"]), str(le["acc_bits"]))
    t.add_row("I/O", f"{res['io_pj']:.2f}", "", "", "", "")
    t.add_row("total", f"{res['pj_per_inference']:.2f}", "", "", "", "")
    Console().print(t)
    figures = {"pj_per_inference": round(res["pj_per_inference"], 3), "per_layer": res["per_layer"], "model": "analytic"}
    rd.record("energy", figures)
    return figures
