"""Float evaluation of QONNX nodes exactly as the reference computes them.

The reference of a QONNX model is ``qonnx.core.onnx_exec.execute_onnx``: it runs each node on its own,
standard ONNX ops through onnxruntime (float32), QONNX custom ops (``Quant``, ``BipolarQuant``,
``MultiThreshold``, ``Trunc``) through qonnx's numpy code. :class:`NodeKernel` runs one node the same way
on a batch of any size (the ONNX Runtime session is built once, with a dynamic batch axis), so the
golden model and the RTL frontend evaluate the float parts of a graph (BatchNorm, float scales and
biases, TensorNorm, Softmax, the host pre-/post-processing) with the reference's own kernels.

:func:`to_f32` is the one place where an exact integer (an accumulator, a code) meets a float scale: the
value the float ops downstream see. :func:`quant_codes` is qonnx's ``Quant`` up to the integer code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas", "qonnx", "finn",
                 "qonnx.custom_op.channels_last", "finn.custom_op.channels_last")


def is_custom(node) -> bool:
    return (node.domain or "") not in ("", "ai.onnx")


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Veltkamp split of float64 ``a`` into two halves of at most 26 significant bits (``hi + lo == a``)."""
    t = a * 134217729.0  # 2**27 + 1
    hi = t - (t - a)
    return hi, a - hi


def _product_error(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Dekker's TwoProduct: the exact ``a * b - p`` for ``p = fl64(a * b)`` (no FMA needed)."""
    ah, al = _split(a)
    bh, bl = _split(b)
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _round_f32(p: np.ndarray, err: np.ndarray) -> np.ndarray:
    """float32 nearest (ties to even) to the exact value ``p + err`` (``p`` a float64, ``|err|`` below half
    an ulp of ``p``). Rounding ``p`` alone is right unless ``p`` sits exactly on a float32 midpoint while
    ``err != 0``: then the sign of ``err`` picks the neighbour."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = p.astype(np.float32)
        below = np.where(f.astype(np.float64) <= p, f, np.nextafter(f, np.float32(-np.inf)))
        above = np.nextafter(below, np.float32(np.inf))
        mid = (below.astype(np.float64) + above.astype(np.float64)) * 0.5
        fix = (mid == p) & (err != 0) & np.isfinite(mid)
    if np.any(fix):
        f = np.where(fix, np.where(err > 0, above, below), f)
    return f


def _to_f32_exact_objects(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """:func:`to_f32` for Python-int codes (beyond 2**53): exact rationals, one rounding."""
    from fractions import Fraction

    c, s = np.broadcast_arrays(np.asarray(codes, dtype=object), np.asarray(scale, dtype=np.float64))
    out = np.empty(c.shape, dtype=np.float32)
    for idx in np.ndindex(c.shape):
        exact = Fraction(int(c[idx])) * Fraction(float(s[idx]))
        p = float(exact) if abs(exact) < 2**1023 else float("inf") if exact > 0 else float("-inf")
        err = exact - Fraction(p) if np.isfinite(p) else 0
        out[idx] = _round_f32(np.array(p), np.array(float(np.sign(err))))
    return out


def to_f32(codes: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """``codes * scale`` as the float32 tensor the reference's float ops see: the exact product rounded
    once to the nearest float32 (ties to even), i.e. what a float32 multiply of the code by a float32
    scale gives, and the correctly rounded value of an exact accumulator at a product of two float32
    scales (where a float64 product would already round once: codes beyond 2**5 times a 48-bit scale).
    The float64 product plus its exact error (Dekker) decides the one case where rounding the float64
    product to float32 would be off: a product that lands exactly on a float32 midpoint."""
    c = np.asarray(codes)
    s = np.asarray(scale, dtype=np.float64)
    if c.dtype == object or (c.size and int(np.max(np.abs(c.astype(np.float64)))) >= 2**53):
        return _to_f32_exact_objects(c, s)
    c64 = c.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        p = c64 * s
        err = _product_error(*np.broadcast_arrays(c64, s), p) if s.size else np.zeros_like(p)
    return _round_f32(p, np.where(np.isfinite(err), err, 0.0))


def quant_codes(x: np.ndarray, scale, zeropt, bits: int, signed: bool, narrow: bool, rounding: str) -> np.ndarray:
    """Integer codes of qonnx's ``Quant`` (``int_quant``) on a float32 input: ``x / scale + zeropt``,
    clamped, rounded (or the bipolar sign for 1-bit signed), minus ``zeropt``; the reference's output is
    ``codes * scale`` in float32. Same numpy dtypes and operation order as qonnx, so equal codes."""
    from qonnx.custom_op.general.intquant import max_int, min_int, resolve_rounding_mode

    y = np.asarray(x) / np.asarray(scale)
    y = y + np.asarray(zeropt)
    if bits == 1 and signed:
        ones = np.ones(y.shape, dtype=y.dtype)
        y = np.where(y >= 0.0, ones, -ones)
    else:
        lo, hi = min_int(signed, narrow, bits), max_int(signed, narrow, bits)
        y = np.where(y > hi, np.asarray(hi).astype(y.dtype), y)
        y = np.where(y < lo, np.asarray(lo).astype(y.dtype), y)
        # codesign's canonical ROUND_TO_ZERO is qonnx's DOWN (np.fix); qonnx knows only the latter name
        y = resolve_rounding_mode("DOWN" if rounding.upper() == "ROUND_TO_ZERO" else rounding)(y)
    return (y - np.asarray(zeropt)).astype(np.int64)


def _value_info(name: str, arr_or_type, batch: bool) -> onnx.ValueInfoProto:
    if isinstance(arr_or_type, np.ndarray):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr_or_type.dtype),
                                             list(arr_or_type.shape))
    return helper.make_tensor_value_info(name, arr_or_type, None)  # any shape: a batch of any size


class NodeKernel:
    """One ONNX node as the reference runs it. ``consts`` holds its constant inputs (initializers);
    the call takes the dynamic inputs in node order and returns the outputs."""

    def __init__(self, node, consts: dict[str, np.ndarray], opset: dict[str, int],
                 elem_types: dict[str, int] | None = None):
        self.node = node
        self.consts = consts
        self.dynamic = [i for i in node.input if i and i not in consts]
        self._custom = is_custom(node)
        if self._custom:
            from qonnx.custom_op.registry import getCustomOp

            self._op = getCustomOp(node, onnx_opset_version=opset.get(node.domain, 1))
            return
        import onnxruntime as rt

        et = elem_types or {}
        ins = [_value_info(i, consts[i], False) if i in consts else _value_info(i, et.get(i, TensorProto.FLOAT), True)
               for i in node.input if i]
        outs = [_value_info(o, et.get(o, TensorProto.FLOAT), True) for o in node.output]
        g = helper.make_graph([node], "reference-node", ins, outs)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset.get("", 13))])
        m.ir_version = 8
        so = rt.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self._sess = rt.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def __call__(self, *dyn: np.ndarray) -> list[np.ndarray]:
        feeds = dict(zip(self.dynamic, dyn, strict=True))
        if self._custom:
            ctx = {**self.consts, **feeds}
            like = np.asarray(dyn[0]) if dyn else None
            for o in self.node.output:  # some qonnx ops (the channels-last wrappers) read the output's shape
                ctx.setdefault(o, None if like is None else np.zeros(like.shape, dtype=np.float32))
            self._op.execute_node(ctx, None)
            return [np.asarray(ctx[o]) for o in self.node.output]
        all_feeds = {**{k: v for k, v in self.consts.items() if k in self.node.input}, **feeds}
        return list(self._sess.run(None, all_feeds))


def model_consts(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def model_opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {o.domain: int(o.version) for o in model.opset_import}


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)}


class Subgraph:
    """The nodes of ``model`` that compute ``outputs`` from ``inputs`` (and constants), run node by node
    with :class:`NodeKernel`: ``fn({input: array}) -> {output: array}``."""

    def __init__(self, model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str],
                 consts: dict[str, np.ndarray] | None = None):
        consts = model_consts(model) if consts is None else consts
        self.inputs, self.outputs = list(inputs), list(outputs)
        producer = {o: n for n in model.graph.node for o in n.output}
        need, order, seen = list(self.outputs), [], set()
        avail = set(self.inputs) | set(consts)
        while need:  # the nodes between inputs and outputs, found backwards
            t = need.pop()
            if t in avail or t in seen or not t:
                continue
            n = producer.get(t)
            if n is None:
                raise ValueError(f"tensor {t!r} is neither an input of the subgraph nor computed in it")
            seen.update(n.output)
            order.append(n)
            need += list(n.input)
        index = {n.output[0]: k for k, n in enumerate(model.graph.node)}
        order.sort(key=lambda n: index[n.output[0]])
        et, op = elem_types(model), model_opsets(model)
        self.nodes = order
        self.kernels = [NodeKernel(n, {i: consts[i] for i in n.input if i in consts}, op, et) for n in order]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(feeds)
        for n, k in zip(self.nodes, self.kernels, strict=True):
            for o, v in zip(n.output, k(*[env[i] for i in k.dynamic]), strict=True):
                env[o] = v
        return {o: env[o] for o in self.outputs}


def chain_fn(model: onnx.ModelProto, src: str, dst: str) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> y``: the float function from tensor ``src`` to tensor ``dst`` as the reference computes it."""
    sub = Subgraph(model, [src], [dst])
    return lambda x: sub({src: x})[dst]
