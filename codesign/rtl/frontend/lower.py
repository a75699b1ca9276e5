"""Fused frontend ops -> the typed IR (:mod:`codesign.rtl.ir`), then the checks and rewrites that need
the whole IR.

:func:`build_layers` walks the ops in order and gives every op its formats: the network input's from its
quantizer, each layer's input from its producer, accumulators sized from exact bounds (after the
per-channel weight and bias scales are aligned onto one accumulator scale), fused epilogues as
:class:`~codesign.rtl.formats.Requant`. :data:`IR_PASSES` then run on the IR:
:func:`check_single_output`, :func:`drop_zero_field_shifts`, :func:`per_channel_output`.
"""

from __future__ import annotations

import numpy as np

from codesign.errors import UnsupportedError
from codesign.rtl import ir
from codesign.rtl.formats import FixedFormat, Requant, bits_for, normalize_rounding, shift_round
from codesign.rtl.frontend.consts import align_weights, fit_bias, po2_exp
from codesign.rtl.frontend.graph import (
    AccOp,
    AddOp,
    AvgPoolOp,
    Graph,
    LinearOp,
    MaxPoolOp,
    Op,
    RequantOp,
    TransposeOp,
    TruncOp,
)

_SHORT = {"dense": "fc", "conv1d": "conv", "conv2d": "conv", "maxpool": "pool", "requant": "act",
          "flatten": "flat", "transpose": "perm", "add": "add", "avgpool": "avgpool"}


def relu_format(acc_e: int, hi: int) -> FixedFormat:
    """A bare relu on an accumulator: unsigned, the whole positive range, same scale."""
    return FixedFormat(max(bits_for(0, max(hi, 0)) - 1, 1), False, acc_e)


def sized(ly: ir.AccLayer) -> ir.AccLayer:
    """``ly`` with ``acc_fmt`` sized from its exact bounds (same scale)."""
    bounds = ly.acc_bounds()
    lo = min(b[0] for b in bounds) if bounds else 0
    hi = max(b[1] for b in bounds) if bounds else 0
    return ly.replace(acc_fmt=FixedFormat(bits_for(lo, hi), True, ly.acc_fmt.scale_exp))


def with_epilogue(ly: ir.AccLayer, op: AccOp) -> ir.AccLayer:
    """Attach the fused Relu / Quant of ``op`` to the sized accumulator layer ``ly``."""
    e = ly.acc_fmt.scale_exp
    if op.quant is not None:
        fmt = op.quant.fmt
        return ly.replace(requant=Requant(fmt.scale_exp - e, op.quant.rounding, op.relu, fmt), out_fmt=fmt)
    if op.relu:
        fmt = relu_format(e, max(b[1] for b in ly.acc_bounds()))
        return ly.replace(requant=Requant(0, "FLOOR", True, fmt), out_fmt=fmt)
    return ly.replace(out_fmt=ly.acc_fmt)


class _Builder:
    def __init__(self, g: Graph):
        self.g = g
        self.fmt: dict[str, FixedFormat] = {"": g.input_quant.fmt}
        self.layer_of: dict[str, int] = {"": -1}  # tensor -> index of the layer writing it
        self.layers: list[ir.Layer] = []
        self.counters: dict[str, int] = {}

    def name(self, kind: str) -> str:
        short = _SHORT[kind]
        self.counters[short] = self.counters.get(short, 0) + 1
        return f"{short}{self.counters[short]}"

    def emit(self, ly: ir.Layer, op: Op, out: str | None = None) -> None:
        srcs = tuple(self.layers[self.layer_of[t]].name if self.layer_of[t] >= 0 else "" for t in op.ins)
        ly = ly.replace(inputs=srcs, onnx_nodes=tuple(op.onnx_nodes))
        self.layers.append(ly)
        self.layer_of[out or op.out] = len(self.layers) - 1
        self.fmt[out or op.out] = ly.out_fmt

    def common(self, op: Op, kind: str) -> dict:
        f = self.fmt[op.ins[0]]
        return {"name": self.name(kind), "in_shape": tuple(op.in_shape), "out_shape": tuple(op.shape), "in_fmt": f,
                "out_fmt": f, "onnx_output": op.out}

    def run(self) -> list[ir.Layer]:
        for op in self.g.ops:
            getattr(self, f"_{type(op).__name__}")(op)
        return self.layers

    # ---- one method per fused op kind ---------------------------------------------------------------
    def _LinearOp(self, op: LinearOp) -> None:
        where = op.where
        conv = op.conv
        codes, we, ch_shift = align_weights(op.weights.codes, op.weights.scale_exp, 0 if conv else 1, where)
        kind = ("conv1d" if len(conv["kernel"]) == 1 else "conv2d") if conv else "dense"
        c = self.common(op, kind)
        acc = FixedFormat(1, True, c["in_fmt"].scale_exp + we)
        if conv:
            ly: ir.Linear = ir.Conv(**c, acc_fmt=acc, weights=codes, w_scale_exp=we, **conv)
        else:
            ly = ir.Dense(**c, acc_fmt=acc, weights=codes, w_scale_exp=we)
        if ch_shift is not None:
            ly = ly.replace(field_shift=ch_shift[ly.field_channels()] if conv else ch_shift)
        if op.bias is not None:
            ly = self._bias(ly, op.bias)
        self.emit(with_epilogue(sized(ly), op), op)

    def _bias(self, ly: ir.Linear, b) -> ir.Linear:
        fit = fit_bias(b.qconst, b.raw, ly.acc_fmt.scale_exp, ly.n_channels, b.where)
        fs = ly.field_shift
        if fit.finer:  # the bias is finer than the accumulator: the sum takes the bias scale, the weights move onto it
            k = fit.finer
            w = ly.weights.astype(np.int64) << k
            if int(np.max(np.abs(w), initial=0)) >= 1 << 62:
                raise UnsupportedError(f"{b.where}: bias scale 2^{int(fit.exps.min())} is too fine for the accumulator")
            fs = (np.zeros(ly.n_out, dtype=np.int64) if fs is None else fs) + k
            ly = ly.replace(weights=w, w_scale_exp=ly.w_scale_exp - k,
                            acc_fmt=FixedFormat(1, True, ly.acc_fmt.scale_exp - k))
        ly = ly.replace(bias=fit.codes)
        if fs is not None:  # the sum's scale per channel: the finer of accumulator and bias
            fs = np.minimum(fs, np.maximum(fit.exps - ly.acc_fmt.scale_exp, 0)[ly.field_channels()])
        return ly.replace(field_shift=fs)

    def _AddOp(self, op: AddOp) -> None:
        c = self.common(op, "add")
        fb = self.fmt[op.ins[1]]
        acc = FixedFormat(1, True, min(c["in_fmt"].scale_exp, fb.scale_exp))
        self.emit(with_epilogue(sized(ir.Add(**c, acc_fmt=acc, in_fmt2=fb)), op), op)

    def _AvgPoolOp(self, op: AvgPoolOp) -> None:
        c = self.common(op, "avgpool")
        kp = int(np.prod(op.kernel))
        acc = FixedFormat(1, True, c["in_fmt"].scale_exp - (kp.bit_length() - 1))
        ly = sized(ir.AvgPool(**c, acc_fmt=acc, kernel=op.kernel, stride=op.stride, pads=op.pads, layout=op.layout))
        if op.trunc is None:
            self.emit(with_epilogue(ly, op), op)
            return
        t = op.trunc
        rq, extra = trunc_requants(t, ly)
        ly = ly.replace(requant=rq, out_fmt=rq.out)
        if extra is None:
            self.emit(ly, op)
            return
        # a second rounding step (Trunc's ROUND, then its rounding mode): an intermediate the golden trace lacks
        self.emit(ly.replace(onnx_output=f"{op.out}::round_half_even"), op, out=f"{op.out}::round_half_even")
        second = Op(t.node, "Trunc", [f"{op.out}::round_half_even"], op.out, op.shape, op.shape, [t.node])
        c = self.common(second, "requant")
        c["out_fmt"] = extra.out
        self.emit(ir.Requantize(**c, requant=extra), second)

    def _MaxPoolOp(self, op: MaxPoolOp) -> None:
        c = self.common(op, "maxpool")
        self.emit(ir.MaxPool(**c, kernel=op.kernel, stride=op.stride, pads=(0,) * (2 * len(op.kernel)),
                             layout=op.layout), op)

    def _RequantOp(self, op: RequantOp) -> None:
        c = self.common(op, "requant")
        src = c["in_fmt"]
        if op.quant is not None:
            fmt = op.quant.fmt
            rq = Requant(fmt.scale_exp - src.scale_exp, op.quant.rounding, op.relu, fmt)
        else:  # a bare relu
            fmt = FixedFormat(max(src.bits - 1, 1), False, src.scale_exp) if src.signed else src
            rq = Requant(0, "FLOOR", True, fmt)
        c["out_fmt"] = fmt
        self.emit(ir.Requantize(**c, requant=rq), op)

    def _TransposeOp(self, op: TransposeOp) -> None:
        self.emit(ir.Transpose(**self.common(op, "transpose"), perm=op.perm), op)


def trunc_requants(t: TruncOp, ly: ir.AvgPool) -> tuple[Requant, Requant | None]:
    """QONNX Trunc after an average pool (the golden model's arithmetic): ``y0 = round_half_even(x /
    scale)``, then ``y = round_mode(y0 / 2^t)`` (v1: t = in_bits - out_bits, output scale = scale; v2:
    2^t = out_scale / scale, output saturated to out_bits). Returns the pool's requantizer and a second
    one when the two roundings cannot be merged into one."""
    params, at, where = t.params, t.attrs, t.where
    v2 = t.version >= 2 if t.version else len(params) >= 5
    if len(params) != (5 if v2 else 4) or any(p is None for p in params):
        raise UnsupportedError(f"{where}: Trunc v{2 if v2 else 1} needs {6 if v2 else 5} constant inputs")
    if np.any(np.asarray(params[1]) != 0):
        raise UnsupportedError(f"{where}: non-zero zero point")
    es = po2_exp(params[0], where)
    mode = normalize_rounding(at.get("rounding_mode", "FLOOR"))
    if v2:
        out_e = po2_exp(params[3], where)
        tt = out_e - es
        bits = int(np.asarray(params[4]).ravel()[0])
        final = FixedFormat(bits, bool(at.get("signed", 1)), out_e, bool(at.get("narrow", 0)))
    else:
        tt = int(np.asarray(params[2]).ravel()[0]) - int(np.asarray(params[3]).ravel()[0])
        out_e = es
        final = None  # no saturation: sized from the bounds
    r1 = es - ly.acc_fmt.scale_exp  # x / scale = acc / 2^r1
    bounds = ly.acc_bounds()
    lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)

    def fmt_for(rq_shift: int, rq_mode: str, lo: int, hi: int, e: int) -> FixedFormat:
        rl, rh = (int(v) for v in shift_round(np.array([lo, hi], dtype=object), rq_shift, rq_mode))
        return FixedFormat(bits_for(rl, rh), True, e)

    if r1 <= 0 or tt == 0:  # one rounding: exact left shift then round, or only Trunc's ROUND
        sh, md = (tt + r1, mode) if r1 <= 0 else (r1, "ROUND")
        return Requant(sh, md, False, final or fmt_for(sh, md, lo, hi, out_e)), None
    mid = fmt_for(r1, "ROUND", lo, hi, es)
    return Requant(r1, "ROUND", False, mid), Requant(tt, mode, False, final or fmt_for(tt, mode, mid.lo, mid.hi, out_e))


# ---- passes over the whole IR ------------------------------------------------------------------------
def check_single_output(m: ir.Model) -> ir.Model:
    """Every layer but the last feeds another layer (one graph output)."""
    used = {s for k in range(len(m.layers)) for s in m.sources(k)}
    for ly in m.layers[:-1]:
        if ly.name not in used:
            raise UnsupportedError(f"layer {ly.name} ({', '.join(ly.onnx_nodes)}): its output is not used "
                                   "(only one graph output is supported)")
    return m


def drop_zero_field_shifts(m: ir.Model) -> ir.Model:
    """Per-channel weight scales that differ only along the inputs leave no per-field shift."""
    return m.replace(layers=tuple(
        ly.replace(field_shift=None) if isinstance(ly, ir.AccLayer) and ly.field_shift is not None
        and not np.any(ly.field_shift) else ly for ly in m.layers))


def golden_exps(model: ir.Model) -> dict[str, np.ndarray | None]:
    """Per-field scale exponent of every layer output as the golden model keeps it (None: uniform).
    Per-channel weight scales give per-channel accumulator scales until a Quant requantizes them."""
    out: dict[str, np.ndarray | None] = {"": None}
    for k, ly in enumerate(model.layers):
        src = [out[s] for s in model.sources(k)]
        e = None
        if isinstance(ly, ir.AccLayer) and (ly.requant is None or ly.requant.relu_only):
            if ly.field_shift is not None:
                e = ly.acc_fmt.scale_exp + np.asarray(ly.field_shift, dtype=np.int64)
            if isinstance(ly, ir.Add) and any(s is not None for s in src):
                fa = src[0] if src[0] is not None else np.full(ly.n_out, ly.in_fmt.scale_exp)
                fb = src[1] if src[1] is not None else np.full(ly.n_out, ly.in_fmt2.scale_exp)
                e = np.minimum(fa, fb)
            elif isinstance(ly, ir.AvgPool) and src[0] is not None:
                e = np.array([src[0][t[0][0]] for t in ly.connections()]) - (int(np.prod(ly.kernel)).bit_length() - 1)
        elif isinstance(ly, ir.MaxPool | ir.Flatten) and src[0] is not None:
            e = src[0] if isinstance(ly, ir.Flatten) else np.array([src[0][t[0][0]] for t in ly.connections()])
        elif isinstance(ly, ir.Transpose) and src[0] is not None:
            e = src[0][ly.perm]
        elif isinstance(ly, ir.Requantize) and ly.requant.relu_only and src[0] is not None:
            e = src[0]
        if e is not None and np.all(e == e[0]):
            e = None
        out[ly.name] = e
    return out


def per_channel_output(model: ir.Model) -> ir.Model:
    """Per-channel scales are exact inside the IR (aligned); at the graph output the codes must carry
    the golden model's per-field scales: the last layer emits its fields at their own scales."""
    ge = golden_exps(model)
    layers = [ly.replace(onnx_output=f"{ly.onnx_output}::aligned") if ge[ly.name] is not None else ly
              for ly in model.layers[:-1]]  # aligned codes, not the golden model's per-channel ones
    last = model.layers[-1] if model.layers else None
    if last is None or ge[last.name] is None:
        return model.replace(layers=tuple(layers + ([last] if last is not None else [])))
    if isinstance(last, ir.AccLayer) and last.field_shift is not None and np.array_equal(
            ge[last.name], last.acc_fmt.scale_exp + np.asarray(last.field_shift, dtype=np.int64)):
        sh = np.asarray(last.field_shift, dtype=np.int64)
        bounds = last.acc_bounds()
        lo = min(b[0] >> int(t) for b, t in zip(bounds, sh, strict=True))
        hi = max(b[1] >> int(t) for b, t in zip(bounds, sh, strict=True))
        if last.requant is None:
            last = last.replace(field_out=True, out_fmt=FixedFormat(bits_for(lo, hi), True, last.acc_fmt.scale_exp))
        else:  # relu only
            fmt = relu_format(last.acc_fmt.scale_exp, hi)
            last = last.replace(field_out=True, requant=Requant(0, "FLOOR", True, fmt), out_fmt=fmt)
        return model.replace(layers=tuple(layers + [last]))
    raise UnsupportedError(f"graph output {model.output_name!r}: per-channel scales (from per-channel weight scales) "
                           f"reach the output through {last.kind} layer {last.name}; end the network with a Quant "
                           "(or with the per-channel linear layer itself)")


IR_PASSES = (check_single_output, drop_zero_field_shifts, per_channel_output)


def build_model(g: Graph) -> ir.Model:
    """The typed IR of a fused graph, after :data:`IR_PASSES`."""
    b = _Builder(g)
    layers = b.run()
    if layers and b.layer_of.get(g.output_name) != len(layers) - 1:
        raise UnsupportedError(f"graph output {g.output_onnx!r} is not the last layer's output")
    m = ir.Model(g.name, g.input_name, g.input_shape, g.input_quant.fmt, tuple(layers), g.output_onnx)
    for p in IR_PASSES:
        m = p(m)
    return m
