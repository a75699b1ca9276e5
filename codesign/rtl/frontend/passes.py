"""Named rewrite passes over the frontend graph (:mod:`codesign.rtl.frontend.graph`).

A pass is a small class with ``match(graph, op)`` (does the rewrite apply at ``op``?) and ``apply(graph,
op)``; :func:`run_passes` applies each pass of a list, in order, until it matches nothing more. The order
of :data:`FUSION_PASSES` follows the node order of a quantized layer in a QONNX export
(``MatMul -> Add(bias) -> Relu -> Quant``; ``AveragePool -> Trunc``), so a fusion only ever looks one op
back (:class:`FuseEpilogue` looks back along a chain of elementwise float ops to the accumulator).
Whatever no pass absorbed and the IR has no layer for is refused by :class:`CheckFused`.
"""

from __future__ import annotations

from codesign.errors import UnsupportedError
from codesign.graph.analysis import FSCALE
from codesign.rtl.frontend.graph import (
    AccOp,
    AvgPoolOp,
    BiasOp,
    Epilogue,
    FloatOp,
    Graph,
    LinearOp,
    Op,
    QuantOp,
    ReluOp,
    RequantOp,
    TransposeOp,
    TruncOp,
)


class Pass:
    """A rewrite at one op of the graph."""

    name = "pass"

    def match(self, g: Graph, op: Op) -> bool:  # pragma: no cover - every pass overrides it
        raise NotImplementedError

    def apply(self, g: Graph, op: Op) -> None:  # pragma: no cover - every pass overrides it
        raise NotImplementedError


def _sole_producer(g: Graph, op: Op, kind: type) -> Op | None:
    """The producer of ``op``'s input when it is a ``kind`` and ``op`` is its only reader."""
    p = g.producer(op.ins[0])
    return p if isinstance(p, kind) and g.n_readers(p.out) == 1 else None


def _pending(p: AccOp) -> bool:
    """An accumulator not yet requantized (a fused Relu alone keeps it at accumulator precision)."""
    return p.quant is None and p.trunc is None


class FuseBias(Pass):
    """``MatMul/Gemm/Conv -> Add(constant)``: the constant becomes the accumulator's bias."""

    name = "fuse_bias"

    def match(self, g: Graph, op: Op) -> bool:
        p = _sole_producer(g, op, LinearOp) if isinstance(op, BiasOp) else None
        return p is not None and p.bias is None and not p.relu and _pending(p)

    def apply(self, g: Graph, op: Op) -> None:
        p = g.producer(op.ins[0])
        p.bias = op
        g.fuse(p, op)


class FoldTrunc(Pass):
    """``AveragePool -> Trunc``: the Trunc's rounding and saturation requantize the window sum."""

    name = "fold_trunc"

    def match(self, g: Graph, op: Op) -> bool:
        p = _sole_producer(g, op, AvgPoolOp) if isinstance(op, TruncOp) else None
        return p is not None and not p.relu and _pending(p)

    def apply(self, g: Graph, op: Op) -> None:
        p = g.producer(op.ins[0])
        p.trunc = op
        g.fuse(p, op)


def _epilogue_chain(g: Graph, q: QuantOp) -> tuple[Op | None, list[Op]]:
    """The Relu / float ops (each read only by the next) in front of quantizer ``q``, and the op that
    produces their input (None: the network input)."""
    chain: list[Op] = []
    cur: Op = q
    while True:
        p = g.producer(cur.ins[0])
        if isinstance(p, FloatOp | ReluOp) and g.n_readers(p.out) == 1:
            chain.insert(0, p)
            cur = p
            continue
        return p, chain


def _onnx_input(g: Graph, op: Op) -> str:
    """The ONNX tensor an op of the core reads (its one integer or float activation input)."""
    if op.onnx_in is not None:
        return op.onnx_in
    ins = [i for i in op.proto.input if i in g.kinds]
    return ins[0]


def _quant_after(g: Graph, op: Op) -> list[Op] | None:
    """The Relu / float ops (each the only reader of the one before) from ``op``'s output to a quantizer,
    the quantizer last; None when the chain ends anywhere else."""
    chain: list[Op] = []
    cur = op
    while g.n_readers(cur.out) == 1 and cur.out != g.output_name:
        nxt = next(o for o in g.ops if cur.out in o.ins)
        chain.append(nxt)
        if isinstance(nxt, QuantOp):
            return chain
        if not isinstance(nxt, FloatOp | ReluOp):
            return None
        cur = nxt
    return None


class CommuteTranspose(Pass):
    """``accumulator -> [float op]* -> Transpose -> [float op | Relu]* -> quantizer``, the Transpose moving a
    float (or float-scaled) tensor, as channels-last exports put one before a Flatten: the Transpose moves
    behind the quantizer, so the epilogue becomes a function of the accumulator again and the Transpose a
    permutation of integer codes (an ``ir.Transpose`` layer).

    Exact: a Transpose only moves values, and every op between the accumulator and the quantizer is
    elementwise, so applying them before or after the move gives the same codes at the same places. The
    epilogue is still evaluated on the graph's own nodes (Transpose included) with one value per channel
    and every other axis of size 1 (:mod:`codesign.rtl.frontend.epilogue`), where the Transpose moves no
    value; a float op after it whose constants vary along another axis than the channel changes that
    tensor's shape and is refused there."""

    name = "commute_transpose"

    def match(self, g: Graph, op: Op) -> bool:
        return isinstance(op, TransposeOp) and op.float_in and _quant_after(g, op) is not None

    def apply(self, g: Graph, op: Op) -> None:
        chain = _quant_after(g, op)
        q = chain[-1]
        first = chain[0]
        first.onnx_in = _onnx_input(g, op)  # the Transpose's input: the epilogue runs through the Transpose
        first.ins = [op.ins[0] if t == op.out else t for t in first.ins]
        for c in chain:  # elementwise: the shape before the move
            c.shape = c.in_shape = tuple(op.in_shape)
        codes = f"{q.out}::before_transpose"
        op.ins, op.out, q.out = [codes], q.out, codes
        op.float_in = False  # it now moves the quantizer's integer codes
        g.ops.remove(op)
        g.ops.insert(g.ops.index(q) + 1, op)


class FuseEpilogue(Pass):
    """``accumulator -> [Relu | float op]* -> quantizer`` where something is float (a float op, a float
    scale, a bipolar / multi-threshold quantizer, float-scaled codes): the whole function becomes the
    accumulator's epilogue, realized as exact integer thresholds. Behind anything but a pending
    accumulator, an elementwise requantization layer with that epilogue on its input codes."""

    name = "fuse_epilogue"

    def match(self, g: Graph, op: Op) -> bool:
        if not isinstance(op, QuantOp):
            return False
        p, chain = _epilogue_chain(g, op)
        src = _onnx_input(g, chain[0] if chain else op)
        return (not op.spec.exact or any(isinstance(c, FloatOp) for c in chain)
                or g.kinds.get(src) is not None and g.kinds[src].kind == FSCALE)

    def apply(self, g: Graph, op: Op) -> None:
        p, chain = _epilogue_chain(g, op)
        ep = Epilogue(_onnx_input(g, chain[0] if chain else op), op.proto.output[0], op.spec)
        if isinstance(p, AccOp) and _pending(p) and not p.relu and p.epilogue is None and g.n_readers(p.out) == 1:
            p.epilogue = ep
            for c in [*chain, op]:
                g.fuse(p, c)
            return
        first = chain[0] if chain else op
        r = RequantOp(first.node, first.op_type, first.ins, op.out, op.shape, first.in_shape, list(first.onnx_nodes),
                      first.proto, epilogue=ep)
        g.ops[g.ops.index(first)] = r
        for c in [*chain[1:], op] if chain else []:
            g.fuse(r, c)


class FuseRelu(Pass):
    """``accumulator -> Relu``: a relu on the accumulator (sized when the IR is built)."""

    name = "fuse_relu"

    def match(self, g: Graph, op: Op) -> bool:
        p = _sole_producer(g, op, AccOp) if isinstance(op, ReluOp) else None
        return p is not None and not p.relu and _pending(p)

    def apply(self, g: Graph, op: Op) -> None:
        p = g.producer(op.ins[0])
        p.relu = True
        g.fuse(p, op)


class ReluToRequant(Pass):
    """A Relu no accumulator absorbed: an elementwise requantization layer."""

    name = "relu_to_requant"

    def match(self, g: Graph, op: Op) -> bool:
        return isinstance(op, ReluOp)

    def apply(self, g: Graph, op: Op) -> None:
        g.ops[g.ops.index(op)] = RequantOp(op.node, op.op_type, op.ins, op.out, op.shape, op.in_shape,
                                           op.onnx_nodes, op.proto, relu=True)


class FuseQuant(Pass):
    """``accumulator (-> Relu) -> Quant``, or ``Relu layer -> Quant``: the quantizer requantizes it."""

    name = "fuse_quant"

    def match(self, g: Graph, op: Op) -> bool:
        if not isinstance(op, QuantOp):
            return False
        p = _sole_producer(g, op, AccOp)
        if p is not None:
            return _pending(p)
        p = _sole_producer(g, op, RequantOp)
        return p is not None and p.relu and p.quant is None

    def apply(self, g: Graph, op: Op) -> None:
        p = g.producer(op.ins[0])
        p.quant = op.spec
        g.fuse(p, op)


class QuantToRequant(Pass):
    """A Quant no layer absorbed: an elementwise requantization layer."""

    name = "quant_to_requant"

    def match(self, g: Graph, op: Op) -> bool:
        return isinstance(op, QuantOp)

    def apply(self, g: Graph, op: Op) -> None:
        g.ops[g.ops.index(op)] = RequantOp(op.node, op.op_type, op.ins, op.out, op.shape, op.in_shape,
                                           op.onnx_nodes, op.proto, quant=op.spec)


class CheckFused(Pass):
    """Ops that only exist fused into a layer (a constant Add, a Trunc, a float op) and found none: refused."""

    name = "check_fused"

    def match(self, g: Graph, op: Op) -> bool:
        return isinstance(op, BiasOp | TruncOp | FloatOp) or isinstance(op, TransposeOp) and op.float_in

    def apply(self, g: Graph, op: Op) -> None:
        if isinstance(op, TransposeOp):
            raise UnsupportedError(f"{op.where}: a Transpose of a float tensor that no quantizer follows (only "
                                   "elementwise float ops may stand between it and the next quantizer): the integer "
                                   "core cannot compute it")
        if isinstance(op, FloatOp):
            raise UnsupportedError(f"{op.where}: float {op.op_type} between integer layers with no quantizer after "
                                   "it (or feeding several layers): the integer core cannot compute it")
        if isinstance(op, TruncOp):
            raise UnsupportedError(f"{op.where}: Trunc is only supported directly after AveragePool/GlobalAveragePool")
        raise UnsupportedError(f"{op.where}: Add of a constant is only supported as the bias of a MatMul/Conv")


FUSION_PASSES: tuple[Pass, ...] = (FuseBias(), FoldTrunc(), CommuteTranspose(), FuseEpilogue(), FuseRelu(),
                                   ReluToRequant(), FuseQuant(), QuantToRequant(), CheckFused())


def run_passes(g: Graph, passes: tuple[Pass, ...] = FUSION_PASSES) -> Graph:
    """Apply each pass in order until it matches no op."""
    for p in passes:
        changed = True
        while changed:
            changed = False
            for op in list(g.ops):
                if op in g.ops and p.match(g, op):
                    p.apply(g, op)
                    changed = True
    return g
