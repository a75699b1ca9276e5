"""Compilation of graphs that mix an exact integer core with float ops (real QONNX models).

Semantics, "exact integer accumulation, the reference's own float kernels everywhere else":

* every tensor the shared :func:`codesign.graph.analysis.partition` calls ``dyadic`` or ``fscale`` is
  computed exactly on integer codes (the handlers of :mod:`codesign.golden.handlers`; accumulators with a
  float scale in :mod:`codesign.golden.fscale`);
* every ``float`` tensor (BatchNormalization, float biases and constants, Softmax, TensorNorm, the host
  pre- and post-processing, any standard op) is computed by the reference's own kernel for that node
  (:class:`codesign.graph.reference.NodeKernel`, built once here, run on the whole batch) on float32
  inputs; an integer tensor entering a float node is converted once by :func:`to_f32`;
* a quantizer on a float tensor makes integer codes again: ``Quant`` as qonnx computes them
  (:func:`codesign.graph.reference.quant_codes`), ``BipolarQuant`` -1/+1, ``MultiThreshold`` (FINN) its
  count times ``out_scale`` plus ``out_bias`` (a power-of-two ``out_scale``).

Constants read by float nodes are the reference's float values (:func:`float_constants`).
"""

from __future__ import annotations

import numpy as np

from codesign.golden import fscale as F
from codesign.golden.ops import T, err
from codesign.golden.quant import dyadic, max_int, min_int, po2_exponent
from codesign.graph.analysis import FLOAT, LAYOUT_OPS, QUANTIZERS, is_po2
from codesign.graph.reference import NodeKernel, elem_types, model_opsets, to_f32

INT_QUANTS = ("Quant", "IntQuant", "BipolarQuant")


def float_constants(model, nodes, consts: dict[str, np.ndarray], dynamic: set[str]) -> dict[str, np.ndarray]:
    """The reference's float value of every tensor computed from initializers only (nodes in topological
    order; ``dynamic``: tensors that depend on the graph input)."""
    env = dict(consts)
    op, et = model_opsets(model), elem_types(model)
    dyn = set(dynamic)
    for n in nodes:
        if any(i in dyn for i in n.input if i):
            dyn.update(n.output)
            continue
        k = NodeKernel(n, {i: env[i] for i in n.input if i}, op, et)
        env.update(zip(n.output, k(), strict=True))
    return env


def _static_param(ctx, node, name: str, what: str) -> np.ndarray:
    t = ctx.tensors.get(name)
    if t is None or t.dynamic:
        raise err(node, f"{what} must be a constant")
    return ctx.fconst[name]


def to_float_fn(t: T):
    """The conversion of tensor ``t`` into the float32 values a float op reads."""
    if t.is_float:
        return lambda a: a
    s = F.real_scale(t)
    return lambda a: to_f32(a, s)


def handle_node(ctx, node, ins: list[T | None], attrs: dict, kind: str) -> None:
    """Compile one node in mixed mode (see the module docstring)."""
    from codesign.golden.handlers import handle

    dyn = [t for t in ins if t is not None and t.dynamic]
    op = node.op_type
    if not dyn:
        _static(ctx, node, ins, attrs, kind)
        return
    k = ctx.kinds.get(node.output[0])
    any_float = any(t.is_float for t in dyn)
    if op in QUANTIZERS:
        if any_float or any(t.fscale is not None for t in dyn) or op == "MultiThreshold" or not _po2_quant(ctx, node):
            float_quant(ctx, node, ins, attrs)
        else:
            handle(ctx, node, ins, attrs, kind)
        return
    if any_float or k is None or k.kind == FLOAT:
        float_node(ctx, node, ins)
        return
    if any(t is not None and t.fscale is not None for t in ins):
        _fscale_node(ctx, node, ins, attrs, kind)
        return
    handle(ctx, node, ins, attrs, kind)
    _keep_bipolar(ctx, node, ins)


def _po2_quant(ctx, node) -> bool:
    """Whether quantizer ``node`` has a power-of-two scale (BipolarQuant without a scale: 1)."""
    if len(node.input) < 2 or not node.input[1]:
        return True
    s = ctx.fconst.get(node.input[1])
    return s is not None and is_po2(s)


def _keep_bipolar(ctx, node, ins) -> None:
    if node.op_type in LAYOUT_OPS | {"MaxPool", "GlobalMaxPool"} and ins and ins[0] is not None and ins[0].bipolar:
        ctx.tensors[node.output[0]].bipolar = True


def _static(ctx, node, ins, attrs, kind) -> None:
    """A node on constants only: quantized weights keep their codes (power-of-two scale: the exact
    handlers; float scale: qonnx's codes with the scale in ``fscale``), codes through layout ops keep
    theirs; anything else is the reference's float value."""
    from codesign.golden.handlers import handle

    out = node.output[0]
    x = ins[0] if ins else None
    if node.op_type in INT_QUANTS and x is not None and x.raw is not None:
        if _po2_quant(ctx, node):
            handle(ctx, node, ins, attrs, kind)
            return
        scale, zp, bw = _quant_inputs(ctx, node)
        codes, _lo, _hi, bip = F.codes_of_float(node, np.asarray(ctx.fconst[node.input[0]], dtype=np.float32),
                                                 scale, zp, attrs, bw)
        exp, fs = F.scale_repr(node, scale, codes.ndim)
        ctx.tensors[out] = T(out, tuple(codes.shape), exp, codes=codes, fscale=fs, bipolar=bip)
        return
    if node.op_type in LAYOUT_OPS and x is not None and x.codes is not None and x.raw is None:
        handle(ctx, node, ins, attrs, kind)
        ctx.tensors[out].bipolar = x.bipolar
        return
    for o in node.output:
        v = ctx.fconst[o]
        ctx.tensors[o] = T(o, tuple(np.shape(v)), raw=v)


def _fscale_node(ctx, node, ins, attrs, kind) -> None:
    """A node on integer codes where some operand has a float scale (an ``fscale`` tensor)."""
    from codesign.golden.handlers import handle

    op, out, x = node.op_type, node.output[0], ins[0]
    if op == "MatMul":
        F.matmul(ctx, node, ins[0], ins[1], out)
    elif op == "Conv":
        if len(ins) > 2 and ins[2] is not None:
            raise err(node, "a Conv bias on a float-scale accumulator must be a separate Add (clean the model "
                            "with codesign.graph.clean.clean_qonnx)")
        F.conv(ctx, node, x, ins[1], attrs, out, kind == "cl")
    elif op in LAYOUT_OPS:
        handle(ctx, node, ins, attrs, kind)
        ctx.tensors[out].bipolar = x.bipolar
    elif op in ("Relu", "MaxPool", "GlobalMaxPool"):
        nd = len(x.shape)
        sp_axes = tuple(range(1, nd - 1)) if kind == "cl" else tuple(range(2, nd))
        if op != "Relu":  # max of codes is the max of values only where one scale covers the window
            F.uniform_along(node, x.fscale, sp_axes, "input")
        handle(ctx, node, ins, attrs, kind)
        ctx.tensors[out].fscale = x.fscale
        ctx.tensors[out].bipolar = x.bipolar and op != "Relu"
    else:  # nothing else keeps integer codes at a float scale: the reference's float kernel
        float_node(ctx, node, ins)


def _dummy(t: T) -> np.ndarray:
    return np.zeros(t.shape, dtype=np.float32 if t.is_float else np.int64)


def float_node(ctx, node, ins) -> None:
    """A float node: the reference's kernel on float32 inputs (integer inputs through :func:`to_f32`)."""
    names = [i for i in node.input if i and ctx.tensors[i].dynamic]
    consts = {i: ctx.fconst[i] for i in node.input if i and not ctx.tensors[i].dynamic}
    kern = NodeKernel(node, consts, ctx.opsets_full, ctx.elem_types)
    convs = [to_float_fn(ctx.tensors[i]) for i in names]
    used = [o for o in node.output[1:] if o and o in ctx.used]
    if used:
        raise err(node, f"outputs {used} besides the first are not supported")

    def fn(*args):
        return np.asarray(kern(*[c(a) for c, a in zip(convs, args, strict=True)])[0])

    try:
        probe = fn(*[_dummy(ctx.tensors[i]) for i in names])
    except Exception as e:  # noqa: BLE001 - the kernel's own message names the problem
        raise err(node, f"the reference kernel fails on this node: {str(e).splitlines()[0][:200]}") from e
    if node.op_type == "Reshape":  # a shape such as [1, -1] is written for batch 1: keep the batch axis
        rest, conv0 = tuple(probe.shape[1:]), convs[0]
        if probe.shape[:1] != (1,):
            raise err(node, f"Reshape to {probe.shape} changes the batch dimension")

        def fn(a, *_):  # noqa: F811 - data movement only: the same values as the reference's Reshape
            return conv0(a).reshape((a.shape[0], *rest))
    out = node.output[0]
    ctx.add_step(fn, names, out, T(out, tuple(probe.shape), dynamic=True, is_float=True), "float")


def float_quant(ctx, node, ins, attrs) -> None:
    """A quantizer on a float tensor (or on codes at a float scale): integer codes as the reference's
    quantizer computes them, at the quantizer's scale (dyadic exponent or float ``fscale``)."""
    x = ins[0]
    conv = to_float_fn(x)
    out = node.output[0]
    if node.op_type == "MultiThreshold":
        _multithreshold(ctx, node, x, conv)
        return
    scale, zp, bw = _quant_inputs(ctx, node)
    probe_codes, lo, hi, bipolar = F.codes_of_float(node, np.zeros(x.shape, np.float32), scale, zp, attrs, bw)
    shape = tuple(np.shape(probe_codes))
    nd = len(shape)
    exp, fs = F.scale_repr(node, scale, nd)
    info = F.quant_params(node, attrs, bw)
    if bipolar:
        lo_a, hi_a = np.full(shape, -1, dtype=object), np.full(shape, 1, dtype=object)
    else:
        z = np.broadcast_to(np.asarray(zp).astype(np.int64), shape).astype(object)
        lo_a = min_int(info[1], info[2], info[0]) - z
        hi_a = max_int(info[1], info[2], info[0]) - z

    def fn(a):
        return F.codes_of_float(node, conv(a), scale, zp, attrs, bw)[0]

    t = T(out, shape, exp, dynamic=True, lo=lo_a, hi=hi_a, fscale=fs, bipolar=bipolar)
    ctx.add_step(fn, [node.input[0]], out, t, "int", (lo_a, hi_a))
    ctx.quant_info[out] = (node, info)


def _quant_inputs(ctx, node) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(scale, zero point, bit width) of a Quant / BipolarQuant as the reference's float constants."""
    if node.op_type == "BipolarQuant":
        scale = _static_param(ctx, node, node.input[1], "scale") if len(node.input) > 1 else np.float32(1.0)
        return scale, np.float32(0.0), None
    if len(node.input) < 4:
        raise err(node, "Quant needs 4 inputs (x, scale, zero_point, bit_width)")
    return tuple(_static_param(ctx, node, node.input[i], w) for i, w in
                 ((1, "scale"), (2, "zero_point"), (3, "bit_width")))


def _multithreshold(ctx, node, x: T, conv) -> None:
    """FINN ``MultiThreshold``: the reference's count of thresholds passed, times ``out_scale`` plus
    ``out_bias``, as dyadic codes (``out_scale`` must be a power of two)."""
    thr_name = node.input[1]
    thr = _static_param(ctx, node, thr_name, "thresholds")
    kern = NodeKernel(node, {thr_name: thr}, ctx.opsets_full, ctx.elem_types)
    attrs = {a.name: a for a in node.attribute}
    out_scale = float(attrs["out_scale"].f) if "out_scale" in attrs else 1.0
    out_bias = float(attrs["out_bias"].f) if "out_bias" in attrs else 0.0
    es = int(po2_exponent(np.float64(out_scale), f"node {node.name!r} (MultiThreshold) out_scale: ").ravel()[0])
    bc, be = dyadic(np.float64(out_bias), "")
    e = min(es, be) if int(bc) != 0 else es
    n_thr = int(np.shape(thr)[-1])
    lo_c = int(bc) << (be - e) if int(bc) else 0
    step = 1 << (es - e)
    hi_c = lo_c + step * n_thr
    out = node.output[0]

    def fn(a):
        v = np.asarray(kern(conv(a))[0], dtype=np.float64)
        return np.ldexp(v, -e).astype(np.int64)

    probe = fn(_dummy(x))
    shape = tuple(probe.shape)
    lo_a, hi_a = np.full(shape, min(lo_c, hi_c), dtype=object), np.full(shape, max(lo_c, hi_c), dtype=object)
    bipolar = n_thr == 1 and lo_c == -1 and hi_c == 1
    t = T(out, shape, np.full((1,) * len(shape), e, dtype=np.int64), dynamic=True, lo=lo_a, hi=hi_a,
          bipolar=bipolar)
    ctx.add_step(fn, [node.input[0]], out, t, "int", (lo_a, hi_a))
    ctx.quant_info[out] = (node, (max(int(hi_c - lo_c).bit_length(), 1), min(lo_c, hi_c) < 0, False, "THRESHOLD"))
