"""Dispatch of ONNX/QONNX nodes to the golden model's ops (see :mod:`codesign.golden.ops`)."""

from __future__ import annotations

import numpy as np

from codesign.golden import ops as O
from codesign.golden import window_ops as W
from codesign.golden.ops import T, err
from codesign.golden.quant import compress_exp, dyadic


def _static_int_list(node, t: T | None, what: str) -> list[int]:
    if t is None or t.dynamic:
        raise err(node, f"{what} must be a constant (dynamic shapes are not supported)")
    v = t.raw if t.raw is not None else O.to_compact(t.codes)
    return [int(i) for i in np.asarray(v).ravel()]


def _layout(ctx, node, x: T, f, out: str, internal: bool = False) -> T:
    """Apply a pure data-movement function ``f`` (same for codes and exponents)."""
    if not x.dynamic and x.raw is not None:
        raw = np.asarray(f(np.asarray(x.raw)))
        t = T(out, tuple(raw.shape), raw=raw)
        ctx.tensors[out] = t
        return t
    e_full = np.broadcast_to(O.broadcast_exp(x.exp, len(x.shape)), x.shape)
    e_out = compress_exp(np.asarray(f(np.ascontiguousarray(e_full))))
    shape = tuple(np.asarray(f(np.zeros(x.shape, dtype=np.int8))).shape)
    fs = None
    if x.fscale is not None:  # the float scale moves with the data, like the exponent
        from codesign.golden.fscale import compress_scale

        fs = compress_scale(np.asarray(f(np.ascontiguousarray(np.broadcast_to(x.fscale, x.shape)))))
    return ctx.emit(O.Op(lambda c: f(c), [x], shape, e_out, div=x.div, fscale=fs), out, internal)


def _static_reshape(t: T, shape: tuple[int, ...]) -> T:
    if t.raw is not None:
        return T(t.name, shape, raw=np.asarray(t.raw).reshape(shape))
    e_full = np.broadcast_to(O.broadcast_exp(t.exp, len(t.shape)), t.shape)
    return T(t.name, shape, compress_exp(e_full.reshape(shape)), codes=t.codes.reshape(shape))


def _transpose(ctx, node, x: T, perm, out: str, internal: bool = False) -> T:
    perm = list(perm)
    if x.dynamic and perm[0] != 0:
        raise err(node, f"perm {perm} moves the batch axis")
    return _layout(ctx, node, x, lambda a: np.transpose(a, perm), out, internal)


def _const(name: str, value) -> T:
    a = np.asarray(value, dtype=np.float64)
    return T(name, tuple(a.shape), raw=a)


def handle(ctx, node, ins: list[T | None], attrs: dict, kind: str) -> None:
    op = node.op_type
    out = node.output[0] if node.output else ""
    if op != "Trunc":
        for t in ins:
            if t is not None and t.div != 1:
                raise err(node, f"input {t.name!r} is an AveragePool with a non-power-of-two window "
                                f"({t.div}); only a Trunc may follow it")
    x = ins[0] if ins else None
    nd = len(x.shape) if x is not None else 0

    if kind == "qonnx":
        _handle_qonnx(ctx, node, ins, attrs, out)
    elif kind == "cl":
        _handle_channels_last(ctx, node, x, ins, attrs, out, nd)
    else:
        _handle_standard(ctx, node, x, ins, attrs, out, nd)


def _handle_qonnx(ctx, node, ins: list[T | None], attrs: dict, out: str) -> None:
    """QONNX operators: Quant, IntQuant, BipolarQuant, Trunc."""
    op = node.op_type
    if op in ("Quant", "IntQuant", "BipolarQuant"):
        ctx.emit(O.quant_op(node, ins, attrs), out)
    elif op == "Trunc":
        # like qonnx: the domain's opset version picks Trunc v1 (5 inputs) or v2 (6 inputs)
        version = getattr(ctx, "opsets", {}).get(node.domain, 0)
        v2 = version >= 2 if version else len(ins) >= 6
        if len(ins) != (6 if v2 else 5):
            raise err(node, f"Trunc v{2 if v2 else 1} (opset {version} of {node.domain!r}) needs "
                            f"{6 if v2 else 5} inputs, got {len(ins)}")
        ctx.emit(O.trunc_op(node, ins, attrs, v2), out)
    else:
        raise err(node, f"QONNX operator not supported by the golden model (supported: Quant, "
                        f"BipolarQuant, Trunc; standard ops: {_supported()})")


def _handle_channels_last(ctx, node, x: T, ins: list[T | None], attrs: dict, out: str, nd: int) -> None:
    """qonnx's channels-last operators (Conv, MaxPool, BatchNormalization)."""
    op = node.op_type
    to_cf = [0, nd - 1] + list(range(1, nd - 1))
    to_cl = [0] + list(range(2, nd)) + [1]
    if op == "Conv":
        _conv(ctx, node, x, ins[1], ins[2] if len(ins) > 2 else None, attrs, out, internal=False,
              channels_last=True)
    elif op == "MaxPool":
        xc = _transpose(ctx, node, x, to_cf, out + "::cf", True)
        _no_second_output(node)
        y = ctx.emit(W.pool_op(node, xc, attrs, "max"), out + "::pool", True)
        _transpose(ctx, node, y, to_cl, out)
    elif op == "BatchNormalization":
        _batchnorm(ctx, node, ins, attrs, nd - 1, out)
    else:
        raise err(node, "channels-last operator not supported by the golden model")


def _handle_standard(ctx, node, x: T, ins: list[T | None], attrs: dict, out: str, nd: int) -> None:
    """Standard ONNX operators."""
    op = node.op_type
    if op in ("MatMul",):
        ctx.emit(O.matmul_op(node, ins[0], ins[1]), out)
    elif op == "Gemm":
        _gemm(ctx, node, ins, attrs, out)
    elif op == "Conv":
        _conv(ctx, node, ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs, out, internal=False)
    elif op in ("Add", "Sub"):
        ctx.emit(O.add_op(ins[0], ins[1], 1 if op == "Add" else -1), out)
    elif op == "Mul":
        ctx.emit(O.mul_op(ins[0], ins[1]), out)
    elif op == "Div":
        ctx.emit(O.mul_op(ins[0], _reciprocal(node, ins[1])), out)
    elif op == "Relu":
        ctx.emit(O.relu_op(x), out)
    elif op == "MaxPool":
        _no_second_output(node)
        ctx.emit(W.pool_op(node, x, attrs, "max"), out)
    elif op == "AveragePool":
        ctx.emit(W.pool_op(node, x, attrs, "avg"), out)
    elif op == "GlobalAveragePool":
        ctx.emit(W.pool_op(node, x, attrs, "global"), out)
    elif op == "GlobalMaxPool":
        a = {"kernel_shape": list(x.shape[2:])}
        ctx.emit(W.pool_op(node, x, a, "max"), out)
    elif op == "BatchNormalization":
        _batchnorm(ctx, node, ins, attrs, 1, out)
    elif op == "Transpose":
        _transpose(ctx, node, x, attrs.get("perm", list(range(nd))[::-1]), out)
    elif op == "Reshape":
        _reshape(ctx, node, x, _static_int_list(node, ins[1], "Reshape shape"), int(attrs.get("allowzero", 0)), out)
    elif op == "Flatten":
        _flatten(ctx, node, x, int(attrs.get("axis", 1)), out, nd)
    elif op in ("Squeeze", "Unsqueeze"):
        _squeeze(ctx, node, x, ins, attrs, out, nd)
    elif op == "Concat":
        _concat(ctx, node, ins, int(attrs.get("axis", 0)), out)
    elif op in ("Identity", "Dropout"):
        if len(node.output) > 1 and node.output[1]:
            raise err(node, "the mask output of Dropout is not supported")
        _layout(ctx, node, x, lambda a: a, out)
    elif op == "Constant":
        ctx.tensors[out] = _constant(node, attrs, out)
    else:
        raise err(node, f"operator not supported by the golden model (supported: {_supported()})")


def _flatten(ctx, node, x: T, axis: int, out: str, nd: int) -> None:
    axis = axis + nd if axis < 0 else axis
    if x.dynamic and (axis == 0 or int(np.prod(x.shape[1:axis])) != 1):
        raise err(node, f"Flatten axis={axis} merges the batch dimension")
    rest = int(np.prod(x.shape[axis:]))
    if x.dynamic:
        _layout(ctx, node, x, lambda a: a.reshape(a.shape[0], rest), out)
    else:
        lead = int(np.prod(x.shape[:axis]))
        _layout(ctx, node, x, lambda a: a.reshape(lead, rest), out)


def _squeeze(ctx, node, x: T, ins: list[T | None], attrs: dict, out: str, nd: int) -> None:
    """Squeeze / Unsqueeze (axes from the attribute, opset 11, or the second input, opset 13)."""
    op = node.op_type
    if "axes" in attrs:
        axes = list(attrs["axes"])
    elif len(ins) > 1 and ins[1] is not None:
        axes = _static_int_list(node, ins[1], "axes")
    elif op == "Squeeze":
        axes = [i for i, d in enumerate(x.shape) if d == 1 and (i > 0 or not x.dynamic)]
    else:
        raise err(node, "Unsqueeze needs axes")
    n_out = nd + len(axes) if op == "Unsqueeze" else nd
    axes = sorted(a + n_out if a < 0 else a for a in axes)
    if x.dynamic and 0 in axes:
        raise err(node, "cannot squeeze/unsqueeze the batch axis")
    if op == "Squeeze":
        _layout(ctx, node, x, lambda a: np.squeeze(a, axis=tuple(axes)), out)
    else:
        _layout(ctx, node, x, lambda a: np.expand_dims(a, axis=tuple(axes)), out)


def _supported() -> str:
    from codesign.golden.graph import SUPPORTED

    return SUPPORTED


def _no_second_output(node) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise err(node, "the Indices output of MaxPool is not supported")


def _constant(node, attrs, out) -> T:
    if "value" in attrs:
        from onnx import numpy_helper

        v = numpy_helper.to_array(attrs["value"])
    elif "value_float" in attrs:
        v = np.array(attrs["value_float"], dtype=np.float32)
    elif "value_floats" in attrs:
        v = np.array(attrs["value_floats"], dtype=np.float32)
    elif "value_int" in attrs:
        v = np.array(attrs["value_int"], dtype=np.int64)
    elif "value_ints" in attrs:
        v = np.array(attrs["value_ints"], dtype=np.int64)
    else:
        raise err(node, "Constant without a supported value attribute")
    return T(out, tuple(v.shape), raw=v)


def _reciprocal(node, t: T) -> T:
    if t.dynamic:
        raise err(node, "division by a computed tensor is not supported (only by constant powers of two)")
    if t.raw is not None:
        c, e = dyadic(t.raw, f"node {node.name!r}: ")
        e = np.full(c.shape, e, dtype=np.int64)
    else:
        c, e = t.codes, np.broadcast_to(O.broadcast_exp(t.exp, len(t.shape)), t.shape)
    c = np.asarray(c)
    mag = np.abs(c.astype(object)) if c.dtype == object else np.abs(c)
    if np.any(mag == 0) or np.any([(int(m) & (int(m) - 1)) != 0 for m in np.ravel(mag)]):
        raise err(node, "division by a value that is not a power of two is not exact")
    lg = np.vectorize(lambda m: int(m).bit_length() - 1, otypes=[np.int64])(mag) if mag.size else mag
    sign = np.where(np.asarray(c) < 0, -1, 1).astype(np.int64)
    return T(t.name, t.shape, compress_exp(np.broadcast_to(-(e + lg), t.shape).copy()), codes=sign)


def _reshape(ctx, node, x: T, tgt: list[int], allowzero: int, out: str) -> None:
    tgt = [x.shape[i] if (v == 0 and not allowzero and i < len(x.shape)) else v for i, v in enumerate(tgt)]
    if not x.dynamic:
        _layout(ctx, node, x, lambda a: a.reshape(tgt), out)
        return
    per = int(np.prod(x.shape[1:]))
    rest = tgt[1:]
    if rest.count(-1) > 1 or (tgt[0] == -1 and -1 in rest):
        raise err(node, f"shape {tgt} is ambiguous with a variable batch")
    if -1 in rest:
        known = int(np.prod([v for v in rest if v != -1]))
        if known == 0 or per % known:
            raise err(node, f"cannot reshape {x.shape} to {tgt}")
        rest = [per // known if v == -1 else v for v in rest]
    if tgt[0] not in (-1, 1) or int(np.prod(rest)) != per:
        raise err(node, f"Reshape to {tgt} changes the batch dimension (input {x.shape}, batch first)")
    _layout(ctx, node, x, lambda a: a.reshape((a.shape[0], *rest)), out)


def _concat(ctx, node, ins, axis: int, out: str) -> None:
    ts = [t for t in ins if t is not None]
    nd = len(ts[0].shape)
    axis = axis + nd if axis < 0 else axis
    dyn = [t.dynamic for t in ts]
    if any(dyn) and not all(dyn):
        raise err(node, "concatenating a constant with a computed tensor is not supported")
    if all(dyn) and axis == 0:
        raise err(node, "concatenation along the batch axis is not supported")
    for t in ts:
        if t.codes is None and not t.dynamic:
            c, e = dyadic(t.raw, f"node {node.name!r}: ")
            t.codes, t.exp = c, np.full((1,) * len(t.shape), e, dtype=np.int64)
    es = [np.broadcast_to(O.broadcast_exp(t.exp, nd), t.shape) for t in ts]
    e_out = compress_exp(np.concatenate(es, axis=axis))
    shape = list(ts[0].shape)
    shape[axis] = sum(t.shape[axis] for t in ts)

    def fn(*cs):
        if any(c.dtype == object for c in cs):
            cs = [c.astype(object) for c in cs]
        return np.concatenate(cs, axis=axis)

    ctx.emit(O.Op(fn, ts, tuple(shape), e_out), out)


def _gemm(ctx, node, ins, attrs, out) -> None:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    if int(attrs.get("transA", 0)):
        if a.dynamic:
            raise err(node, "transA=1 on a computed tensor is not supported")
        a = _transpose(ctx, node, a, [1, 0], out + "::at", True)
    if int(attrs.get("transB", 0)):
        b = _transpose(ctx, node, b, [1, 0], out + "::bt", True) if not b.dynamic else \
            _layout(ctx, node, b, lambda z: np.swapaxes(z, -1, -2), out + "::bt", True)
    alpha = float(attrs.get("alpha", 1.0))
    beta = float(attrs.get("beta", 1.0))
    last = c is None and alpha == 1.0
    y = ctx.emit(O.matmul_op(node, a, b), out if last else out + "::mm", not last)
    if alpha != 1.0:
        last = c is None
        y = ctx.emit(O.mul_op(y, _const(node.name + "::alpha", alpha)), out if last else out + "::alpha", not last)
    if c is not None:
        if beta != 1.0:
            c = ctx.emit(O.mul_op(c, _const(node.name + "::beta", beta)), out + "::beta", True)
        ctx.emit(O.add_op(y, c), out)


def _conv(ctx, node, x, w, b, attrs, out, internal=True, channels_last=False) -> T:
    if w.codes is None and not w.dynamic:
        c, e = dyadic(w.raw, f"node {node.name!r}: ")
        w = T(w.name, w.shape, np.full((1,) * len(w.shape), e, dtype=np.int64), codes=c)
    conv = W.conv_op_cl if channels_last else W.conv_op
    if b is None:
        return ctx.emit(conv(node, x, w, attrs), out, internal)
    y = ctx.emit(conv(node, x, w, attrs), out + "::nobias", True)
    if b.dynamic:
        raise err(node, "Conv bias must be constant")
    if channels_last:
        bshape = (1,) * (len(x.shape) - 1) + (w.shape[0],)
    else:
        bshape = (1, w.shape[0]) + (1,) * (len(x.shape) - 2)
    if b.codes is None:
        c, e = dyadic(b.raw, f"node {node.name!r}: ")
        b = T(b.name, b.shape, np.full((1,) * len(b.shape), e, dtype=np.int64), codes=c)
    return ctx.emit(O.add_op(y, _static_reshape(b, bshape)), out, internal)


def _batchnorm(ctx, node, ins, attrs, ch_axis, out) -> None:
    x = ins[0]
    if len(node.output) > 1 and any(node.output[1:]):
        raise err(node, "training outputs are not supported")
    a, b = O.batchnorm_affine(node, ins, attrs, ch_axis, len(x.shape))
    y = ctx.emit(O.mul_op(x, a), out + "::scale", True)
    ctx.emit(O.add_op(y, b), out)
