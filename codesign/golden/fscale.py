"""Integer codes at a float (non-power-of-two) scale: the golden model's ``fscale`` tensors.

A float-scale quantizer's output is integer codes times a float scale (per tensor or per channel); a
MatMul / Conv of such codes with quantized weights is an exact integer accumulator whose scale is the
float64 product of the two scales (exact: two float32 scales have 24-bit mantissas). The integer kernels
of :mod:`codesign.golden.ops` run these codes unchanged (their exponent is 0); the float scale rides in
``T.fscale`` and is applied only where a float op reads the tensor (:func:`codesign.graph.reference.to_f32`).
"""

from __future__ import annotations

import numpy as np

from codesign.golden import ops as O
from codesign.golden import window_ops as W
from codesign.golden.ops import T, err
from codesign.golden.quant import compress_const_axes, compress_exp, po2_exponent
from codesign.graph.analysis import is_po2


def compress_scale(s: np.ndarray) -> np.ndarray:
    """Shrink a float scale array along axes where it is constant (keeps ndim), like ``compress_exp``."""
    return compress_const_axes(np.asarray(s, dtype=np.float64))


def real_scale(t: T) -> np.ndarray:
    """The float64 scale of an integer tensor: ``2**exp`` (dyadic) or its float scale (fscale)."""
    if t.fscale is not None:
        return t.fscale
    return np.ldexp(1.0, O.broadcast_exp(t.exp, len(t.shape)))


def uniform_along(node, s: np.ndarray | None, axes: tuple[int, ...], what: str) -> np.ndarray | None:
    """``s`` reduced (keepdims) over ``axes``; UnsupportedError if it varies along them."""
    if s is None:
        return None
    red = s
    for ax in axes:
        if red.shape[ax] > 1:
            first = np.take(red, [0], axis=ax)
            if not np.all(red == first):
                raise err(node, f"the {what} scale varies along the reduction axis {ax}: an integer accumulator "
                                "needs one scale per output (per tensor or per output channel)")
            red = first
    return red


def quant_params(node, attrs: dict, bw: np.ndarray | None) -> tuple[int, bool, bool, str]:
    """(bits, signed, narrow, rounding) of a Quant / BipolarQuant node."""
    from codesign.golden.quant import canonical_rounding

    if node.op_type == "BipolarQuant":
        return 1, True, False, "ROUND"
    b = np.asarray(bw).ravel()
    if b.size != 1 or float(b[0]) != int(b[0]) or int(b[0]) < 1 or int(b[0]) > 60:
        raise err(node, f"bit_width must be one integer in 1..60, got {b[:4].tolist()}")
    rounding = canonical_rounding(attrs.get("rounding_mode", "ROUND"), f"node {node.name!r}: ")
    return int(b[0]), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 1)), rounding


def codes_of_float(node, x: np.ndarray, scale, zeropt, attrs: dict, bw=None):
    """(codes, code_min, code_max, bipolar) of a Quant / BipolarQuant on float32 values ``x``: exactly the
    integer qonnx computes before multiplying back by the scale (:func:`codesign.graph.reference.quant_codes`)."""
    from codesign.golden.quant import max_int, min_int
    from codesign.graph.reference import quant_codes

    if node.op_type == "BipolarQuant":
        return np.where(np.asarray(x) >= 0.0, 1, -1).astype(np.int64), -1, 1, True
    bits, signed, narrow, rounding = quant_params(node, attrs, bw)
    z = np.asarray(zeropt)
    if np.any(z != np.round(z)):
        raise err(node, f"zero point {z.ravel()[:4].tolist()} is not an integer: the codes would not be integers")
    codes = quant_codes(x, scale, zeropt, bits, signed, narrow, rounding)
    if bits == 1 and signed:
        return codes, -1, 1, True
    zi = int(np.max(np.abs(z))) if z.size else 0
    return codes, min_int(signed, narrow, bits) - zi, max_int(signed, narrow, bits) + zi, False


def scale_repr(node, scale: np.ndarray, nd: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(exp, fscale) of a quantizer's output: a power-of-two scale becomes the exponent (dyadic), any other
    scale an fscale (exponent 0)."""
    s = np.asarray(scale, dtype=np.float64)
    s = s.reshape((1,) * (nd - s.ndim) + s.shape) if s.ndim <= nd else s
    if s.ndim > nd:
        raise err(node, f"scale shape {s.shape} does not broadcast to the input")
    if is_po2(s):
        return compress_exp(po2_exponent(s, f"node {node.name!r}: ")), None
    return np.zeros((1,) * nd, dtype=np.int64), compress_scale(s)


def matmul(ctx, node, a: T, b: T, out: str) -> T:
    """Exact integer MatMul of codes with a float scale on either side: the accumulator's scale is the
    product of the input scale (one per row) and the weight scale (one per output column)."""
    fa = uniform_along(node, a.fscale, (a.fscale.ndim - 1,) if a.fscale is not None else (), "input")
    fb = uniform_along(node, b.fscale, (b.fscale.ndim - 2,) if b.fscale is not None else (), "weight")
    op = O.matmul_op(node, a, b)
    nd = len(op.shape)
    f = np.ldexp(1.0, O.broadcast_exp(op.exp, nd))
    for part in (fa, fb):
        if part is not None:
            f = f * part.reshape((1,) * (nd - part.ndim) + part.shape)
    op.exp = np.zeros((1,) * nd, dtype=np.int64)
    op.fscale = compress_scale(f)
    return ctx.emit(op, out)


def conv(ctx, node, x: T, w: T, attrs: dict, out: str, channels_last: bool) -> T:
    """Exact integer Conv of codes with a float scale: the input scale must be one per tensor, the weight
    scale one per output channel; the accumulator's scale is their product."""
    nd = len(x.shape)
    fx = uniform_along(node, x.fscale, tuple(range(1, nd)), "input") if x.fscale is not None else None
    fw = uniform_along(node, w.fscale, tuple(range(1, nd)), "weight") if w.fscale is not None else None
    op = (W.conv_op_cl if channels_last else W.conv_op)(node, x, w, attrs)
    cshape = (1,) * (nd - 1) + (-1,) if channels_last else (1, -1) + (1,) * (nd - 2)
    f = np.ldexp(1.0, O.broadcast_exp(op.exp, nd))
    if fw is not None:
        f = f * fw.reshape(cshape)
    if fx is not None:
        f = f * fx.reshape((1,) * nd)
    op.exp = np.zeros((1,) * nd, dtype=np.int64)
    op.fscale = compress_scale(f)
    return ctx.emit(op, out)
