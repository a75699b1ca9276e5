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


def real_scale(fmt: FixedFormat) -> float:
    """The real scale of one code of a format (a float scale, or 2^scale_exp)."""
    return float(fmt.scale) if fmt.scale is not None else float(np.ldexp(1.0, fmt.scale_exp))


class _Builder:
    def __init__(self, g: Graph):
        self.g = g
        self.fmt: dict[str, FixedFormat] = {"": g.input_quant.fmt}
        self.layer_of: dict[str, int] = {"": -1}  # tensor -> index of the layer writing it
        self.layers: list[ir.Layer] = []
        self.counters: dict[str, int] = {}
        # per tensor: the real scale of its codes per channel (accumulators of float or per-channel weights)
        self.rscale: dict[str, np.ndarray] = {"": np.array([real_scale(g.input_quant.fmt)])}
        self.out_scales: np.ndarray | None = None  # the core output's real scale per field, when not dyadic

    def name(self, kind: str) -> str:
        short = _SHORT[kind]
        self.counters[short] = self.counters.get(short, 0) + 1
        return f"{short}{self.counters[short]}"

    def emit(self, ly: ir.Layer, op: Op, out: str | None = None, rscale: np.ndarray | None = None) -> None:
        srcs = tuple(self.layers[self.layer_of[t]].name if self.layer_of[t] >= 0 else "" for t in op.ins)
        ly = ly.replace(inputs=srcs, onnx_nodes=tuple(op.onnx_nodes))
        self.layers.append(ly)
        t = out or op.out
        self.layer_of[t] = len(self.layers) - 1
        self.fmt[t] = ly.out_fmt
        self.rscale[t] = rscale if rscale is not None else (
            self.rscale[op.ins[0]] if isinstance(ly, ir.MaxPool | ir.Transpose | ir.Flatten) else
            np.array([real_scale(ly.out_fmt)]))

    def thresholds(self, ly: ir.Layer, ep, scale: np.ndarray, ch_axis: int, where: str):
        """The epilogue ``ep`` of layer ``ly`` (accumulator at real scale ``scale`` per channel) as proven
        integer thresholds on its accumulator (or input codes)."""
        from codesign.graph.reference import model_consts  # noqa: F401  (the epilogue reads the model's constants)
        from codesign.rtl.frontend.epilogue import epilogue_codes_fn
        from codesign.rtl.frontend.thresholds import find_thresholds

        rank = len(ly.out_shape) + 1  # the accumulator tensor: batch, then the layer's output shape
        ch = ly.field_channels()
        n_ch = int(ch.max()) + 1 if ch.size else 0
        bounds = ly.acc_bounds() if isinstance(ly, ir.AccLayer) else [(ly.in_fmt.lo, ly.in_fmt.hi)] * ly.n_out
        lo = np.full(n_ch, np.iinfo(np.int64).max, np.int64)
        hi = np.full(n_ch, np.iinfo(np.int64).min, np.int64)
        for (a, b), c in zip(bounds, ch, strict=True):
            lo[c], hi[c] = min(lo[c], a), max(hi[c], b)
        sc = np.broadcast_to(np.asarray(scale, np.float64), (n_ch,))
        f = epilogue_codes_fn(self.g.model, ep, sc, ch_axis, rank, where)
        return find_thresholds(f, lo, hi, ep.quant.fmt, where)

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
        kind = ("conv1d" if len(conv["kernel"]) == 1 else "conv2d") if conv else "dense"
        c = self.common(op, kind)
        w = op.weights
        exact = w.fscale is None and c["in_fmt"].scale is None
        if exact:  # power-of-two scales: per-channel ones aligned onto one accumulator scale
            codes, we, ch_shift = align_weights(w.codes, w.scale_exp, 0 if conv else 1, where)
            s_w = np.ldexp(1.0, np.asarray(we, np.int64))
        else:  # float scales: the codes as they are, the scales go into the thresholds or the host
            codes, we, ch_shift = w.codes.astype(np.int64), 0, None
            s_w = _channel_scales(w.real_scale(), 0 if conv else 1, where)
        acc = FixedFormat(1, True, c["in_fmt"].scale_exp + we if exact else 0)
        if c["in_fmt"].bipolar:  # x = 2b - 1: weights 2w on the stored bits, -sum(w) into the bias
            codes, extra = _bipolar_inputs(codes, conv, where)
        else:
            extra = None
        if conv:
            ly: ir.Linear = ir.Conv(**c, acc_fmt=acc, weights=codes, w_scale_exp=we, **conv)
        else:
            ly = ir.Dense(**c, acc_fmt=acc, weights=codes, w_scale_exp=we)
        if ch_shift is not None:
            ly = ly.replace(field_shift=ch_shift[ly.field_channels()] if conv else ch_shift)
        if op.bias is not None:
            if not exact:
                raise UnsupportedError(f"{op.bias.where}: an integer bias on a float-scaled accumulator")
            ly = self._bias(ly, op.bias)
        if extra is not None:  # at the accumulator scale before the bias: a finer bias moved it left
            b = ly.bias if ly.bias is not None else np.zeros(len(extra), np.int64)
            k = acc.scale_exp - ly.acc_fmt.scale_exp
            ly = ly.replace(bias=b.astype(np.int64) + (np.asarray(extra, np.int64) << k))
        ly = sized(ly)
        scale = (np.ldexp(1.0, ly.acc_fmt.scale_exp) * np.ones(ly.n_channels) if exact
                 else real_scale(c["in_fmt"]) * np.broadcast_to(s_w, (ly.n_channels,)))
        if op.epilogue is not None:  # thresholds on the (aligned) accumulator: no per-field shifts
            th = self.thresholds(ly, op.epilogue, scale, self._ch_axis(ly), f"layer {op.node!r} ({op.op_type})")
            self.emit(ly.replace(requant=th, out_fmt=th.out, field_shift=None), op)
            return
        ly = with_epilogue(ly, op)
        if not exact and ly.requant is not None:  # pragma: no cover - FuseEpilogue takes every float requantization
            raise UnsupportedError(f"{where}: a float-scaled accumulator needs a float epilogue")
        self.emit(ly, op, rscale=None if exact else scale)

    def _ch_axis(self, ly: ir.Layer) -> int:
        return -1 if isinstance(ly, ir.Window) and ly.layout == "NHWC" else 1

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
        if c["in_fmt"].scale is not None or fb.scale is not None or c["in_fmt"].bipolar or fb.bipolar:
            raise UnsupportedError(f"{op.where}: residual Add of float-scaled or bipolar codes (only power-of-two "
                                   "scales add exactly)")
        acc = FixedFormat(1, True, min(c["in_fmt"].scale_exp, fb.scale_exp))
        ly = sized(ir.Add(**c, acc_fmt=acc, in_fmt2=fb))
        self.emit(self._with_any_epilogue(ly, op), op)

    def _with_any_epilogue(self, ly: ir.AccLayer, op: AccOp) -> ir.AccLayer:
        """A dyadic accumulator's fused relu / quantizer, or its float epilogue as thresholds."""
        if op.epilogue is None:
            return with_epilogue(ly, op)
        th = self.thresholds(ly, op.epilogue, np.array([np.ldexp(1.0, ly.acc_fmt.scale_exp)]), self._ch_axis(ly),
                             f"layer {op.node!r} ({op.op_type})")
        return ly.replace(requant=th, out_fmt=th.out)

    def _AvgPoolOp(self, op: AvgPoolOp) -> None:
        c = self.common(op, "avgpool")
        kp = int(np.prod(op.kernel))
        acc = FixedFormat(1, True, c["in_fmt"].scale_exp - (kp.bit_length() - 1))
        ly = sized(ir.AvgPool(**c, acc_fmt=acc, kernel=op.kernel, stride=op.stride, pads=op.pads, layout=op.layout))
        if op.trunc is None:
            self.emit(self._with_any_epilogue(ly, op), op)
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
        if op.epilogue is not None:  # thresholds on the input codes, per channel
            prod = self.layers[self.layer_of[op.ins[0]]] if self.layer_of[op.ins[0]] >= 0 else None
            ch = prod.field_channels() if isinstance(prod, ir.Window) else np.arange(int(np.prod(op.in_shape)))
            ly = ir.Requantize(**c, requant=Requant(0, "FLOOR", False, src), field_ch=ch)
            axis = -1 if isinstance(prod, ir.Window) and prod.layout == "NHWC" else 1
            th = self.thresholds(ly, op.epilogue, self.rscale[op.ins[0]], axis, f"node {op.node!r} ({op.op_type})")
            self.emit(ly.replace(requant=th, out_fmt=th.out), op)
            return
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


def _channel_scales(rs: np.ndarray, ch_axis: int, where: str) -> np.ndarray:
    """Per output channel, the weights' real scale (it must not vary along the other axes)."""
    rs = np.moveaxis(np.asarray(rs, np.float64), ch_axis, 0).reshape(rs.shape[ch_axis], -1)
    if not np.all(rs == rs[:, :1]):
        raise UnsupportedError(f"{where}: weight scales vary within an output channel")
    return rs[:, 0]


def _bipolar_inputs(codes: np.ndarray, conv: dict | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Bipolar inputs ``x = 2b - 1`` on the stored bits ``b``: ``sum w x = sum (2w) b - sum w``, the
    XNOR-popcount identity (``2 * popcount - N`` for +-1 weights) with the constant in the bias."""
    if conv is None:
        return 2 * codes, -codes.sum(axis=0)
    if any(conv["pads"]):
        raise UnsupportedError(f"{where}: a padded convolution of bipolar inputs (a padded position counts 0, "
                               "not +-1); use an unpadded convolution")
    return 2 * codes, -codes.reshape(codes.shape[0], -1).sum(axis=1)


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
    out_scales = None
    if layers:  # float-scaled output codes (per channel): the host needs their scales
        last = layers[-1]
        rs = np.broadcast_to(np.asarray(b.rscale[g.output_name], np.float64), (int(last.field_channels().max()) + 1,))
        per_field = rs[last.field_channels()]
        if not np.all(per_field == real_scale(last.out_fmt)) or last.out_fmt.scale is not None:
            out_scales = tuple(float(v) for v in per_field)
    m = ir.Model(g.name, g.core_input if g.host_pre else g.input_name, g.input_shape, g.input_quant.fmt, tuple(layers),
                 g.output_onnx,
                 g.host_pre, g.host_post, out_scales)
    for p in IR_PASSES:
        m = p(m)
    return m
