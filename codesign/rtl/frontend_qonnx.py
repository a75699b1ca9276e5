"""Lowering of a QONNX graph (Brevitas export, cleaned) to the integer IR (:mod:`codesign.rtl.ir`).

Supported (anything else raises :class:`~codesign.errors.UnsupportedError` naming the node and op):

* ``Quant`` on an initializer (weights/biases: quantized here with the node's rounding mode), on the
  graph input (defines the input format; Transpose/Reshape/Flatten before it are allowed) and on an
  activation (requantization, fused into the producing linear layer when it is its only consumer);
  scales must be powers of two (per tensor), zero points zero, bit widths integer.
* ``MatMul`` (activation x quantized constant), ``Gemm`` (alpha = beta = 1, transB), ``Add`` of a
  quantized (or exactly representable) constant bias, ``Conv`` (standard NCHW or qonnx channels-last
  domain; 1-D/2-D, stride, zero padding, group 1, no dilation), ``MaxPool`` (no padding), ``Relu``,
  ``Flatten``/``Reshape`` (no data movement), ``Transpose`` (a field permutation), ``Identity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from codesign.errors import UnsupportedError
from codesign.rtl.ir import FixedFormat, Layer, Model, Requant, bits_for, normalize_rounding

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
    scale_exp: int
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
        raise UnsupportedError(f"{what}: per-channel scales are not supported (need one power-of-two scale)")
    m, e = math.frexp(float(s[0]))
    if m != 0.5:
        raise UnsupportedError(f"{what}: scale {float(s[0])!r} is not a power of two")
    return e - 1


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

    tensors: dict[str, object] = {gin.name: _Act(None, tuple(in_shape), raw=True)}
    layers: list[Layer] = []
    raw_layers: list[Layer] = []
    input_fmt: FixedFormat | None = None
    counters: dict[str, int] = {}

    def new_name(kind: str) -> str:
        short = {"dense": "fc", "conv1d": "conv", "conv2d": "conv", "maxpool": "pool", "requant": "act",
                 "flatten": "flat", "transpose": "perm"}[kind]
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
        if layers and t.layer is not layers[-1] and not (t.layer is None and not layers):
            if not (t.layer is None and all(ly.is_wiring for ly in layers)):
                raise UnsupportedError(f"node {node.name or node.op_type!r} ({node.op_type}): only chains are supported "
                                       f"(input {name!r} is not the latest layer's output)")
        return t

    def cur_fmt(a: _Act) -> FixedFormat | None:
        return a.layer.out_fmt if a.layer is not None else input_fmt

    def add_layer(layer: Layer, out: str, shape: tuple[int, ...], raw: bool = False) -> None:
        layers.append(layer)
        tensors[out] = _Act(layer, shape, raw=raw)
        if raw:
            raw_layers.append(layer)

    def linear_pending(a: _Act) -> Layer | None:
        """The layer producing ``a`` if it is a linear layer still at accumulator precision."""
        ly = a.layer
        if ly is not None and ly.is_linear and (ly.requant is None or _relu_only(ly.requant)):
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
            e = _po2_exp(sc, where)
            mode = normalize_rounding(at.get("rounding_mode", "ROUND"))
            fmt = FixedFormat(int(bits), bool(at.get("signed", 1)), e, bool(at.get("narrow", 0)))
            if int(bits) == 1 and fmt.signed:
                raise UnsupportedError(f"{where}: 1-bit signed (bipolar) quantization is not supported")
            x = const(ins[0], node)
            if x is not None:
                v = np.asarray(x, dtype=np.float64) / 2.0**e
                codes = _ROUND_FNS[mode](np.clip(v, fmt.lo, fmt.hi)).astype(np.int64)
                tensors[out] = _QConst(codes, e, fmt)
                continue
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
            add_layer(rl, out, a.shape)
            continue

        if op in ("MatMul", "Gemm"):
            a = act(ins[0], node)
            _need_fmt(a, input_fmt, where)
            w = tensors.get(ins[1])
            if not isinstance(w, _QConst):
                raise UnsupportedError(f"{where}: weight {ins[1]!r} must be a Quant of an initializer")
            codes = w.codes
            if op == "Gemm":
                if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0 or at.get("transA", 0):
                    raise UnsupportedError(f"{where}: Gemm needs alpha=beta=1, transA=0")
                if at.get("transB", 0):
                    codes = codes.T
            if codes.ndim != 2 or int(np.prod(a.shape)) != codes.shape[0] or len(a.shape) != 1:
                raise UnsupportedError(f"{where}: needs a flat input vector (got shape {a.shape}, weights {codes.shape})")
            src = cur_fmt(a)
            acc_e = src.scale_exp + w.scale_exp
            n_out = codes.shape[1]
            ly = Layer(new_name("dense"), "dense", a.shape, (n_out,), src, src, out, weights=codes,
                       w_scale_exp=w.scale_exp, onnx_nodes=[nm])
            ly.acc_fmt = FixedFormat(1, True, acc_e)
            add_layer(ly, out, (n_out,))
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
            ly = Layer(new_name(kind), kind, a.shape, tuple(oshape), src, src, out, weights=w.codes,
                       w_scale_exp=w.scale_exp, kernel=k, stride=stride, pads=pads, layout=layout, onnx_nodes=[nm])
            ly.acc_fmt = FixedFormat(1, True, src.scale_exp + w.scale_exp)
            exp_shape = _conv_out_shape(a.shape, w.codes.shape[0], k, stride, pads, layout)
            if tuple(oshape) != tuple(exp_shape):
                raise UnsupportedError(f"{where}: output shape {oshape} does not match {exp_shape}")
            add_layer(ly, out, tuple(oshape))
            if len(ins) > 2 and ins[2]:
                _set_bias(ly, tensors.get(ins[2]), const(ins[2], node), where)
            _finish_acc(ly)
            continue

        if op == "Add":
            a_t, b_t = tensors.get(ins[0]), tensors.get(ins[1])
            if isinstance(b_t, _Act) and not isinstance(a_t, _Act):
                a_t, b_t, ins = b_t, a_t, [ins[1], ins[0]]
            if isinstance(a_t, _Act) and isinstance(b_t, _Act):
                raise UnsupportedError(f"{where}: elementwise Add of two activations (residual) is not supported yet")
            a = act(ins[0], node)
            ly = linear_pending(a)
            if ly is None or ly.requant is not None or ly.bias is not None or consumers.get(ins[0], 0) != 1:
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
            add_layer(rl, out, a.shape)
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
            stride = tuple(at.get("strides", list(k)))
            nd = len(k)
            ch = a.shape[-1] if layout == "NHWC" else a.shape[0]
            oshape = _conv_out_shape(a.shape, ch, k, stride, (0,) * (2 * nd), layout)
            src = cur_fmt(a)
            ly = Layer(new_name("maxpool"), "maxpool", a.shape, tuple(oshape), src, src, out, kernel=k,
                       stride=stride, pads=(0,) * (2 * nd), layout=layout, onnx_nodes=[nm])
            add_layer(ly, out, tuple(oshape))
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
            add_layer(ly, out, oshape, raw=a.raw)
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
    if any(ly.kind in ("conv1d", "conv2d", "dense", "maxpool", "requant") for ly in raw_layers):
        raise UnsupportedError("compute on the unquantized graph input")
    for ly in layers:
        if ly.requant is not None and ly.is_linear:
            _check_requant(ly)
    return Model(name, gin.name, tuple(in_shape), input_fmt, layers, outs[0])


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
        codes, e = qc.codes.astype(np.int64).ravel(), qc.scale_exp
        if e >= acc_e:
            b = codes << (e - acc_e)
        else:
            d = acc_e - e
            if np.any(codes % (1 << d)):
                raise UnsupportedError(f"{where}: bias scale 2^{e} is finer than the accumulator scale 2^{acc_e}")
            b = codes >> d
    elif raw is not None:
        v = np.asarray(raw, dtype=np.float64).ravel() * 2.0 ** (-acc_e)
        if not np.all(v == np.round(v)):
            raise UnsupportedError(f"{where}: float bias is not representable at the accumulator scale 2^{acc_e}")
        b = v.astype(np.int64)
    else:
        raise UnsupportedError(f"{where}: bias must be a constant")
    n_ch = ly.weights.shape[1] if ly.kind == "dense" else ly.weights.shape[0]
    if b.size == 1 and n_ch > 1:
        b = np.repeat(b, n_ch)
    if b.size != n_ch:
        raise UnsupportedError(f"{where}: bias has {b.size} values for {n_ch} outputs")
    ly.bias = b


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
