"""Energy model: per layer and per inference.

Analytic estimate (``estimate``): count the operations the generated hardware performs for one
inference, by kind and width, and weigh them with a per-operation energy table (default
``energy_tables/horowitz45nm.yaml``: Horowitz, ISSCC 2014, 45 nm; replaceable by the user).

Per weight layer (dense or conv, ``P`` output positions, ``O`` output units, weight codes ``W[o, :]``),
fully parallel (``strategy=latency``):
  - every non-zero weight is one term; a term whose ``|w|`` is a power of two is a *shift* (wiring in
    a parallel design, ``shift_pj``), any other is a *multiply* of ``in_bits x w_bits``
    (``mult_pj`` scaled with the product of widths from the 8x8 and 32x32 points);
  - each term, and a non-zero bias, costs one *add* at the accumulator width (``add_pj`` interpolated
    linearly in width); zero weights cost nothing (the parallel RTL generates no logic for them);
  - requantization (round + clip) of each output costs one add at accumulator width;
  - each output is written to a register (``out_bits x reg_bit_pj``);
  - folded layers (``strategy=resource``) read every stored weight once from a ROM
    (``w_bits x rom_bit_pj`` each) and feed it through a fixed-width MAC slot, zero or not: every
    stored weight costs one multiply ``in_bits x w_bits`` at the layer's weight width (a shift if
    every non-zero weight of the layer is a power of two) and one add, so zeroing weights saves
    energy only in parallel layers;
  - the input and output vectors cross the accelerator boundary (``io_bit_pj`` per bit).
Max-pooling and average pooling cost ``window - 1`` comparisons or additions per output; a residual ``add``
layer one addition per output field. Per-channel weight scales are counted on the unaligned codes.
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

from codesign.errors import CodesignError

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
    w_bits = _bits_for(int(w.min(initial=0)), int(w.max(initial=0)))
    n_bias = int(op.bias_nonzero.sum()) if op.bias_nonzero is not None else 0
    if strategy == "resource":
        # folded: every stored weight, zero or not, is a MAC slot-step of the layer's fixed-width datapath
        # (the generated RTL keeps a zero in the weight ROM and fires the slot; only a slot whose weight is
        # zero in every step is removed, which a per-weight count cannot see)
        slots = w.size * op.positions
        all_pot = bool(nz.any()) and bool((pot | ~nz).all())  # a power-of-two layer: barrel shifts
        n_shift = slots if all_pot else 0
        n_mult = 0 if all_pot else slots
        mult_e = n_mult * table.mult(op.in_bits, w_bits)
        n_add = (w.size + n_bias + (units if op.requant else 0)) * op.positions
    else:
        # parallel: a zero weight generates no logic at all
        n_shift = int(pot.sum()) * op.positions
        n_mult_terms = nz & ~pot
        mult_e = 0.0
        if n_mult_terms.any():
            wb = np.array([_bits_for(int(v), int(v)) for v in w[n_mult_terms]])
            mult_e = float(sum(table.mult(op.in_bits, int(b)) for b in wb)) * op.positions
        n_mult = int(n_mult_terms.sum()) * op.positions
        n_add = (int(nz.sum()) + n_bias + (units if op.requant else 0)) * op.positions
    reg_bits = units * op.positions * op.out_bits
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
    from codesign.rtl import ir

    ops: list[LayerOps] = []
    for ly in model.layers:
        if isinstance(ly, ir.Linear):
            w = ly.weights
            if isinstance(ly, ir.Dense):
                mat, positions = w.T, 1
            else:
                mat = w.reshape(w.shape[0], -1)
                positions = ly.n_out // w.shape[0]
            if ly.field_shift is not None:  # per-channel scales: the IR stores codes aligned to the finest scale
                fs = np.asarray(ly.field_shift, dtype=np.int64)
                per_unit = fs if isinstance(ly, ir.Dense) else (
                    fs.reshape(positions, -1).min(0) if ly.layout == "NHWC" else fs.reshape(-1, positions).min(1))
                mat = mat.astype(np.int64) >> per_unit.reshape(-1, 1)  # exact: every code is a multiple
            ops.append(LayerOps(ly.name, ly.kind, positions, mat, ly.in_fmt.bits, ly.in_fmt.signed, ly.out_fmt.bits,
                                bias_nonzero=(ly.bias != 0) if ly.bias is not None else None,
                                requant=ly.requant is not None, units=mat.shape[0]))
        elif isinstance(ly, ir.MaxPool | ir.AvgPool):  # window - 1 comparisons / additions per output
            ch = ly.out_shape[-1] if ly.layout == "NHWC" else ly.out_shape[0]
            ops.append(LayerOps(ly.name, ly.kind, ly.n_out // ch, None, ly.in_fmt.bits, ly.in_fmt.signed,
                                ly.out_fmt.bits, requant=False, window=int(np.prod(ly.kernel)), units=ch))
        elif isinstance(ly, ir.Add):  # residual join: one addition per output field
            ops.append(LayerOps(ly.name, ly.kind, ly.n_out, None, ly.acc_fmt.bits,
                                True, ly.out_fmt.bits, requant=False, window=2, units=1))
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
        if n.startswith(("relu", "requant")):  # requant: the quantizer after a residual add without ReLU
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


def weight_costs(model, table: EnergyTable | None = None, strategy: str = "latency") -> dict[str, np.ndarray]:
    """Energy (pJ per inference) saved by zeroing each single weight, per weight layer, in the shape of
    the layer's weight tensor: in a parallel layer a non-zero weight's term (multiply or shift) and its
    add at the layer's accumulator width, times the output positions; 0 for weights that are already
    zero, and 0 everywhere in a folded layer (``strategy=resource``), where a zero weight still costs a
    ROM read and a MAC slot. The cost model of fine-grained energy-aware pruning (a linear estimate: the
    accumulator also narrows as weights go)."""
    table = table or EnergyTable.load()
    ops, _ = from_model(model)
    out: dict[str, np.ndarray] = {}
    for op in ops:
        if op.weights is None:
            continue
        w = op.weights.astype(np.int64)
        shape = tuple(getattr(model, op.name).weight.shape)
        if strategy == "resource":
            out[op.name] = np.zeros(shape)
            continue
        acc_bits = layer_energy(op, table, strategy).acc_bits
        bits = np.zeros(w.shape, dtype=np.int64)
        nz = w != 0
        if nz.any():
            bits[nz] = [_bits_for(int(v), int(v)) for v in w[nz]]
        mult = np.array([table.mult(op.in_bits, b) if b else 0.0 for b in range(int(bits.max(initial=0)) + 1)])
        term = np.where(_is_pot(w), table.shift_pj, mult[bits])
        cost = np.where(nz, (term + table.add(acc_bits)) * op.positions, 0.0)
        out[op.name] = cost.reshape(shape)
    return out


# ---------------------------------------------------------------------------------------------
# activity-based estimate (simulation toggles x netlist cells)
# ---------------------------------------------------------------------------------------------
DEFAULT_CELL_TABLE = Path(__file__).parent / "energy_tables" / "cells45nm.yaml"


def load_cell_table(path: str | Path | None = None) -> dict[str, Any]:
    from codesign.errors import ConfigError

    p = Path(path) if path else DEFAULT_CELL_TABLE
    try:
        d = yaml.safe_load(p.read_text())
        d["pj_per_toggle"] = {str(k): float(v) for k, v in d["pj_per_toggle"].items()}
        for k in ("default_pj", "net_bit_pj", "io_bit_pj"):
            d[k] = float(d[k])
        return d
    except (OSError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as e:
        raise ConfigError(f"cell energy table {p}: {type(e).__name__}: {e}") from None


def _expand(mod: str, modules: dict[str, dict[str, int]], memo: dict[str, dict[str, int]]) -> dict[str, int]:
    """Primitive cell counts of ``mod`` with its submodule instances expanded."""
    if mod in memo:
        return memo[mod]
    out: dict[str, int] = {}
    for ct, n in modules.get(mod, {}).items():
        if ct in modules:
            for k, v in _expand(ct, modules, memo).items():
                out[k] = out.get(k, 0) + n * v
        else:
            out[ct] = out.get(ct, 0) + n
    memo[mod] = out
    return out


def netlist_cells(rtl_dir: str | Path, target: str = "ecp5", timeout: int = 900) -> dict[str, dict[str, int]]:
    """Cell counts by type per layer module of a generated ``rtl/`` folder: yosys ``synth_<target>
    -noflatten`` + ``stat -json``, each layer module with its submodules (requantizers) expanded."""
    import json
    import subprocess

    from codesign.rtl.synth import yosys_cmd

    rtl_dir = Path(rtl_dir)
    iface = json.loads((rtl_dir / "interface.json").read_text())
    synth = {"ecp5": "synth_ecp5", "ice40": "synth_ice40", "generic": "synth"}[target]
    script = (f"read_verilog -sv {' '.join(iface['files'])}; {synth} -top {iface['top']} -noflatten; "
              "tee -q -o energy_stat.json stat -json")
    stat_path = rtl_dir / "energy_stat.json"
    newest = max((rtl_dir / f).stat().st_mtime for f in iface["files"])
    if not stat_path.exists() or stat_path.stat().st_mtime < newest:  # cached while the RTL is unchanged
        p = subprocess.run([yosys_cmd(), "-q", "-p", script], cwd=rtl_dir, capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"yosys failed in {rtl_dir}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    stat = json.loads(stat_path.read_text())
    modules = {name.lstrip("\\"): {ct.lstrip("\\"): int(n) for ct, n in m.get("num_cells_by_type", {}).items()}
               for name, m in stat["modules"].items()}
    memo: dict[str, dict[str, int]] = {}
    return {la["name"]: _expand(la["name"], modules, memo) for la in iface["layers"] if la["name"] in modules}


def _scope_layer(scope: str, layers: list[str]) -> str | None:
    head = scope.split(".")[0]
    for cand in (head, head.removeprefix("u_")):
        if cand in layers:
            return cand
    return None


def activity_estimate(toggles: dict[str, Any], layers: list[str], vectors: int,
                      cells: dict[str, dict[str, int]] | None = None,
                      cell_table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dynamic energy per inference per layer from toggle counts (``codesign.verify.toggles``).

    With netlist cells: ``E_layer = alpha_layer * sum_t n_t * e_t``, where ``alpha_layer`` is the mean
    toggle probability per net bit per inference of the layer's RTL nets (toggles / bits / vectors),
    ``n_t`` the count of cell type ``t`` in the layer's netlist and ``e_t`` its energy per toggle.
    Without: ``E_layer = toggles / vectors * net_bit_pj``. Top-level nets count as I/O (``io_bit_pj``)."""
    ct = cell_table or load_cell_table()
    per: dict[str, dict[str, Any]] = {n: {"name": n, "toggles": 0, "bits": 0} for n in layers}
    io_toggles = 0
    for scope, g in toggles.get("groups", {}).items():
        la = _scope_layer(scope, layers)
        if la is None:
            io_toggles += g["toggles"]
        else:
            per[la]["toggles"] += g["toggles"]
            per[la]["bits"] += g["bits"]
    out = []
    for n in layers:
        d = per[n]
        alpha = d["toggles"] / max(d["bits"], 1) / max(vectors, 1)
        d["alpha"] = round(alpha, 5)
        if cells and n in cells:
            full = sum(c * ct["pj_per_toggle"].get(t, ct["default_pj"]) for t, c in cells[n].items())
            d.update(cells=cells[n], full_toggle_pj=round(full, 4), pj=alpha * full, method="cells")
        else:
            d.update(pj=d["toggles"] / max(vectors, 1) * ct["net_bit_pj"], method="nets")
        out.append(d)
    io = io_toggles / max(vectors, 1) * ct["io_bit_pj"]
    total = sum(d["pj"] for d in out) + io
    return {"pj_per_inference": total, "io_pj": io, "vectors": vectors, "table": ct["name"],
            "per_layer": {d["name"]: round(d["pj"], 4) for d in out}, "layers": out}


def activity_from_rtl(rtl_dir: str | Path, test_x: np.ndarray, *, vectors: int = 1000, simulator: str = "verilator",
                      work: str | Path | None = None, cells: bool = True, synth_timeout: int = 900,
                      cell_table: str | Path | None = None, verilator_opt: str | None = None) -> dict[str, Any]:
    """Simulate the RTL on ``test_x[:vectors]`` (cocotb, waveform on), count toggles per layer
    (pywellen) and weigh them with the yosys cell counts of each layer module. ``verilator_opt``: as in
    :func:`codesign.verify.verify`."""
    import tempfile
    import time

    from codesign.verify import sim as vsim
    from codesign.verify.core import simulate
    from codesign.verify.iface import load_interface
    from codesign.verify.reference import make_reference
    from codesign.verify.stimulus import test_codes
    from codesign.verify.toggles import toggle_summary

    rtl_dir = Path(rtl_dir)
    iface = load_interface(rtl_dir)
    layers = [la.name for la in iface.layers]
    codes, _ = test_codes(np.asarray(test_x), iface.input)
    # the stream repeats the test set if it is shorter than ``vectors``
    reps = int(math.ceil(vectors / max(len(codes), 1)))
    x = np.concatenate([codes] * reps)[:vectors]
    work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="codesign-energy-"))
    t0 = time.perf_counter()
    # one full-throughput run with the waveform on (no backpressure: II = 1, one vector per cycle)
    r = simulate(iface, x, simulator=simulator, style="stream", waves=True, work=work / "sim", with_taps=False,
                 verilator_opt=verilator_opt)
    wf = vsim.wave_file(r.build, work / "sim")
    if wf is None:
        raise RuntimeError("the simulator wrote no waveform file")
    tg = toggle_summary(wf, iface)
    tg["vectors"] = len(x)
    sim_s = time.perf_counter() - t0
    exp, _ = make_reference(None, iface).run(x.reshape(len(x), *iface.input.shape))
    exp = np.asarray(exp).reshape(len(x), -1).astype(np.int64)
    m = min(len(r.got), len(x))
    mismatches = int(len(x) - m + ((r.got[:m] != exp[:m]).any(axis=1) | r.unknown[:m]).sum())
    if not tg.get("groups"):
        raise RuntimeError("no toggle counts from the simulation (empty waveform)")
    cell_counts, synth_s, note = None, None, None
    if cells:
        t1 = time.perf_counter()
        try:
            cell_counts = netlist_cells(rtl_dir, timeout=synth_timeout)
        except Exception as e:  # the activity estimate falls back to net toggles
            note = f"no netlist cells ({type(e).__name__}: {str(e)[:200]}); net-toggle fallback"
        synth_s = round(time.perf_counter() - t1, 2)
    res = activity_estimate(tg, layers, int(tg.get("vectors", len(x))), cell_counts, load_cell_table(cell_table))
    res.update(mismatches=mismatches, simulator=simulator, cycles=tg.get("cycles"),
               seconds={"simulate": round(sim_s, 2), "synth": synth_s}, note=note)
    return res


def compare_chart(analytic: dict[str, Any], activity: dict[str, Any], path: Path, title: str = "") -> None:
    """Side-by-side bars per layer: analytic vs activity-based energy per inference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codesign.run import atomic_path

    names = [le["name"] for le in analytic["layers"]]
    names += [n for n in activity["per_layer"] if n not in names]
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(names) + 2), 3.5))
    ax.bar(xs - 0.2, [analytic["per_layer"].get(n, 0) for n in names], 0.4,
           label=f"analytic ({analytic['pj_per_inference']:.1f} pJ)")
    ax.bar(xs + 0.2, [activity["per_layer"].get(n, 0) for n in names], 0.4,
           label=f"activity ({activity['pj_per_inference']:.1f} pJ)")
    ax.set_xticks(xs, names)
    ax.set_ylabel("pJ per inference")
    ax.set_title(title or "energy per layer: analytic vs activity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


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


def design_ir(rd, onnx_path):
    """The RTL IR of the run's design: ``rtl/ir.json`` when the rtl stage wrote it, else lowered from
    ``export/model.onnx`` (the energy model needs no Verilog)."""
    import json

    from codesign.rtl import lower, model_from_json

    saved = rd.path("rtl", "ir.json")
    if saved.exists():
        return model_from_json(json.loads(saved.read_text()))
    return lower(onnx_path)


def design_energy(rtl_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Analytic energy of a generated design folder (its ``ir.json``), written to ``out/energy.json``."""
    import json

    from codesign.rtl import load_interface, model_from_json
    from codesign.run import atomic_write_json

    rtl_dir, out = Path(rtl_dir), Path(out)
    ir_path = rtl_dir / "ir.json"
    if not ir_path.exists():
        raise CodesignError(f"{ir_path} not found: regenerate the design with `codesign rtl` (it writes ir.json)")
    iface = load_interface(rtl_dir)
    ops, io_bits = from_ir(model_from_json(json.loads(ir_path.read_text())))
    res = estimate(ops, EnergyTable.load(), iface.strategy, io_bits)
    atomic_write_json(out / "energy.json", res)
    bar_chart(res, out / "energy.png", f"{rtl_dir.name}: {res['pj_per_inference']:.1f} pJ per inference")
    return {"pj_per_inference": round(res["pj_per_inference"], 3), "per_layer": res["per_layer"],
            "model": "analytic", "written": str(out / "energy.json")}


def run_stage(rd, cfg) -> dict[str, Any]:
    """Analytic energy of the generated accelerator (from ``export/model.onnx`` through the RTL IR);
    with ``energy.activity`` also the activity-based estimate from a simulation of ``rtl/`` (generated
    into ``energy/rtl`` if the rtl stage has not run) over ``energy.vectors`` test vectors."""
    from rich.console import Console
    from rich.table import Table

    from codesign.run import atomic_write_json

    activity, vectors = cfg.energy.activity, cfg.energy.vectors
    onnx_path = rd.require("export/model.onnx", "export")
    ops, io_bits = from_ir(design_ir(rd, onnx_path))
    res = estimate(ops, EnergyTable.load(), cfg.rtl.strategy, io_bits)
    out = rd.stage_dir("energy")
    act = None
    if activity:
        rtl = rd.path("rtl")
        if not (rtl / "interface.json").exists():
            from codesign.rtl import generate

            rtl = out / "rtl"
            generate(onnx_path, rtl, cfg.rtl)
        test_x = np.load(rd.require("export/test_x.npy", "export"))
        act = activity_from_rtl(rtl, test_x, vectors=vectors, simulator=cfg.verify.simulator,
                                work=out / "activity", verilator_opt=cfg.verify.verilator_opt)
        res["activity"] = act
    atomic_write_json(out / "energy.json", res)
    rd.add(out / "energy.json", "energy")
    if act:
        compare_chart(res, act, out / "energy.png", f"{cfg.name}: analytic {res['pj_per_inference']:.1f} pJ, "
                      f"activity {act['pj_per_inference']:.1f} pJ per inference")
    else:
        bar_chart(res, out / "energy.png", f"{cfg.name}: {res['pj_per_inference']:.1f} pJ per inference")
    rd.add(out / "energy.png", "energy")
    t = Table(title=f"energy per inference ({res['table']}" + (f"; activity: {act['table']}, {act['vectors']} "
                                                                "test vectors)" if act else ")"))
    cols = ["layer", "pJ", "mults", "shifts", "adds", "acc bits"]
    if act:
        cols += ["act. pJ", "ratio", "rate"]
    for c in cols:
        t.add_column(c, justify="right")
    alay = {d["name"]: d for d in act["layers"]} if act else {}
    for le in res["layers"]:
        row = [le["name"], f"{le['pj']:.2f}", str(le["mults"]), str(le["shifts"]), str(le["adds"]), str(le["acc_bits"])]
        if act:
            a = alay.get(le["name"])
            if a:
                row += [f"{a['pj']:.2f}", f"{a['pj'] / le['pj']:.2f}" if le["pj"] else "-", f"{a['alpha']:.3f}"]
            else:
                row += ["-"] * 3
        t.add_row(*row)
    extra = (lambda a, b: [f"{a:.2f}", f"{a / b:.2f}" if b else "-", ""]) if act else (lambda a, b: [])
    t.add_row("I/O", f"{res['io_pj']:.2f}", "", "", "", "", *(extra(act["io_pj"], res["io_pj"]) if act else []))
    t.add_row("total", f"{res['pj_per_inference']:.2f}", "", "", "", "",
              *(extra(act["pj_per_inference"], res["pj_per_inference"]) if act else []))
    Console().print(t)
    figures: dict[str, Any] = {"pj_per_inference": round(res["pj_per_inference"], 3), "per_layer": res["per_layer"],
                               "model": "analytic"}
    if act:
        figures.update(activity_pj_per_inference=round(act["pj_per_inference"], 3),
                       activity_per_layer=act["per_layer"], activity_vectors=act["vectors"],
                       activity_ratio=round(act["pj_per_inference"] / res["pj_per_inference"], 4))
    rd.record("energy", figures)
    return figures
