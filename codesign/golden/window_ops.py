"""Window operators of the golden model: Conv (channels-first and channels-last), MaxPool, AveragePool,
GlobalAveragePool, on integer codes (see :mod:`codesign.golden.ops` for ``T``, ``Op`` and the exact
matmul they share)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from codesign.golden.ops import (
    FLOAT_EXACT,
    Op,
    T,
    amax,
    broadcast_exp,
    err,
    exact_matmul,
    lshift,
    num,
    split_sign,
)
from codesign.golden.quant import compress_exp


def _pads(node, attrs, in_sp, k_eff, strides) -> tuple[list[int], list[int]]:
    n = len(in_sp)
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * 2 * n))
        return pads[:n], pads[n:]
    if auto == "VALID":
        return [0] * n, [0] * n
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pb, pe = [], []
        for i in range(n):
            out = -(-in_sp[i] // strides[i])
            tot = max(0, (out - 1) * strides[i] + k_eff[i] - in_sp[i])
            small, large = tot // 2, tot - tot // 2
            pb.append(small if auto == "SAME_UPPER" else large)
            pe.append(large if auto == "SAME_UPPER" else small)
        return pb, pe
    raise err(node, f"auto_pad {auto!r} not supported")


def window_geometry(node, attrs, in_sp, kernel):
    n = len(in_sp)
    strides = list(attrs.get("strides", [1] * n))
    dil = list(attrs.get("dilations", [1] * n))
    k_eff = [(kernel[i] - 1) * dil[i] + 1 for i in range(n)]
    pb, pe = _pads(node, attrs, in_sp, k_eff, strides)
    ceil_mode = int(attrs.get("ceil_mode", 0))
    out = []
    extra = []
    for i in range(n):
        span = in_sp[i] + pb[i] + pe[i] - k_eff[i]
        if span < 0:
            raise err(node, f"kernel {kernel} larger than padded input {in_sp}")
        o = span // strides[i] + 1
        if ceil_mode:
            o = -(-span // strides[i]) + 1
            if (o - 1) * strides[i] >= in_sp[i] + pb[i]:
                o -= 1
        out.append(o)
        extra.append(max(0, (o - 1) * strides[i] + k_eff[i] - (in_sp[i] + pb[i] + pe[i])))
    return strides, dil, k_eff, pb, pe, out, extra


def windows(x: np.ndarray, n_sp: int, kernel, strides, dil, k_eff, pb, pe, extra, pad_value, out,
            channels_last: bool = False):
    """View (N, C, *out, *kernel) of the padded input; (N, *out, C, *kernel) when channels_last."""
    if channels_last:
        pad = [(0, 0)] + [(pb[i], pe[i] + extra[i]) for i in range(n_sp)] + [(0, 0)]
        axes = tuple(range(1, 1 + n_sp))
    else:
        pad = [(0, 0)] * (x.ndim - n_sp) + [(pb[i], pe[i] + extra[i]) for i in range(n_sp)]
        axes = tuple(range(x.ndim - n_sp, x.ndim))
    if any(p != (0, 0) for p in pad):
        if x.dtype == object:
            xp = np.full(tuple(x.shape[j] + pad[j][0] + pad[j][1] for j in range(x.ndim)), pad_value, dtype=object)
            xp[tuple(slice(p[0], p[0] + x.shape[j]) for j, p in enumerate(pad))] = x
            x = xp
        else:
            x = np.pad(x, pad, constant_values=pad_value)
    w = sliding_window_view(x, k_eff, axis=axes)
    sl = [slice(None)] * (1 if channels_last else x.ndim - n_sp)
    sl += [slice(0, (out[i] - 1) * strides[i] + 1, strides[i]) for i in range(n_sp)]
    sl += [slice(None)] if channels_last else []
    sl += [slice(None, None, dil[i]) for i in range(n_sp)]
    return w[tuple(sl)]


def _uniform_over(e: np.ndarray, axes) -> np.ndarray:
    return e.min(axis=axes, keepdims=True) if axes else e


def _conv_operands(node, x: T, w: T, attrs: dict) -> tuple[T, T, int, int, int]:
    """Checked Conv operands with exact codes: (x, w, rank, spatial rank, group)."""
    if w.dynamic:
        raise err(node, "Conv weights must be constant")
    x, w = num(x), num(w)
    nd = len(x.shape)
    if nd - 2 < 1 or len(w.shape) != nd:
        raise err(node, f"input {x.shape} / weight {w.shape} ranks not supported")
    return x, w, nd, nd - 2, int(attrs.get("group", 1))


def _conv_result(conv, x: T, w: T, sx, wk, wmat, fan_in: int, shape: tuple[int, ...], out_exp) -> Op:
    """The Op of a convolution ``conv(codes, weight_matrix, bound)`` (channels-first or -last): the kernel
    on input codes aligned by ``sx``, interval bounds (positive and negative weights apart) and the peak
    magnitude (``fan_in`` products) that decides int64 against Python ints."""
    wpos, wneg = split_sign(wmat)
    static_bound = None
    if x.dynamic and x.lo is not None:
        static_bound = (max(amax(x.lo), amax(x.hi)) << int(np.max(sx))) * amax(wk) * fan_in

    def fn(xc, _w):
        xc = lshift(xc, sx)
        return conv(xc, wmat, static_bound if xc.dtype != object else None)

    def bounds(ib):
        (lo, hi), _ = ib
        lo, hi = lshift(lo, sx), lshift(hi, sx)
        return conv(lo, wpos) + conv(hi, wneg), conv(hi, wpos) + conv(lo, wneg)

    def peak(ib):
        (lo, hi), _ = ib
        return (max(amax(lo), amax(hi)) << int(np.max(sx))) * amax(wk) * fan_in

    return Op(fn, [x, w], shape, out_exp, bounds, peak)


def conv_op(node, x: T, w: T, attrs: dict) -> Op:
    x, w, nd, n_sp, group = _conv_operands(node, x, w, attrs)
    C, Cout = x.shape[1], w.shape[0]
    kernel = list(w.shape[2:])
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != kernel:
        raise err(node, "kernel_shape attribute disagrees with the weight shape")
    if C % group or Cout % group or w.shape[1] != C // group:
        raise err(node, f"group={group} does not match input channels {C} and weight {w.shape}")
    strides, dil, k_eff, pb, pe, out, extra = window_geometry(node, attrs, list(x.shape[2:]), kernel)
    ex = broadcast_exp(x.exp, nd)
    ex_min = int(ex.min())
    sx = compress_exp(ex - ex_min)
    ew = broadcast_exp(w.exp, nd)
    ew_min = ew.min(axis=tuple(range(1, nd)), keepdims=True)  # per output channel
    sw = compress_exp(ew - ew_min)
    wk = lshift(w.codes, sw)
    out_exp = compress_exp(np.broadcast_to(ex_min + ew_min.reshape(-1), (Cout,)).reshape((1, Cout) + (1,) * n_sp))
    G, Cg, Og = group, C // group, Cout // group
    kp = int(np.prod(kernel))
    P = int(np.prod(out))

    def prep_w(wc):
        return wc.reshape(G, Og, Cg * kp).transpose(0, 2, 1)  # (G, Cg*kp, Og)

    wmat = prep_w(wk)

    def conv(xc, wm, bound=None):
        N = xc.shape[0]
        if bound is not None and bound < FLOAT_EXACT:  # im2col on the (smaller) float copy
            xc = xc.astype(np.float32 if bound < 2**24 else np.float64)
        v = windows(xc, n_sp, kernel, strides, dil, k_eff, pb, pe, extra, 0, out)  # (N, C, *out, *k)
        v = v.reshape((N, G, Cg) + tuple(out) + tuple(kernel))
        perm = (1, 0) + tuple(range(3, 3 + n_sp)) + (2,) + tuple(range(3 + n_sp, 3 + 2 * n_sp))
        cols = v.transpose(perm).reshape(G, N * P, Cg * kp)
        y = exact_matmul(cols, wm, bound)  # (G, N*P, Og)
        y = y.reshape((G, N) + tuple(out) + (Og,))
        perm2 = (1, 0, 2 + n_sp) + tuple(range(2, 2 + n_sp))
        return y.transpose(perm2).reshape((N, Cout) + tuple(out))

    return _conv_result(conv, x, w, sx, wk, wmat, Cg * kp, (x.shape[0], Cout) + tuple(out), out_exp)


def conv_op_cl(node, x: T, w: T, attrs: dict) -> Op:
    """Conv on channels-last tensors (qonnx ``channels_last`` domain): x (N, *S, C), w (O, *K, C/g);
    output (N, *out, O). Same arithmetic as :func:`conv_op` without the layout round trips."""
    x, w, nd, n_sp, group = _conv_operands(node, x, w, attrs)
    C, Cout = x.shape[-1], w.shape[0]
    kernel = list(w.shape[1:-1])
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != kernel:
        raise err(node, "kernel_shape attribute disagrees with the weight shape")
    if C % group or Cout % group or w.shape[-1] != C // group:
        raise err(node, f"group={group} does not match input channels {C} and weight {w.shape}")
    strides, dil, k_eff, pb, pe, out, extra = window_geometry(node, attrs, list(x.shape[1:-1]), kernel)
    ex = broadcast_exp(x.exp, nd)
    ex_min = int(ex.min())
    sx = compress_exp(ex - ex_min)
    ew = broadcast_exp(w.exp, nd)
    ew_min = ew.min(axis=tuple(range(1, nd)), keepdims=True)
    sw = compress_exp(ew - ew_min)
    wk = lshift(w.codes, sw)
    out_exp = compress_exp(np.broadcast_to(ex_min + ew_min.reshape(-1), (Cout,)).reshape((1,) * (nd - 1) + (Cout,)))
    G, Cg, Og = group, C // group, Cout // group
    kp = int(np.prod(kernel))
    P = int(np.prod(out))
    # weights (O, *K, Cg) -> (G, kp*Cg, Og), rows ordered (kernel..., Cg)
    wmat = wk.reshape(G, Og, kp * Cg).transpose(0, 2, 1)

    def conv(xc, wm, bound=None):
        N = xc.shape[0]
        if bound is not None and bound < FLOAT_EXACT:  # im2col on the (smaller) float copy
            xc = xc.astype(np.float32 if bound < 2**24 else np.float64)
        v = windows(xc, n_sp, kernel, strides, dil, k_eff, pb, pe, extra, 0, out, channels_last=True)
        v = v.reshape((N, *out, G, Cg, *kernel))  # (N, *out, G, Cg, *k)
        perm = (1 + n_sp, 0) + tuple(range(1, 1 + n_sp)) + tuple(range(3 + n_sp, 3 + 2 * n_sp)) + (2 + n_sp,)
        cols = v.transpose(perm).reshape(G, N * P, kp * Cg)
        y = exact_matmul(cols, wm, bound)  # (G, N*P, Og)
        if G == 1:
            return y.reshape((N, *out, Cout))
        y = y.reshape((G, N, *out, Og))
        return y.transpose(tuple(range(1, 2 + n_sp)) + (0, 2 + n_sp)).reshape((N, *out, Cout))

    return _conv_result(conv, x, w, sx, wk, wmat, Cg * kp, (x.shape[0], *out, Cout), out_exp)


def pool_op(node, x: T, attrs: dict, kind: str) -> Op:
    x = num(x)
    nd = len(x.shape)
    n_sp = nd - 2
    if n_sp < 1:
        raise err(node, f"input rank {nd} not supported")
    sp_axes = tuple(range(2, nd))
    ex = broadcast_exp(x.exp, nd)
    ex_al = _uniform_over(ex, sp_axes)
    sx = compress_exp(ex - ex_al)
    if kind == "global":
        kernel = list(x.shape[2:])
        attrs = {}
    else:
        kernel = list(attrs["kernel_shape"])
    strides, dil, k_eff, pb, pe, out, extra = window_geometry(node, attrs, list(x.shape[2:]), kernel)
    kp = int(np.prod(kernel))
    is_max = kind == "max"
    if not is_max:
        if any(extra):
            raise err(node, "ceil_mode windows that run past the input are not supported for average pooling")
        if (any(pb) or any(pe)) and not int(attrs.get("count_include_pad", 0)):
            raise err(node, "padding with count_include_pad=0 (a varying divisor) is not supported")
    def fn(xc):
        xc = lshift(xc, sx)
        pad_value = (xc.min() if xc.size else 0) if is_max else 0
        v = windows(xc, n_sp, kernel, strides, dil, k_eff, pb, pe, extra, pad_value, out)
        # accumulate over kernel offsets (kp strided slices) instead of reducing the 2n-D view
        acc = None
        for off in np.ndindex(*kernel):
            sl = v[(Ellipsis, *off)]
            if acc is None:
                acc = sl.copy()
            elif is_max:
                acc = np.maximum(acc, sl, out=acc) if acc.dtype != object else np.maximum(acc, sl)
            else:
                acc = np.add(acc, sl, out=acc) if acc.dtype != object else acc + sl
        return acc

    shape = x.shape[:2] + tuple(out)
    if is_max:
        return Op(fn, [x], shape, compress_exp(ex_al), None,
                  lambda ib: max(amax(ib[0][0]), amax(ib[0][1])) << int(np.max(sx)))
    div = kp
    e_out = ex_al
    if kp & (kp - 1) == 0:
        e_out = ex_al - (kp.bit_length() - 1)
        div = 1

    def peak(ib):
        return (max(amax(ib[0][0]), amax(ib[0][1])) << int(np.max(sx))) * kp

    return Op(fn, [x], shape, compress_exp(e_out), None, peak, div=div)
