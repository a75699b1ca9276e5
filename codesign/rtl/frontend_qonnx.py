"""Lowering of a QONNX graph (Brevitas export, cleaned) to the integer IR (:mod:`codesign.rtl.ir`).

Supported (anything else raises :class:`~codesign.errors.UnsupportedError` naming the node and op):

* ``Quant`` on an initializer (weights/biases: quantized here with the node's rounding mode; power-of-two
  scales per tensor or per output channel), on the graph input (defines the input format;
  Transpose/Reshape/Flatten before it are allowed) and on an activation (requantization, fused into the
  producing accumulator layer when it is its only consumer); activation scales must be one power of two,
  zero points zero, bit widths integer.
* ``MatMul`` (activation x quantized constant), ``Gemm`` (alpha = beta = 1, transB), ``Add`` of a
  quantized (or exactly representable) constant bias, ``Add`` of two activations of the same shape
  (residual join, exact scale alignment), ``Conv`` (standard NCHW or qonnx channels-last domain; 1-D/2-D,
  stride, zero padding, group 1, no dilation), ``MaxPool`` (no padding), ``AveragePool`` /
  ``GlobalAveragePool`` over a power-of-two window (a sum; the following ``Trunc`` or ``Quant`` is its
  requantization), ``Relu``, ``Flatten``/``Reshape`` (no data movement), ``Transpose`` (a field
  permutation), ``Identity``.

The graph may fork and re-join (residual blocks): layers list their producers (``Layer.inputs``).
Per-channel weight scales are aligned to the finest channel scale (see :mod:`codesign.rtl.ir`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from codesign.errors import UnsupportedError
from codesign.rtl.ir import FixedFormat, Layer, Model, Requant, bits_for, normalize_rounding, shift_round

_ROUND_FNS = {
    "ROUND": np.round,
    "FLOOR": np.floor,
    "CEIL": np.ceil,
    "ROUND_TO_ZERO": np.fix,
    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5),
}


@dataclass
class _QConst:
    codes: np.ndarray
    scale_exp: int | np.ndarray  # an array (broadcast to codes.shape) for per-channel scales
    fmt: FixedFormat | None


@dataclass
class _Act:
    layer: Layer | None  # None: the graph input
    shape: tuple[int, ...]
    raw: bool = False  # a layout op applied to the unquantized graph input


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _po2_exp(scale: np.ndarray, what: str) -> int:
    s = np.asarray(scale, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(s == s[0]):
        raise UnsupportedError(f"{what}: per-channel activation scales are not supported (need one power-of-two "
                               "scale; per-channel scales are supported on weights and biases)")
    m, e = math.frexp(float(s[0]))
    if m != 0.5:
        raise UnsupportedError(f"{what}: scale {float(s[0])!r} is not a power of two")
    return e - 1


def _po2_exps(scale: np.ndarray, what: str) -> np.ndarray:
    """Exponents of a (per-channel) power-of-two scale, same shape as ``scale``."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise UnsupportedError(f"{what}: scale {s.ravel()[:4].tolist()} is not a positive power of two")
    m, e = np.frexp(s)
    if np.any(m != 0.5):
        raise UnsupportedError(f"{what}: scale {float(s[m != 0.5].ravel()[0])!r} is not a power of two")
    return (e - 1).astype(np.int64)


def _uniform(e) -> int | None:
    a = np.asarray(e)
    return int(a.ravel()[0]) if a.size and np.all(a == a.ravel()[0]) else None


def _align_weights(codes: np.ndarray, e, ch_axis: int, where: str):
    """(aligned codes, weight scale exponent, per-channel shift or None): per-channel codes are shifted
    onto the finest scale so one accumulator scale holds every channel exactly."""
    u = _uniform(e)
    if u is not None:
        return codes, u, None
    e = np.broadcast_to(np.asarray(e, dtype=np.int64), codes.shape)
    emin = int(e.min())
    other = tuple(a for a in range(codes.ndim) if a != ch_axis)
    ch_min = e.min(axis=other) if other else e
    aligned = codes.astype(np.int64) << (e - emin)
    if int(np.max(np.abs(aligned), initial=0)) >= 1 << 62:
        raise UnsupportedError(f"{where}: per-channel weight scales span too many powers of two")
    return aligned, emin, (ch_min - emin).astype(np.int64)


def load_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if hasattr(model, "model") and isinstance(model.model, onnx.ModelProto):  # qonnx ModelWrapper
        return model.model
    return onnx.load(str(model))


def lower(model: str | Path | onnx.ModelProto, name: str = "codesign") -> Model:
    """QONNX model (path, ModelProto or ModelWrapper) -> :class:`~codesign.rtl.ir.Model`."""
    mp = load_model(model)
    g = mp.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        shapes[vi.name] = dims
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    for o in g.output:
        consumers[o.name] = consumers.get(o.name, 0) + 1

    graph_inputs = [i for i in g.input if i.name not in inits]
    if len(graph_inputs) != 1:
        raise UnsupportedError(f"graph has {len(graph_inputs)} inputs; exactly one is supported")
    gin = graph_inputs[0]
    in_shape = shapes[gin.name][1:]
    if not in_shape or any(d <= 0 for d in in_shape):
        raise UnsupportedError(f"graph input {gin.name!r} needs a static shape (got {shapes[gin.name]})")

    opsets = {o.domain: int(o.version) for o in mp.opset_import}
    tensors: dict[str, object] = {gin.name: _Act(None, tuple(in_shape), raw=True)}
    layers: list[Layer] = []
    raw_layers: list[Layer] = []
    input_fmt: FixedFormat | None = None
    counters: dict[str, int] = {}

    def new_name(kind: str) -> str:
        short = {"dense": "fc", "conv1d": "conv", "conv2d": "conv", "maxpool": "pool", "requant": "act",
                 "flatten": "flat", "transpose": "perm", "add": "add", "avgpool": "avgpool"}[kind]
        counters[short] = counters.get(short, 0) + 1
        return f"{short}{counters[short]}"

    def const(name: str, node) -> np.ndarray | None:
        if name in inits:
            return inits[name]
        t = tensors.get(name)
        if isinstance(t, np.ndarray):
            return t
        return None

    def act(name: str, node) -> _Act:
        t = tensors.get(name)
        if not isinstance(t, _Act):
            raise UnsupportedError(f"node {node.name or node.op_type!r} ({node.op_type}): input {name!r} is not an activation tensor")
        return t

    def cur_fmt(a: _Act) -> FixedFormat | None:
        return a.layer.out_fmt if a.layer is not None else input_fmt

    def add_layer(layer: Layer, out: str, shape: tuple[int, ...], raw: bool = False, srcs=()) -> None:
        layer.inputs = [s.layer.name if s.layer is not None else "" for s in srcs]
        layers.append(layer)
        tensors[out] = _Act(layer, shape, raw=raw)
        if raw:
            raw_layers.append(layer)

    def linear_pending(a: _Act) -> Layer | None:
        """The layer producing ``a`` if it is an accumulator layer (linear, add, avgpool) still at
        accumulator precision (or only a relu on it)."""
        ly = a.layer
        if ly is not None and ly.is_acc and (ly.requant is None or _relu_only(ly.requant)):
            return ly
        return None

    for node in g.node:
        op = node.op_type
        nm = node.name or f"{op}({', '.join(node.input)})"
        at = _attrs(node)
        ins = list(node.input)
        out = node.output[0]
        where = f"node {nm!r} ({op})"

        if op == "Quant":
            sc, zp, bw = (const(i, node) for i in ins[1:4])
            if sc is None or zp is None or bw is None:
                raise UnsupportedError(f"{where}: scale, zero point and bit width must be constants")
            if np.any(np.asarray(zp) != 0):
                raise UnsupportedError(f"{where}: non-zero zero point")
            bits = float(np.asarray(bw).ravel()[0])
            if bits != int(bits) or bits < 1:
                raise UnsupportedError(f"{where}: bit width {bits} is not a positive integer")
            mode = normalize_rounding(at.get("rounding_mode", "ROUND"))
            x = const(ins[0], node)
            if x is not None:  # weights / bias: per-tensor or per-channel power-of-two scale
                ea = _po2_exps(sc, where)
                xv = np.asarray(x, dtype=np.float64)
                if ea.ndim > xv.ndim:
                    raise UnsupportedError(f"{where}: scale shape {ea.shape} does not broadcast to {xv.shape}")
                fmt = FixedFormat(int(bits), bool(at.get("signed", 1)), int(ea.min()), bool(at.get("narrow", 0)))
                v = xv / 2.0 ** ea.astype(np.float64)
                codes = _ROUND_FNS[mode](np.clip(v, fmt.lo, fmt.hi)).astype(np.int64)
                u = _uniform(ea)
                tensors[out] = _QConst(codes, u if u is not None else np.broadcast_to(ea, codes.shape).copy(), fmt)
                continue
            e = _po2_exp(sc, where)
            fmt = FixedFormat(int(bits), bool(at.get("signed", 1)), e, bool(at.get("narrow", 0)))
            if int(bits) == 1 and fmt.signed:
                raise UnsupportedError(f"{where}: 1-bit signed (bipolar) quantization is not supported")
            a = act(ins[0], node)
            if a.raw:  # the input quantizer
                if input_fmt is not None:
                    raise UnsupportedError(f"{where}: second quantizer on the raw input")
                input_fmt = fmt
                for ly in raw_layers:
                    ly.in_fmt = ly.out_fmt = fmt
                tensors[out] = _Act(a.layer, a.shape)
                continue
            src = cur_fmt(a)
            ly = linear_pending(a)
            if ly is not None and consumers.get(ins[0], 0) == 1:
                relu = ly.requant is not None and ly.requant.relu
                ly.requant = Requant(fmt.scale_exp - ly.acc_fmt.scale_exp, mode, relu, fmt)
                ly.out_fmt = fmt
                ly.onnx_output = out
                ly.onnx_nodes.append(nm)
                tensors[out] = _Act(ly, a.shape)
                continue
            if a.layer is not None and a.layer.kind == "requant" and _relu_only(a.layer.requant):
                a.layer.requant = Requant(fmt.scale_exp - a.layer.in_fmt.scale_exp, mode, True, fmt)
                a.layer.out_fmt = fmt
                a.layer.onnx_output = out
                tensors[out] = _Act(a.layer, a.shape)
                continue
            rl = Layer(new_name("requant"), "requant", a.shape, a.shape, src, fmt, out,
                       requant=Requant(fmt.scale_exp - src.scale_exp, mode, False, fmt), onnx_nodes=[nm])
            add_layer(rl, out, a.shape, srcs=[a])
            continue

        if op in ("MatMul", "Gemm"):
            a = act(ins[0], node)
            _need_fmt(a, input_fmt, where)
            w = tensors.get(ins[1])
            if not isinstance(w, _QConst):
                raise UnsupportedError(f"{where}: weight {ins[1]!r} must be a Quant of an initializer")
            codes, we = w.codes, w.scale_exp
            if op == "Gemm":
                if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0 or at.get("transA", 0):
                    raise UnsupportedError(f"{where}: Gemm needs alpha=beta=1, transA=0")
                if at.get("transB", 0):
                    codes = codes.T
                    we = we if isinstance(we, int) else np.asarray(we).T
            if codes.ndim != 2 or int(np.prod(a.shape)) != codes.shape[0] or len(a.shape) != 1:
                raise UnsupportedError(f"{where}: needs a flat input vector (got shape {a.shape}, weights {codes.shape})")
            codes, we, ch_shift = _align_weights(codes, we, 1, where)
            src = cur_fmt(a)
            acc_e = src.scale_exp + we
            n_out = codes.shape[1]
            ly = Layer(new_name("dense"), "dense", a.shape, (n_out,), src, src, out, weights=codes,
                       w_scale_exp=we, onnx_nodes=[nm])
            ly.acc_fmt = FixedFormat(1, True, acc_e)
            ly.field_shift = ch_shift
            add_layer(ly, out, (n_out,), srcs=[a])
            if op == "Gemm" and len(ins) > 2 and ins[2]:
                _set_bias(ly, tensors.get(ins[2]), const(ins[2], node), where)
            _finish_acc(ly)
            continue

        if op == "Conv":
            a = act(ins[0], node)
            _need_fmt(a, input_fmt, where)
            w = tensors.get(ins[1])
            if not isinstance(w, _QConst):
                raise UnsupportedError(f"{where}: weight {ins[1]!r} must be a Quant of an initializer")
            if at.get("group", 1) != 1:
                raise UnsupportedError(f"{where}: grouped/depthwise convolution (group={at['group']}) is not supported")
            if any(d != 1 for d in at.get("dilations", [1])):
                raise UnsupportedError(f"{where}: dilation is not supported")
            if at.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
                raise UnsupportedError(f"{where}: auto_pad is not supported (export explicit pads)")
            layout = "NHWC" if "channels_last" in node.domain else "NCHW"
            k = tuple(at.get("kernel_shape", w.codes.shape[2:] if layout == "NCHW" else w.codes.shape[1:-1]))
            nd = len(k)
            stride = tuple(at.get("strides", [1] * nd))
            pads = tuple(at.get("pads", [0] * (2 * nd)))
            oshape = shapes.get(out, ())[1:]
            if not oshape:
                oshape = _conv_out_shape(a.shape, w.codes.shape[0], k, stride, pads, layout)
            src = cur_fmt(a)
            kind = "conv1d" if nd == 1 else "conv2d"
            wcodes, we, ch_shift = _align_weights(w.codes, w.scale_exp, 0, where)
            ly = Layer(new_name(kind), kind, a.shape, tuple(oshape), src, src, out, weights=wcodes,
                       w_scale_exp=we, kernel=k, stride=stride, pads=pads, layout=layout, onnx_nodes=[nm])
            ly.acc_fmt = FixedFormat(1, True, src.scale_exp + we)
            exp_shape = _conv_out_shape(a.shape, w.codes.shape[0], k, stride, pads, layout)
            if tuple(oshape) != tuple(exp_shape):
                raise UnsupportedError(f"{where}: output shape {oshape} does not match {exp_shape}")
            if ch_shift is not None:
                ly.field_shift = ch_shift[ly.field_channels()]
            add_layer(ly, out, tuple(oshape), srcs=[a])
            if len(ins) > 2 and ins[2]:
                _set_bias(ly, tensors.get(ins[2]), const(ins[2], node), where)
            _finish_acc(ly)
            continue

        if op == "Add":
            a_t, b_t = tensors.get(ins[0]), tensors.get(ins[1])
            if isinstance(b_t, _Act) and not isinstance(a_t, _Act):
                a_t, b_t, ins = b_t, a_t, [ins[1], ins[0]]
            if isinstance(a_t, _Act) and isinstance(b_t, _Act):  # residual join
                for t in (a_t, b_t):
                    _need_fmt(t, input_fmt, where)
                if tuple(a_t.shape) != tuple(b_t.shape):
                    raise UnsupportedError(f"{where}: Add of activations with shapes {a_t.shape} and {b_t.shape} "
                                           "(broadcasting or a different layout) is not supported")
                fa, fb = cur_fmt(a_t), cur_fmt(b_t)
                ly = Layer(new_name("add"), "add", a_t.shape, a_t.shape, fa, fa, out, in_fmt2=fb, onnx_nodes=[nm])
                ly.acc_fmt = FixedFormat(1, True, min(fa.scale_exp, fb.scale_exp))
                _finish_acc(ly)
                add_layer(ly, out, a_t.shape, srcs=[a_t, b_t])
                continue
            a = act(ins[0], node)
            ly = linear_pending(a)
            if ly is None or not ly.is_linear or ly.requant is not None or ly.bias is not None or \
                    consumers.get(ins[0], 0) != 1:
                raise UnsupportedError(f"{where}: Add of a constant is only supported as the bias of a MatMul/Conv")
            _set_bias(ly, b_t, const(ins[1], node), where)
            _finish_acc(ly)
            ly.onnx_output = out
            ly.onnx_nodes.append(nm)
            tensors[out] = _Act(ly, a.shape)
            continue

        if op == "Relu":
            a = act(ins[0], node)
            _need_fmt(a, input_fmt, where)
            src = cur_fmt(a)
            ly = linear_pending(a)
            relu_fmt = FixedFormat(max(src.bits - 1, 1), False, src.scale_exp) if src.signed else src
            if ly is not None and ly.requant is None and consumers.get(ins[0], 0) == 1:
                ly.requant = Requant(0, "FLOOR", True, relu_fmt)
                ly.out_fmt = relu_fmt
                ly.onnx_output = out
                ly.onnx_nodes.append(nm)
                tensors[out] = _Act(ly, a.shape)
                continue
            rl = Layer(new_name("requant"), "requant", a.shape, a.shape, src, relu_fmt, out,
                       requant=Requant(0, "FLOOR", True, relu_fmt), onnx_nodes=[nm])
            add_layer(rl, out, a.shape, srcs=[a])
            continue

        if op == "MaxPool":
            a = act(ins[0], node)
            _need_fmt(a, input_fmt, where)
            if any(p != 0 for p in at.get("pads", [0])) or at.get("ceil_mode", 0):
                raise UnsupportedError(f"{where}: MaxPool with padding/ceil_mode is not supported")
            if any(d != 1 for d in at.get("dilations", [1])):
                raise UnsupportedError(f"{where}: MaxPool dilation is not supported")
            layout = "NHWC" if "channels_last" in node.domain else "NCHW"
            k = tuple(at["kernel_shape"])
            stride = tuple(at.get("strides", [1] * len(k)))  # ONNX default: 1
            nd = len(k)
            ch = a.shape[-1] if layout == "NHWC" else a.shape[0]
            oshape = _conv_out_shape(a.shape, ch, k, stride, (0,) * (2 * nd), layout)
            src = cur_fmt(a)
            ly = Layer(new_name("maxpool"), "maxpool", a.shape, tuple(oshape), src, src, out, kernel=k,
                       stride=stride, pads=(0,) * (2 * nd), layout=layout, onnx_nodes=[nm])
            add_layer(ly, out, tuple(oshape), srcs=[a])
            continue

        if op in ("AveragePool", "GlobalAveragePool"):
            a = act(ins[0], node)
            _need_fmt(a, input_fmt, where)
            layout = "NHWC" if "channels_last" in node.domain else "NCHW"
            nd = len(a.shape) - 1
            if nd < 1:
                raise UnsupportedError(f"{where}: needs a feature map (got shape {a.shape})")
            sp = a.shape[:nd] if layout == "NHWC" else a.shape[1:]
            if op == "GlobalAveragePool":
                k, stride, pads = tuple(sp), tuple(sp), (0,) * (2 * nd)
            else:
                if at.get("auto_pad", "NOTSET") not in ("NOTSET", "") or at.get("ceil_mode", 0):
                    raise UnsupportedError(f"{where}: auto_pad / ceil_mode are not supported (export explicit pads)")
                if any(d != 1 for d in at.get("dilations", [1])):
                    raise UnsupportedError(f"{where}: AveragePool dilation is not supported")
                k = tuple(at["kernel_shape"])
                stride = tuple(at.get("strides", [1] * len(k)))
                pads = tuple(at.get("pads", [0] * (2 * len(k))))
                if any(pads) and not at.get("count_include_pad", 0):
                    raise UnsupportedError(f"{where}: padding with count_include_pad=0 divides by a varying count")
            kp = int(np.prod(k))
            if kp & (kp - 1):
                raise UnsupportedError(f"{where}: average over a window of {kp} elements: only power-of-two windows "
                                       "are supported (the division is a shift)")
            ch = a.shape[-1] if layout == "NHWC" else a.shape[0]
            oshape = _conv_out_shape(a.shape, ch, k, stride, pads, layout)
            src = cur_fmt(a)
            ly = Layer(new_name("avgpool"), "avgpool", a.shape, tuple(oshape), src, src, out, kernel=k,
                       stride=stride, pads=pads, layout=layout, onnx_nodes=[nm])
            ly.acc_fmt = FixedFormat(1, True, src.scale_exp - (kp.bit_length() - 1))
            _finish_acc(ly)
            add_layer(ly, out, tuple(oshape), srcs=[a])
            continue

        if op == "Trunc":
            a = act(ins[0], node)
            ly = a.layer
            if ly is None or ly.kind != "avgpool" or ly.requant is not None or consumers.get(ins[0], 0) != 1:
                raise UnsupportedError(f"{where}: Trunc is only supported directly after AveragePool/GlobalAveragePool")
            extra = _lower_trunc(node, at, [const(i, node) for i in ins[1:]], ly, opsets.get(node.domain, 0), where)
            ly.onnx_output = out
            ly.onnx_nodes.append(nm)
            tensors[out] = _Act(ly, a.shape)
            if extra is not None:  # a second rounding step (Trunc's ROUND, then its rounding mode)
                ly.onnx_output = f"{out}::round_half_even"  # an intermediate the golden trace does not hold
                rl = Layer(new_name("requant"), "requant", a.shape, a.shape, ly.out_fmt, extra.out, out,
                           requant=extra, onnx_nodes=[nm])
                add_layer(rl, out, a.shape, srcs=[tensors[out]])
            continue

        if op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity"):
            a = act(ins[0], node)
            oshape = shapes.get(out, ())[1:] if out in shapes else None
            if op == "Flatten" or oshape is None or len(shapes.get(out, ())) == 0:
                oshape = (int(np.prod(a.shape)),) if op != "Identity" else a.shape
            if int(np.prod(oshape)) != int(np.prod(a.shape)):
                raise UnsupportedError(f"{where}: reshape {a.shape} -> {oshape} changes the batch dimension")
            tensors[out] = _Act(a.layer, tuple(oshape), raw=a.raw)  # C-order reshape: no data movement
            continue

        if op == "Transpose":
            a = act(ins[0], node)
            perm = list(at.get("perm", []))
            if not perm or perm[0] != 0:
                raise UnsupportedError(f"{where}: Transpose must keep the batch axis first (perm={perm})")
            p = [d - 1 for d in perm[1:]]
            idx = np.arange(int(np.prod(a.shape))).reshape(a.shape).transpose(p)
            oshape = tuple(idx.shape)
            fmt = cur_fmt(a) or FixedFormat(8, True, 0)
            if np.array_equal(idx.ravel(), np.arange(idx.size)):
                tensors[out] = _Act(a.layer, oshape, raw=a.raw)
                continue
            ly = Layer(new_name("transpose"), "transpose", a.shape, oshape, fmt, fmt, out,
                       perm=idx.ravel().astype(np.int64), onnx_nodes=[nm])
            add_layer(ly, out, oshape, raw=a.raw, srcs=[a])
            continue

        raise UnsupportedError(f"{where}: op {node.domain + '.' if node.domain else ''}{op} is not supported by the RTL backend")

    if input_fmt is None:
        raise UnsupportedError(f"graph input {gin.name!r} has no Quant node: the input format is unknown")
    outs = [o.name for o in g.output]
    if len(outs) != 1:
        raise UnsupportedError(f"graph has {len(outs)} outputs; exactly one is supported")
    t = tensors.get(outs[0])
    if not isinstance(t, _Act) or (layers and t.layer is not layers[-1]):
        raise UnsupportedError(f"graph output {outs[0]!r} is not the last layer's output")
    if any(ly.kind not in ("flatten", "transpose") for ly in raw_layers):
        raise UnsupportedError("compute on the unquantized graph input")
    used = {s for ly in layers for s in (ly.inputs or [])}
    for ly in layers[:-1]:
        if ly.name not in used:
            raise UnsupportedError(f"layer {ly.name} ({', '.join(ly.onnx_nodes)}): its output is not used "
                                   "(only one graph output is supported)")
    for ly in layers:
        if ly.requant is not None and ly.is_acc:
            _check_requant(ly)
        if ly.field_shift is not None and not np.any(ly.field_shift):
            ly.field_shift = None  # the channel scales differ only along the inputs
    model = Model(name, gin.name, tuple(in_shape), input_fmt, layers, outs[0])
    _check_scales(model)
    return model


def _relu_only(rq: Requant | None) -> bool:
    return rq is not None and rq.relu and rq.shift == 0 and rq.rounding == "FLOOR" and not rq.out.narrow and \
        rq.out.signed is False


def _need_fmt(a: _Act, input_fmt, where: str) -> None:
    if a.raw and input_fmt is None:
        raise UnsupportedError(f"{where}: applied to the unquantized graph input (add an input QuantIdentity)")


def _conv_out_shape(ishape, oc, k, stride, pads, layout):
    nd = len(k)
    sp = ishape[:nd] if layout == "NHWC" else ishape[1:]
    if len(sp) != nd:
        raise UnsupportedError(f"kernel rank {nd} does not match input shape {ishape}")
    o = [(sp[d] + pads[d] + pads[d + nd] - k[d]) // stride[d] + 1 for d in range(nd)]
    return (*o, oc) if layout == "NHWC" else (oc, *o)


def _set_bias(ly: Layer, qc, raw, where: str) -> None:
    acc_e = ly.acc_fmt.scale_exp
    if isinstance(qc, _QConst):
        codes = qc.codes.astype(np.int64).ravel()
        e = np.broadcast_to(np.asarray(qc.scale_exp, dtype=np.int64), qc.codes.shape).ravel()
        d = e - acc_e
        if np.any((d < 0) & (codes % (1 << np.maximum(-d, 0)) != 0)):
            # the bias is finer than the accumulator: the sum takes the bias scale (as the golden model's
            # Add does), i.e. the weights move onto it
            k = int(-d.min())
            ly.weights = ly.weights.astype(np.int64) << k
            if int(np.max(np.abs(ly.weights), initial=0)) >= 1 << 62:
                raise UnsupportedError(f"{where}: bias scale 2^{int(e.min())} is too fine for the accumulator")
            ly.w_scale_exp -= k
            acc_e -= k
            ly.acc_fmt = FixedFormat(1, True, acc_e)
            ly.field_shift = (np.zeros(ly.n_out, dtype=np.int64) if ly.field_shift is None else ly.field_shift) + k
            d = e - acc_e
        b = np.where(d >= 0, codes << np.maximum(d, 0), codes >> np.maximum(-d, 0))
        b_exp = e
    elif raw is not None:
        v = np.asarray(raw, dtype=np.float64).ravel() * 2.0 ** (-acc_e)
        if not np.all(v == np.round(v)):
            raise UnsupportedError(f"{where}: float bias is not representable at the accumulator scale 2^{acc_e}")
        b = v.astype(np.int64)
        nz = b[b != 0]  # one exponent for the whole constant (its finest set bit), as the golden model
        tz = int(min((int(x) & -int(x)).bit_length() - 1 for x in nz)) if nz.size else -acc_e
        b_exp = np.full(b.shape, acc_e + tz, dtype=np.int64)
    else:
        raise UnsupportedError(f"{where}: bias must be a constant")
    n_ch = ly.weights.shape[1] if ly.kind == "dense" else ly.weights.shape[0]
    if b.size == 1 and n_ch > 1:
        b = np.repeat(b, n_ch)
        b_exp = np.repeat(b_exp, n_ch)
    if b.size != n_ch:
        raise UnsupportedError(f"{where}: bias has {b.size} values for {n_ch} outputs")
    ly.bias = b
    if ly.field_shift is not None:  # the sum's scale per channel: the finer of accumulator and bias
        ch = ly.field_channels()
        ly.field_shift = np.minimum(ly.field_shift, np.maximum(b_exp - acc_e, 0)[ch])


def _finish_acc(ly: Layer) -> None:
    bounds = ly.acc_bounds()
    lo = min(b[0] for b in bounds) if bounds else 0
    hi = max(b[1] for b in bounds) if bounds else 0
    ly.acc_fmt = FixedFormat(bits_for(lo, hi), True, ly.acc_fmt.scale_exp)
    if ly.requant is None:
        ly.out_fmt = ly.acc_fmt


def _check_requant(ly: Layer) -> None:
    """A Relu without a following Quant: its unsigned output holds the whole positive accumulator range."""
    if _relu_only(ly.requant):
        hi = max(b[1] for b in ly.acc_bounds())
        fmt = FixedFormat(max(bits_for(0, hi) - 1, 1), False, ly.acc_fmt.scale_exp)
        ly.requant = Requant(0, "FLOOR", True, fmt)
        ly.out_fmt = fmt


def _golden_exps(model: Model) -> dict[str, np.ndarray | None]:
    """Per-field scale exponent of every layer output as the golden model keeps it (None: uniform).
    Per-channel weight scales give per-channel accumulator scales until a Quant requantizes them."""
    out: dict[str, np.ndarray | None] = {"": None}
    for k, ly in enumerate(model.layers):
        src = [out[s] for s in model.sources(k)]
        e = None
        if ly.is_acc and (ly.requant is None or _relu_only(ly.requant)):
            if ly.field_shift is not None:
                e = ly.acc_fmt.scale_exp + np.asarray(ly.field_shift, dtype=np.int64)
            if ly.kind == "add" and any(s is not None for s in src):
                fa = src[0] if src[0] is not None else np.full(ly.n_out, ly.in_fmt.scale_exp)
                fb = src[1] if src[1] is not None else np.full(ly.n_out, ly.in_fmt2.scale_exp)
                e = np.minimum(fa, fb)
            elif ly.kind == "avgpool" and src[0] is not None:
                e = np.array([src[0][t[0][0]] for t in ly.connections()]) - (int(np.prod(ly.kernel)).bit_length() - 1)
        elif ly.kind in ("maxpool", "flatten") and src[0] is not None:
            e = src[0] if ly.kind == "flatten" else np.array([src[0][t[0][0]] for t in ly.connections()])
        elif ly.kind == "transpose" and src[0] is not None:
            e = src[0][ly.perm]
        elif ly.kind == "requant" and _relu_only(ly.requant) and src[0] is not None:
            e = src[0]
        if e is not None and np.all(e == e[0]):
            e = None
        out[ly.name] = e
    return out


def _check_scales(model: Model) -> None:
    """Per-channel scales are exact inside the IR (aligned); at the graph output the codes must carry
    the golden model's per-field scales: the last layer emits its fields at their own scales."""
    ge = _golden_exps(model)
    for ly in model.layers[:-1]:  # aligned codes, not the golden model's per-channel ones: not comparable
        if ge[ly.name] is not None:
            ly.onnx_output = f"{ly.onnx_output}::aligned"
    last = model.layers[-1] if model.layers else None
    if last is None or ge[last.name] is None:
        return
    if last.is_acc and last.field_shift is not None and np.array_equal(
            ge[last.name], last.acc_fmt.scale_exp + np.asarray(last.field_shift, dtype=np.int64)):
        last.field_out = True
        sh = np.asarray(last.field_shift, dtype=np.int64)
        bounds = last.acc_bounds()
        lo = min(b[0] >> int(t) for b, t in zip(bounds, sh, strict=True))
        hi = max(b[1] >> int(t) for b, t in zip(bounds, sh, strict=True))
        if last.requant is None:
            last.out_fmt = FixedFormat(bits_for(lo, hi), True, last.acc_fmt.scale_exp)
        else:  # relu only
            fmt = FixedFormat(max(bits_for(0, max(hi, 0)) - 1, 1), False, last.acc_fmt.scale_exp)
            last.requant = Requant(0, "FLOOR", True, fmt)
            last.out_fmt = fmt
        return
    raise UnsupportedError(f"graph output {model.output_name!r}: per-channel scales (from per-channel weight scales) "
                           f"reach the output through {last.kind} layer {last.name}; end the network with a Quant "
                           "(or with the per-channel linear layer itself)")


def _lower_trunc(node, at, params, ly: Layer, version: int, where: str) -> Requant | None:
    """QONNX Trunc after an average pool (the golden model's arithmetic): ``y0 = round_half_even(x /
    scale)``, then ``y = round_mode(y0 / 2^t)`` (v1: t = in_bits - out_bits, output scale = scale; v2:
    2^t = out_scale / scale, output saturated to out_bits). Sets ``ly.requant``; returns a second
    Requant when the two roundings cannot be merged into one."""
    v2 = version >= 2 if version else len(params) >= 5
    if len(params) != (5 if v2 else 4) or any(p is None for p in params):
        raise UnsupportedError(f"{where}: Trunc v{2 if v2 else 1} needs {6 if v2 else 5} constant inputs")
    if np.any(np.asarray(params[1]) != 0):
        raise UnsupportedError(f"{where}: non-zero zero point")
    es = _po2_exp(params[0], where)
    mode = normalize_rounding(at.get("rounding_mode", "FLOOR"))
    if v2:
        out_e = _po2_exp(params[3], where)
        t = out_e - es
        bits = int(np.asarray(params[4]).ravel()[0])
        final = FixedFormat(bits, bool(at.get("signed", 1)), out_e, bool(at.get("narrow", 0)))
    else:
        t = int(np.asarray(params[2]).ravel()[0]) - int(np.asarray(params[3]).ravel()[0])
        out_e = es
        final = None  # no saturation: sized from the bounds
    r1 = es - ly.acc_fmt.scale_exp  # x / scale = acc / 2^r1
    lo, hi = (min(b[0] for b in ly.acc_bounds()), max(b[1] for b in ly.acc_bounds()))

    def fmt_for(rq_shift: int, rq_mode: str, lo: int, hi: int, e: int) -> FixedFormat:
        rl, rh = (int(v) for v in shift_round(np.array([lo, hi], dtype=object), rq_shift, rq_mode))
        return FixedFormat(bits_for(rl, rh), True, e)

    if r1 <= 0 or t == 0:  # one rounding: exact left shift then round, or only Trunc's ROUND
        sh, md = (t + r1, mode) if r1 <= 0 else (r1, "ROUND")
        fmt = final or fmt_for(sh, md, lo, hi, out_e)
        ly.requant = Requant(sh, md, False, fmt)
        ly.out_fmt = fmt
        return None
    mid = fmt_for(r1, "ROUND", lo, hi, es)
    ly.requant = Requant(r1, "ROUND", False, mid)
    ly.out_fmt = mid
    fmt = final or fmt_for(t, mode, mid.lo, mid.hi, out_e)
    return Requant(t, mode, False, fmt)
