"""Verilog emitter: IR (:mod:`codesign.rtl.ir`) -> one module per layer + ``codesign_top``.

Every layer module has the same streaming interface (one whole vector per beat)::

    clk, rst, in_valid, in_ready, in_data[N_IN*IB-1:0], out_valid, out_ready, out_data[N_OUT*OB-1:0]

Architectures
-------------
``latency`` (fully parallel, II = 1): each output field is an adder tree over its non-zero terms.
  A weight 0 generates nothing, +-2^k is a wire shift, any other constant is a canonical-signed-digit
  shift-add (``multiplier='shiftadd'``, every digit a tree leaf) or one ``*`` (``multiplier='dsp'``).
  Every signal is sized from exact interval bounds. ``pipeline`` register stages are spread evenly over
  the tree (leaf stage + adder levels); requantization (``hw/cs_requant.v``) feeds the output register.
  The layer advances with ``en = !out_valid || out_ready`` (``in_ready = en``): backpressure stalls it.
  Latency = pipeline stages actually placed + 1.
``resource`` (folded, reuse factor R): a linear layer computes ``lanes = ceil(n_out / R)`` output fields
  per cycle over ``groups = ceil(n_out / lanes)`` output groups. When ``R > n_out`` it also folds over the
  inputs (input-serial): one field per group, its terms spread over ``chunks = min(R // n_out, n_terms)``
  cycles with ``K = ceil(n_terms / chunks)`` MAC slots and an accumulator. ``steps = groups * chunks <= R``
  = II. Weights and biases come from case-statement ROMs addressed by the step counter; a term slot whose
  input index changes with the step gets a multiplexer (keyed by the chunk counter when that suffices); a
  slot whose weight is zero in every step is removed. ``pipeline`` stages: operand register (ROMs and
  multiplexers), product register, then adder-tree levels; control tags travel alongside the datapath and
  the layer stalls only when a finished vector meets a full output register. Latency = steps + stages + 1.
  Non-linear layers (maxpool, requant) stay parallel.

Residual graphs (``add`` layers joining two streams, see :meth:`Emitter.emit_top_graph`): lazy forks,
joins that fire when both operands are present, and a ``hw/cs_fifo.v`` on the operand that arrives first
(sized from the latency difference and the II, so the join costs no throughput); latency = longest path.
``add`` and ``avgpool`` are accumulator layers emitted like a sparse linear layer (fully parallel in both
strategies). Per-channel weight scales (``Layer.field_shift``): the parallel emitter divides every field's
terms by its power-of-two factor and requantizes with a per-field shift; the folded one uses the aligned
weights; ``field_out`` fields leave at their own scales.

Flatten/reshape/transpose layers are wiring in the top level. ``debug_taps`` adds, per computing layer,
``dbg_<layer>_tdata`` (its output vector) and ``dbg_<layer>_tvalid`` (high for exactly one cycle per
vector: when it is handed to the next layer), so taps arrive in input order.
"""

from __future__ import annotations

import heapq
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codesign.errors import UnsupportedError
from codesign.resources import hw_dir
from codesign.rtl.cse import share
from codesign.rtl.ir import FixedFormat, Layer, Model, Requant, bits_for, normalize_rounding, shift_round

HW_DIR = hw_dir()
MODE_CODES = {"ROUND": 0, "FLOOR": 1, "CEIL": 2, "ROUND_TO_ZERO": 3, "UP": 4, "HALF_UP": 5, "HALF_DOWN": 6}


# ---- small helpers ------------------------------------------------------------------------------
@dataclass
class Sig:
    """A signed signal (or a constant when ``name`` is None) with exact bounds."""

    name: str | None
    width: int
    lo: int  # bounds of the true value
    hi: int
    neg: bool = False  # the true value is -(signal): lets the tree subtract instead of negating

    @property
    def const(self) -> bool:
        return self.name is None

    @property
    def slo(self) -> int:  # bounds of the stored signal
        return -self.hi if self.neg else self.lo

    @property
    def shi(self) -> int:
        return -self.lo if self.neg else self.hi

    def ext(self, w: int) -> str:
        """Verilog expression of exactly ``w`` bits (sign extension; w >= width)."""
        if self.const:
            return lit(self.lo, w)
        assert w >= self.width, (self.name, w, self.width)
        if w == self.width:
            return self.name
        if self.width == 1:
            return f"{{{w}{{{self.name}}}}}"
        return f"{{{{{w - self.width}{{{self.name}[{self.width - 1}]}}}}, {self.name}}}"


def fit(x: Sig, w: int, body: _Body | None = None) -> str:
    """``x`` as exactly ``w`` bits: sign extension, or the low bits (modular arithmetic)."""
    if x.const or w >= x.width:
        return x.ext(w)
    if body is not None:
        body.sliced.add(x.name)
    return f"{x.name}[{w - 1}:0]"


def lit(v: int, w: int) -> str:
    return f"{w}'h{v & ((1 << w) - 1):x}"


def const_sig(v: int) -> Sig:
    return Sig(None, bits_for(v, v), v, v)


def csd(w: int) -> list[tuple[int, int]]:
    """Canonical signed digits of ``w``: list of (sign, shift), fewest non-zero digits."""
    out, k = [], 0
    while w != 0:
        if w & 1:
            d = 2 - (w & 3)  # +1 or -1
            out.append((d, k))
            w -= d
        w >>= 1
        k += 1
    return out


def field_width(fmt: FixedFormat) -> int:
    return fmt.bits


def _ispow2(v: int) -> bool:
    a = abs(v)
    return a != 0 and (a & (a - 1)) == 0


def _cuts(depth_stages: int, p: int) -> list[int]:
    """Register positions (after stage i, 0 <= i < depth_stages) for p evenly spread stages."""
    p = min(p, depth_stages)
    return sorted({math.ceil(k * depth_stages / (p + 1)) - 1 for k in range(1, p + 1)})


class _Body:
    """Collects declarations/statements of one module."""

    def __init__(self):
        self.lines: list[str] = []
        self.n = 0
        self.cap = 1 << 30  # modular width limit of the current tree (exact result width)
        self.sliced: set[str] = set()
        # (* keep *) on adder outputs: stops yosys alumacc from merging a whole tree into one $macc,
        # which maccmap turns into LUT full adders instead of carry chains (ECP5: 1113 -> 645 LUT4-eq.
        # on a 16x4 power-of-two layer).
        self.keep = True

    def wire(self, prefix: str, width: int, expr: str, lo: int, hi: int, keep: bool = False) -> Sig:
        self.n += 1
        nm = f"{prefix}"
        attr = "(* keep *) " if keep else ""
        self.lines.append(f"    {attr}wire signed [{width - 1}:0] {nm} = {expr};")
        return Sig(nm, width, lo, hi)

    def reg(self, nm: str, src: Sig, en: str = "en") -> Sig:
        if src.const:
            return src
        self.lines.append(f"    reg signed [{src.width - 1}:0] {nm};")
        self.lines.append(f"    always @(posedge clk) if ({en}) {nm} <= {src.name};")
        return Sig(nm, src.width, src.lo, src.hi, src.neg)


def add_sigs(body: _Body, nm: str, a: Sig, b: Sig) -> Sig:
    lo, hi = a.lo + b.lo, a.hi + b.hi
    if a.const and b.const:
        return const_sig(lo)
    if a.const and a.lo == 0:
        return b
    if b.const and b.lo == 0:
        return a
    if a.neg and not b.neg:
        a, b = b, a
    # a signal too narrow for its bounds is exactly cap wide (wrapped): never extended.
    wa, wb = (1 if a.const else a.width), (1 if b.const else b.width)
    if not b.neg:  # a + b
        w = min(max(bits_for(lo, hi), wa, wb), body.cap)
        return body.wire(nm, w, f"{fit(a, w, body)} + {fit(b, w, body)}", lo, hi, keep=body.keep)
    if not a.neg:  # a - |b|
        w = min(max(bits_for(lo, hi), wa, wb), body.cap)
        return body.wire(nm, w, f"{fit(a, w, body)} - {fit(b, w, body)}", lo, hi, keep=body.keep)
    w = min(max(bits_for(-hi, -lo), wa, wb), body.cap)  # -(|a| + |b|)
    sg = body.wire(nm, w, f"{fit(a, w, body)} + {fit(b, w, body)}", lo, hi, keep=body.keep)
    sg.neg = True
    return sg


def positive(body: _Body, nm: str, a: Sig) -> Sig:
    """A tree result with ``neg`` set becomes an explicit negation."""
    if not a.neg:
        return a
    w = min(max(bits_for(a.lo, a.hi), a.width), body.cap)
    return body.wire(nm, w, f"-({fit(a, w, body)})", a.lo, a.hi)


def max_sigs(body: _Body, nm: str, a: Sig, b: Sig) -> Sig:
    w = max(a.width, b.width)
    lo, hi = max(a.lo, b.lo), max(a.hi, b.hi)
    return body.wire(nm, w, f"({a.ext(w)} > {b.ext(w)}) ? {a.ext(w)} : {b.ext(w)}", lo, hi)


def tree(body: _Body, prefix: str, leaves: list[Sig], depth: int, cuts: set[int], op=add_sigs,
         leaf_cut: bool = False) -> Sig:
    """Level-synchronous reduction over ``depth`` levels; registers after the levels in ``cuts``
    (level 0 = the leaves themselves)."""
    cur = list(leaves)
    if not cur:
        return const_sig(0)
    if 0 in cuts:
        cur = [body.reg(f"{prefix}_r0_{i}", s) for i, s in enumerate(cur)]
    for lvl in range(1, depth + 1):
        if len(cur) > 1:
            nxt = []
            for i in range(0, len(cur) - 1, 2):
                nxt.append(op(body, f"{prefix}_l{lvl}_{i // 2}", cur[i], cur[i + 1]))
            if len(cur) % 2:
                nxt.append(cur[-1])
            cur = nxt
        if lvl in cuts:
            cur = [body.reg(f"{prefix}_r{lvl}_{i}", s) for i, s in enumerate(cur)]
    assert len(cur) == 1
    return cur[0]


def _depth(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


# ---- the emitter ------------------------------------------------------------------------------
class Emitter:
    def __init__(self, model: Model, strategy: str = "latency", reuse: int = 1, multiplier: str = "shiftadd",
                 pipeline: int = 1, debug_taps: bool = False, axis_slice: bool = False,
                 share_terms: bool = True, share_depth: int = 3, io: str = "vector", top: str = "codesign_top"):
        if io not in ("vector", "stream"):
            raise UnsupportedError(f"rtl.io {io!r}: must be 'vector' or 'stream'")
        if strategy not in ("latency", "resource"):
            raise UnsupportedError(f"rtl.strategy {strategy!r}: must be 'latency' or 'resource'")
        if multiplier not in ("shiftadd", "dsp"):
            raise UnsupportedError(f"rtl.multiplier {multiplier!r}: must be 'shiftadd' or 'dsp'")
        if reuse < 1 or pipeline < 0:
            raise UnsupportedError(f"rtl.reuse must be >= 1 and rtl.pipeline >= 0 (got {reuse}, {pipeline})")
        self.m = model
        self.strategy = strategy
        self.reuse = reuse
        self.multiplier = multiplier
        self.pipeline = pipeline
        self.share = share_terms  # common-subexpression sharing in fully parallel adder trees (codesign.rtl.cse)
        self.share_depth = share_depth  # at most this many adders deep per shared term
        self.debug_taps = debug_taps
        self.axis_slice = axis_slice  # cs_skid_buffer on the output: cuts the ready chain, +1 latency
        self.io = io  # 'stream': one pixel per input beat, leading window layers on line buffers (codesign.rtl.stream)
        self.top = top  # name of the top module (and its file)
        self.lib_used: set[str] = set()
        self.layer_info: dict[str, dict] = {}
        self.skips: dict[tuple[str, int], int] = {}  # (join layer, input port) -> FIFO depth
        self.skips_by_layer: dict[str, dict] = {}

    # ---- per-layer modules ----------------------------------------------------------------------
    def _header(self, ly: Layer, arch: str, extra: str = "") -> str:
        lines = [
            f"// {ly.name}: {ly.kind} layer, generated by codesign.rtl (do not edit)",
            f"//   shape  : in {ly.in_shape} ({ly.n_in} fields) -> out {ly.out_shape} ({ly.n_out} fields)",
        ]
        if ly.kind == "add":
            n, ba, bb = ly.n_out, ly.in_fmt.bits, ly.in_fmt2.bits
            sa, sb = ly.add_shifts()
            lines += [f"//   input  : a = {ly.in_fmt.describe()} per field at in_data[i*{ba} +: {ba}], "
                      f"b = {ly.in_fmt2.describe()} per field at in_data[{n * ba} + i*{bb} +: {bb}]",
                      f"//   sum    : (a << {sa}) + (b << {sb}) (exact, scale 2^{ly.acc_fmt.scale_exp})"]
        else:
            lines.append(f"//   input  : {ly.in_fmt.describe()} per field, packed field i at in_data[i*{ly.in_fmt.bits} +: {ly.in_fmt.bits}]")
        lines.append(f"//   output : {ly.out_fmt.describe()} per field, packed field i at out_data[i*{ly.out_fmt.bits} +: {ly.out_fmt.bits}]")
        if ly.field_out:
            lines.append(f"//            field i at scale 2^({ly.out_fmt.scale_exp} + shift[i]) (per-channel weight scales): "
                         f"shifts {[int(v) for v in ly.field_shift]}")
        elif ly.field_shift is not None:
            lines.append("//   scales : per-channel weights, stored aligned to the finest channel scale; every term of output "
                         "field i is a multiple of 2^shift[i], divided out before the adder tree (fully parallel)")
        if ly.is_linear:
            lines.append(f"//   weights: {'power-of-two' if ly.pot else 'fixed-point'} codes x 2^{ly.w_scale_exp}, "
                         f"{np.count_nonzero(ly.weights)}/{ly.weights.size} non-zero; accumulator {ly.acc_fmt.describe()}")
        if ly.requant is not None:
            rq = ly.requant
            lines.append(f"//   requant: shift {rq.shift}, rounding {rq.rounding}, relu {int(rq.relu)}, saturate to {rq.out.describe()}")
        if ly.kind in ("conv1d", "conv2d", "maxpool", "avgpool"):
            lines.append(f"//   window : kernel {ly.kernel}, stride {ly.stride}, pads {ly.pads}, layout {ly.layout}")
        lines.append(f"//   arch   : {arch}")
        if extra:
            lines.append(f"//   {extra}")
        return "\n".join(lines) + "\n"

    def _ports(self, ly: Layer) -> str:
        ni, no = ly.in_bits, ly.n_out * ly.out_fmt.bits
        return (f"module {ly.name} (\n    input  wire clk,\n    input  wire rst,\n"
                f"    input  wire in_valid,\n    output wire in_ready,\n    input  wire [{ni - 1}:0] in_data,\n"
                f"    output wire out_valid,\n    input  wire out_ready,\n    output wire [{no - 1}:0] out_data\n);\n")

    def _in_sig(self, ly: Layer, i: int, src: str = "in_data") -> Sig:
        off, f = ly.in_field(i)
        b = f.bits
        sl = f"{src}[{off + b - 1}:{off}]" if b > 1 else f"{src}[{off}]"
        if f.signed:
            return Sig(f"$signed({sl})", b, f.lo, f.hi)
        return Sig(f"$signed({{1'b0, {sl}}})", b + 1, f.lo, f.hi)

    def _unused(self, ly: Layer, used: set[int], src: str = "in_data") -> str:
        unused = [i for i in range(ly.n_in) if i not in used]
        if not unused:
            return ""
        parts = []
        for i in unused:
            off, f = ly.in_field(i)
            parts.append(f"{src}[{off + f.bits - 1}:{off}]" if f.bits > 1 else f"{src}[{off}]")
        parts = ", ".join(parts)
        return f"    // inputs with no non-zero weight (pruned / outside every window)\n    wire _unused_ok = &{{1'b0, {parts}, 1'b0}};\n"

    @staticmethod
    def _unused_sliced(body: _Body) -> str:
        if not body.sliced:
            return ""
        return ("    // only the low bits of these reach the (modular) result\n"
                f"    wire _unused_hi = &{{1'b0, {', '.join(sorted(body.sliced))}, 1'b0}};\n")

    @staticmethod
    def _digit_leaf(body: _Body, nm: str, x: Sig, s: int, k: int) -> Sig:
        """The term ``s * (x << k)`` as a wire shift (``neg`` set for s < 0), at most ``body.cap`` bits."""
        cap = body.cap
        slo, shi = x.lo << k, x.hi << k  # stored: x << k; the true value is s * that
        inner = min(max(bits_for(slo, shi) - k, x.width), cap - k)
        shifted = fit(x, inner, body) if k == 0 else f"{{{fit(x, inner, body)}, {k}'b0}}"
        lo, hi = sorted((s * slo, s * shi))
        leaf = body.wire(nm, inner + k, shifted, lo, hi)
        leaf.neg = s < 0
        return leaf

    def _linear_sums(self, body: _Body, ly: Layer, xs: dict[int, Sig], conns, biases, exact) -> tuple[list[Sig], set[int]]:
        """Exact sums of the constant-weight terms of every output (fully parallel Dense/Conv/Add/AvgPool).

        Shift-add digits (CSD; power-of-two weights are one digit) that pairs of outputs have in common are
        computed once (:mod:`codesign.rtl.cse`, ``share``); every output is then reduced by an adder tree that
        combines its shallowest terms first. ``self.pipeline`` register stages are spread over the deepest
        output's adder levels; a signal consumed across a stage is registered once and shared.
        Returns the sums (true bounds) and the register cuts (adder levels followed by registers)."""
        n_in = ly.n_in
        caps = [bits_for(*exact[j]) for j in range(len(conns))]
        cols, prods = [], []
        for j, terms in enumerate(conns):
            dg, pr = [], []
            for i, wv in terms:
                if _ispow2(wv) or self.multiplier == "shiftadd":
                    # a digit of weight 2^cap or more is a multiple of 2^cap: zero modulo the result width
                    dg += [(i, k, sg) for sg, k in csd(int(wv)) if k < caps[j]]
                else:
                    pr.append((i, int(wv)))
            cols.append(dg)
            prods.append(pr)
        shared, cols = share(cols, first_id=n_in, max_level=self.share_depth) if self.share else ([], cols)
        if shared:
            body.lines.append(f"    // {len(shared)} shift-add terms are shared between outputs (s<id>: codesign.rtl.cse)")
        sh_by_id = {t.id: t for t in shared}
        level = {t.id: t.level for t in shared}

        # plan: per output, a tree that adds the two shallowest pending terms first
        plans, depth = [], 0
        for j in range(len(conns)):
            heap = [(level.get(d[0], 0), n, ("d", d)) for n, d in enumerate(cols[j])]
            heap += [(0, len(heap) + n, ("p", i, wv)) for n, (i, wv) in enumerate(prods[j])]
            if int(biases[j]) != 0:
                heap.append((0, len(heap), ("b", int(biases[j]))))
            heapq.heapify(heap)
            seq = len(heap)
            while len(heap) > 1:
                la, _, a = heapq.heappop(heap)
                lb, _, b = heapq.heappop(heap)
                heapq.heappush(heap, (max(la, lb) + 1, seq, ("+", a, b, max(la, lb) + 1)))
                seq += 1
            plans.append(heap[0] if heap else (0, 0, ("b", 0)))
            depth = max(depth, plans[-1][0])
        cuts = set(_cuts(depth + 1, self.pipeline))
        delayed: dict[tuple[str, int], Sig] = {}

        def delay(x: Sig, frm: int, to: int) -> Sig:
            """``x`` (valid after level ``frm``) registered at every cut it crosses before level ``to``;
            each copy ``<name>_d<cut>`` is made once and shared by all users."""
            base = x.name
            for c in sorted(cuts):
                if frm <= c < to and not x.const:
                    if (base, c) not in delayed:
                        delayed[(base, c)] = body.reg(f"{base}_d{c}", x)
                    x = delayed[(base, c)]
            return x

        made: dict[int, Sig] = {}

        def source(src: int, at: int) -> Sig:
            """Input field or shared term ``src`` as a signal usable by an adder at level ``at``."""
            if src < n_in:
                return delay(xs[src], 0, at)
            if src not in made:
                t = sh_by_id[src]
                cap, body.cap = body.cap, 1 << 30  # shared terms are exact (never wrapped)
                name = {i: (f"x{i}" if i < n_in else f"s{i}") for i in (t.a, t.b)}
                body.lines.append(f"    // shared term s{src} = ({name[t.a]} << {t.ka}) {'+' if t.sign_b > 0 else '-'} "
                                  f"({name[t.b]} << {t.kb}), adder level {t.level}")
                a = self._digit_leaf(body, f"s{src}_a", source(t.a, t.level), 1, t.ka)
                b = self._digit_leaf(body, f"s{src}_b", source(t.b, t.level), t.sign_b, t.kb)
                made[src] = add_sigs(body, f"s{src}", a, b)
                body.cap = cap
            return delay(made[src], level[src], at)

        def emit_node(j: int, node, at: int) -> Sig:
            if node[0] == "d":
                src, k, sg = node[1]
                nm = f"{src}" if src < n_in else f"s{src}"
                return self._digit_leaf(body, f"n{j}_t{nm}{'n' if sg < 0 else 'p'}{k}", source(src, at), sg, k)
            if node[0] == "p":
                i, wv = node[1], node[2]
                x = xs[i]
                lo, hi = sorted((wv * x.lo, wv * x.hi))
                w = min(bits_for(lo, hi), body.cap)
                return delay(body.wire(f"n{j}_m{i}", w, f"{fit(x, w, body)} * {lit(wv, w)}", lo, hi), 0, at)
            if node[0] == "b":
                return const_sig(node[1])
            lv = node[3]
            a, b = emit_node(j, node[1], lv), emit_node(j, node[2], lv)
            body.n += 1
            return delay(add_sigs(body, f"n{j}_a{body.n}", a, b), lv, at)

        sums = []
        for j, (_, _, root) in enumerate(plans):
            body.cap = caps[j]
            acc = positive(body, f"n{j}_acc", emit_node(j, root, depth + 1))
            body.cap = 1 << 30
            if not acc.const:
                acc = Sig(acc.name, acc.width, *exact[j])  # true range (the tree may be wrapped)
            sums.append(acc)
        return sums, cuts

    def _requant_inst(self, body: _Body, ly: Layer, prefix: str, acc: Sig, qname: str, shift: int | None = None,
                      rq: Requant | None = None, ob: int | None = None) -> None:
        """Requantize ``acc`` into ``qname`` (``shift``: a per-field shift instead of the layer's;
        ``rq``/``ob``: another requantizer / output width than the layer's)."""
        rq = rq or ly.requant
        ob = ob or ly.out_fmt.bits
        if rq is not None and shift is not None and shift != rq.shift:
            rq = Requant(shift, rq.rounding, rq.relu, rq.out)
        if rq is None:  # accumulator output: sign-extend to the layer's output width
            body.lines.append(f"    wire [{ob - 1}:0] {qname} = {acc.ext(ob)};")
            return
        self.lib_used.add("cs_requant.v")
        raw_lo, raw_hi = (int(v) for v in shift_round(np.array([acc.lo, acc.hi], dtype=object), rq.shift, rq.rounding))
        sat_lo = int(raw_lo < rq.out.lo)  # relu handled separately
        sat_hi = int(raw_hi > rq.out.hi)
        if acc.const:
            v = int(rq.apply(np.array([acc.lo], dtype=object))[0])
            body.lines.append(f"    wire [{ob - 1}:0] {qname} = {lit(v, ob)};")
            return
        body.lines.append(
            f"    wire [{ob - 1}:0] {qname};\n"
            f"    cs_requant #(.IN_W({acc.width}), .OUT_W({ob}), .OUT_SIGNED({int(rq.out.signed)}), "
            f".NARROW({int(rq.out.narrow)}), .SHIFT({rq.shift}), .MODE({MODE_CODES[normalize_rounding(rq.rounding)]}), "
            f".RELU({int(rq.relu)}), .SAT_LO({sat_lo}), .SAT_HI({sat_hi})) {prefix}_rq (.acc({acc.name}), .q({qname}));")

    def emit_parallel(self, ly: Layer) -> tuple[str, int]:
        """Fully parallel module; returns (verilog, latency)."""
        body = _Body()
        if ly.kind == "requant":
            conns = [[(j, 1)] for j in range(ly.n_out)]
            biases = np.zeros(ly.n_out, dtype=np.int64)
        elif ly.kind == "maxpool":
            conns = ly.connections()
            biases = np.zeros(ly.n_out, dtype=np.int64)
        else:
            conns = ly.connections()
            biases = ly.bias_vector()
        # per-channel scales: divide each field's terms by its power-of-two factor (exact)
        fs = [0] * ly.n_out
        if ly.field_shift is not None and (ly.requant is not None or ly.field_out):
            fs = [int(t) for t in ly.field_shift]
            for j, t in enumerate(fs):
                if t:
                    assert all(w % (1 << t) == 0 for _, w in conns[j]) and biases[j] % (1 << t) == 0, (ly.name, j)
            conns = [[(i, w >> t) for i, w in terms] for terms, t in zip(conns, fs, strict=True)]
            biases = np.array([int(b) >> t for b, t in zip(biases, fs, strict=True)], dtype=np.int64)
        used = sorted({i for terms in conns for i, _ in terms})
        xs = {i: self._in_sig(ly, i) for i in used}
        for i in used:  # name the input fields
            s = xs[i]
            body.lines.append(f"    wire signed [{s.width - 1}:0] x{i} = {s.name};")
            xs[i] = Sig(f"x{i}", s.width, s.lo, s.hi)
        exact = ly.acc_bounds() if ly.is_acc else None
        if exact is not None and any(fs):
            exact = [(lo >> t, hi >> t) for (lo, hi), t in zip(exact, fs, strict=True)]
        if ly.kind in ("maxpool", "requant"):  # max / pass-through: level-synchronous trees
            all_leaves = [[xs[i] for i, _ in terms] for terms in conns] if ly.kind == "maxpool" else \
                [[xs[j]] for j in range(ly.n_out)]
            depth = max((_depth(len(lv)) for lv in all_leaves), default=0)
            cuts = set(_cuts(depth + 1, self.pipeline))
            op = max_sigs if ly.kind == "maxpool" else add_sigs
            accs = [positive(body, f"n{j}_acc", tree(body, f"n{j}", lv, depth, cuts, op=op))
                    for j, lv in enumerate(all_leaves)]
            if exact is not None:
                accs = [a if a.const else Sig(a.name, a.width, *exact[j]) for j, a in enumerate(accs)]
        else:
            accs, cuts = self._linear_sums(body, ly, xs, conns, biases, exact)
        ob = ly.out_fmt.bits
        outs = []
        for j, acc in enumerate(accs):
            if ly.kind == "maxpool":
                qn = f"q{j}"
                if acc.const:
                    body.lines.append(f"    wire [{ob - 1}:0] {qn} = {lit(acc.lo, ob)};")
                elif acc.width == ob:
                    body.lines.append(f"    wire [{ob - 1}:0] {qn} = {acc.name};")
                else:  # unsigned fields were widened by one zero bit
                    body.lines.append(f"    wire [{ob - 1}:0] {qn} = {acc.name}[{ob - 1}:0];")
                    body.lines.append(f"    wire _unused_{qn} = {acc.name}[{acc.width - 1}];")
            else:
                sh = None
                if fs[j] and ly.requant is not None and not ly.field_out:
                    sh = ly.requant.shift - fs[j]
                self._requant_inst(body, ly, f"n{j}", acc, f"q{j}", shift=sh)
            outs.append(f"q{j}")
        stages = len(cuts) + 1
        v = [self._header(ly, f"fully parallel (latency strategy), multiplier={self.multiplier}, "
                              f"{len(cuts)} tree register stage(s) + output register: latency {stages}, II 1"),
             self._ports(ly)]
        v.append("    wire en = !out_valid || out_ready;   // the pipeline advances\n    assign in_ready = en;\n")
        v.append(f"    reg [{stages - 1}:0] vld;\n    always @(posedge clk)\n        if (rst) vld <= {stages}'b0;\n")
        if stages == 1:
            v.append("        else if (en) vld <= in_valid;\n")
        else:
            v.append(f"        else if (en) vld <= {{vld[{stages - 2}:0], in_valid}};\n")
        v.append(f"    assign out_valid = vld[{stages - 1}];\n")
        v.append(self._unused(ly, set(used)))
        v.append("\n".join(body.lines) + "\n")
        v.append(self._unused_sliced(body))
        v.append(f"    reg [{ly.n_out * ob - 1}:0] out_r;\n    always @(posedge clk)\n        if (en) begin\n")
        for j, q in enumerate(outs):
            v.append(f"            out_r[{j * ob + ob - 1}:{j * ob}] <= {q};\n")
        v.append("        end\n    assign out_data = out_r;\nendmodule\n")
        return "".join(v), stages

    @staticmethod
    def _rom(body: _Body, nm: str, width: int, values: list[int], cw: int, what: str) -> None:
        kind = "signed " if width > 1 else ""
        body.lines.append(f"    reg {kind}[{width - 1}:0] {nm};   // {what}")
        body.lines.append("    always @(*) begin\n        case (step)")
        for t, v in enumerate(values):
            body.lines.append(f"            {cw}'d{t}: {nm} = {lit(v, width)};")
        body.lines.append(f"            default: {nm} = {lit(0, width)};\n        endcase\n    end")

    def _pot_slot(self, body: _Body, pre: str, xs: Sig, ws: list[int], cw: int, w: int, lo: int, hi: int,
                  corr: list[int], rom) -> Sig:
        """Power-of-two product from (zero, sign, exponent) ROMs: ``x <<< e``, negated as ``~(x <<< e)``
        with the missing +1 added to ``corr[step]`` (folded into the lane's bias ROM: no negators)."""
        exps = [abs(v).bit_length() - 1 if v else 0 for v in ws]
        emin = min(e for e, v in zip(exps, ws, strict=True) if v)
        rel = [e - emin if v else 0 for e, v in zip(exps, ws, strict=True)]
        ew = max(1, max(rel).bit_length())
        base = fit(xs, w, body) if emin == 0 else f"{{{fit(xs, w - emin, body)}, {emin}'b0}}"
        if max(rel) > 0:
            sh = f"({base} <<< {rom(f'{pre}_e', ew, rel, 'exponent ROM')})"
        else:
            sh = base
        expr = sh
        if any(v < 0 for v in ws):
            if all(v <= 0 for v in ws):
                expr = f"~{sh}"
            else:
                sn = rom(f"{pre}_n", 1, [int(v < 0) for v in ws], "sign ROM")
                expr = f"({sh} ^ {{{w}{{{sn}}}}})"
            for t, v in enumerate(ws):
                corr[t] += int(v < 0)  # -p = ~p + 1
        if any(v == 0 for v in ws):
            zn = rom(f"{pre}_z", 1, [int(v == 0) for v in ws], "zero ROM")
            expr = f"({zn} ? {lit(0, w)} : {expr})"
        return body.wire(f"{pre}_p", w, expr, lo - 1, hi)  # ~p = -p - 1

    def _fold_plan(self, ly: Layer, conns) -> tuple[int, int, int, int | None, list[int] | None]:
        """(lanes, groups, chunks, slots per chunk or None = all, dense input column order or None)."""
        n_out = ly.n_out
        nterm = max((len(c) for c in conns), default=0)
        if self.reuse <= n_out or nterm <= 1:
            lanes = max(1, math.ceil(n_out / self.reuse))
            return lanes, math.ceil(n_out / lanes), 1, None, None
        # input-serial: one output field per group, its terms spread over `chunks` cycles
        cols = None
        if ly.kind == "dense":  # column order: slot k of chunk c reads input cols[c*K+k] for every output
            cols = sorted({i for c in conns for i, _ in c})
            nterm = len(cols)
        chunks = max(1, min(self.reuse // n_out, nterm))
        k = math.ceil(nterm / chunks)
        chunks = math.ceil(nterm / k)
        return 1, n_out, chunks, k, cols

    def emit_folded(self, ly: Layer) -> tuple[str, int, int]:
        """Time-multiplexed, pipelined linear layer; returns (verilog, latency, ii)."""
        conns = ly.connections()
        biases = ly.bias_vector()
        n_out = ly.n_out
        lanes, groups, chunks, kslots, cols = self._fold_plan(ly, conns)
        steps = groups * chunks
        ob = ly.out_fmt.bits
        ib = ly.in_fmt.bits
        qb, q_rq = ob, None  # lane result width / requantizer (field_out: the aligned accumulator)
        if ly.field_out:
            bnd = ly.acc_bounds()
            alo, ahi = min(b[0] for b in bnd), max(b[1] for b in bnd)
            if ly.requant is None:
                qb = bits_for(alo, ahi)
            else:  # a bare relu
                qf = FixedFormat(max(bits_for(0, max(ahi, 0)) - 1, 1), False, ly.acc_fmt.scale_exp)
                q_rq, qb = Requant(0, "FLOOR", True, qf), qf.bits
        body = _Body()
        opreg = self.pipeline >= 1  # register stage after the ROMs / input multiplexers
        cw = max(1, (steps - 1).bit_length())
        kw = max(1, (chunks - 1).bit_length())
        gw = max(1, (groups - 1).bit_length())

        # slot entries: ent[lane][k][t] = (input, weight) or None, t = g*chunks + c
        def neuron_terms(j: int) -> list:
            if cols is not None:
                wcol = {i: wv for i, wv in conns[j]}
                return [(i, wcol.get(i, 0)) for i in cols]
            return sorted(conns[j])

        slot_ent = []
        for lane in range(lanes):
            per_t = []
            for g in range(groups):
                j = g * lanes + lane
                terms = neuron_terms(j) if j < n_out else []
                for c in range(chunks):
                    per_t.append(terms[c * kslots:(c + 1) * kslots] if kslots else terms)
            n_slots = max((len(r) for r in per_t), default=0)
            slot_ent.append([[(r[k] if k < len(r) else None) for r in per_t] for k in range(n_slots)])

        used_inputs: set[int] = set()
        x_names: dict[int, Sig] = {}

        def xsig(i: int) -> Sig:
            if i not in x_names:
                s = self._in_sig(ly, i, "xin")
                body.lines.append(f"    wire signed [{s.width - 1}:0] x{i} = {s.name};")
                x_names[i] = Sig(f"x{i}", s.width, s.lo, s.hi)
            used_inputs.add(i)
            return x_names[i]

        def opr(nm: str, width: int, signed: bool = True) -> str:
            """Operand register stage: ``nm`` is the (registered) value of ``nm_c``."""
            kind = "signed " if signed else ""
            if opreg:
                body.lines.append(f"    reg {kind}[{width - 1}:0] {nm};\n"
                                  f"    always @(posedge clk) if (en) {nm} <= {nm}_c;")
            else:
                body.lines.append(f"    wire {kind}[{width - 1}:0] {nm} = {nm}_c;")
            return nm

        def rom(nm: str, width: int, values: list[int], what: str) -> str:
            self._rom(body, f"{nm}_c", width, values, cw, what)
            return opr(nm, width, width > 1)

        xw = ib + (0 if ly.in_fmt.signed else 1)
        pot_shift = ly.pot and self.multiplier == "shiftadd"
        xlo, xhi = ly.in_fmt.lo, ly.in_fmt.hi
        exact = ly.acc_bounds()
        lane_leaves, lane_caps = [], []
        for lane in range(lanes):
            lane_b = [exact[g * lanes + lane] for g in range(groups) if g * lanes + lane < n_out]
            lane_lo, lane_hi = min(b[0] for b in lane_b), max(b[1] for b in lane_b)
            body.cap = bits_for(lane_lo, lane_hi)
            corr = [0] * steps  # +1 per negated power-of-two product, per step
            leaves = []
            for k, entries in enumerate(slot_ent[lane]):
                ws = [e[1] if e else 0 for e in entries]
                if all(w == 0 for w in ws):
                    continue
                idxs = sorted({e[0] for e in entries if e and e[1] != 0})
                nm = f"l{lane}_s{k}_x"
                for i in idxs:
                    xsig(i)
                if len(idxs) == 1:
                    body.lines.append(f"    wire signed [{xw - 1}:0] {nm}_c = x{idxs[0]};")
                else:
                    by_c: dict[int, int] = {}
                    ok = True
                    for t, e in enumerate(entries):
                        if e and e[1] != 0:
                            ok &= by_c.setdefault(t % chunks, e[0]) == e[0]
                    sel, n_sel, sw = ("chk", chunks, kw) if ok and chunks > 1 else ("step", steps, cw)
                    table = by_c if sel == "chk" else {t: e[0] for t, e in enumerate(entries) if e and e[1] != 0}
                    body.lines.append(f"    reg signed [{xw - 1}:0] {nm}_c;")
                    body.lines.append(f"    always @(*) begin\n        case ({sel})\n" + "".join(
                        f"            {sw}'d{t}: {nm}_c = x{table[t]};\n" for t in range(n_sel) if t in table)
                        + f"            default: {nm}_c = {lit(0, xw)};\n        endcase\n    end")
                xs = Sig(opr(nm, xw), xw, xlo, xhi)
                wlo, whi = min(ws), max(ws)
                cands = [a * b for a in (xlo, xhi) for b in (wlo, whi)] + [0]
                plo, phi = min(cands), max(cands)
                w_p = min(bits_for(plo, phi), body.cap)
                if pot_shift:
                    leaves.append(self._pot_slot(body, f"l{lane}_s{k}", xs, ws, cw, w_p, plo, phi, corr, rom))
                    continue
                pw = bits_for(wlo, whi)
                wn = rom(f"l{lane}_s{k}_w", pw, ws, "weight ROM")
                leaves.append(body.wire(f"l{lane}_s{k}_p", w_p,
                                        f"{fit(xs, w_p, body)} * {fit(Sig(wn, pw, wlo, whi), w_p, body)}", plo, phi))
            bs = []
            for g in range(groups):
                j = g * lanes + lane
                for c in range(chunks):
                    t = g * chunks + c
                    bs.append((int(biases[j]) if (j < n_out and c == 0) else 0) + corr[t])
            if any(b != 0 for b in bs):
                if len(set(bs)) == 1:
                    leaves.append(const_sig(bs[0]))
                else:
                    bw = bits_for(min(bs), max(bs))
                    leaves.append(Sig(rom(f"l{lane}_b", bw, bs, "bias ROM"), bw, min(bs), max(bs)))
            lane_leaves.append((leaves, lane_lo, lane_hi))
            lane_caps.append(body.cap)
            body.cap = 1 << 30
        # register stages: operand register, products (level 0), adder-tree levels
        depth = max((_depth(len(lv)) for lv, _, _ in lane_leaves), default=0)
        cuts: set[int] = set()
        if self.pipeline >= 2:
            cuts.add(0)
            cuts |= {c + 1 for c in _cuts(depth, self.pipeline - 2)}
        n_stages = int(opreg) + len(cuts)
        lane_accs = []
        for lane, (leaves, lane_lo, lane_hi) in enumerate(lane_leaves):
            body.cap = cap = lane_caps[lane]
            s = positive(body, f"l{lane}_sum", tree(body, f"l{lane}", leaves, depth, cuts))
            if chunks > 1:  # accumulate over the chunks of one output field (modulo 2^cap: exact at the end)
                body.lines.append(f"    reg signed [{cap - 1}:0] l{lane}_acc;\n"
                                  f"    wire signed [{cap - 1}:0] l{lane}_tot = (e_first ? {lit(0, cap)} : l{lane}_acc) + "
                                  f"{fit(s, cap, body)};\n"
                                  f"    always @(posedge clk) if (en && e_v) l{lane}_acc <= l{lane}_tot;")
                acc = Sig(f"l{lane}_tot", cap, lane_lo, lane_hi)
            elif s.const:
                acc = s
            else:
                acc = Sig(s.name, s.width, lane_lo, lane_hi)
            body.cap = 1 << 30
            self._requant_inst(body, ly, f"l{lane}", acc, f"q{lane}", rq=q_rq, ob=qb)
            lane_accs.append(f"q{lane}")
        lat = steps + n_stages + 1  # input latch + steps + register stages (the last writes the output register)
        mode = (f"input-serial: {chunks} chunk(s) x {kslots} term slot(s) per output field, accumulator"
                if chunks > 1 else f"{lanes} lane(s) x {steps} step(s)")
        v = [self._header(ly, f"folded (resource strategy), reuse {self.reuse}: {mode}; {steps} step(s); "
                              f"weights in a case ROM, {'barrel shift (power-of-two weights)' if pot_shift else 'multiplier *'}; "
                              f"{n_stages} register stage(s) (operands {int(opreg)}, tree {len(cuts)}); latency {lat}, II {steps}"),
             self._ports(ly)]
        tags = [("e_v", 1, "busy", True), ("e_final", 1, f"(step == {cw}'d{steps - 1})", False)]
        if chunks > 1:
            tags += [("e_first", 1, f"(chk == {kw}'d0)", False), ("e_lastc", 1, f"(chk == {kw}'d{chunks - 1})", False)]
        if groups > 1:
            tags.append(("e_grp", gw, "grp" if chunks > 1 else "step", False))
        v.append(f"""    // {steps} step(s) per vector; the datapath is a {n_stages}-stage pipeline behind the step counter
    reg busy;
    reg [{cw - 1}:0] step;
    reg [{ly.n_in * ib - 1}:0] xin;                 // latched input vector
    reg out_v;
    reg [{n_out * ob - 1}:0] out_r;
""")
        if chunks > 1:
            v.append(f"    reg [{kw - 1}:0] chk;\n" + (f"    reg [{gw - 1}:0] grp;\n" if groups > 1 else ""))
        for nm, w, _src, _ in tags:
            v.append(f"    wire {'' if w == 1 else f'[{w - 1}:0] '}{nm};\n")
        v.append(f"""    wire stall = e_v && e_final && out_v && !out_ready;   // finished vector, output register full
    wire en = !stall;
    wire last = busy && (step == {cw}'d{steps - 1});
    assign in_ready = en && (!busy || last);
    assign out_valid = out_v;
    assign out_data = out_r;
    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0;
            step <= {cw}'d0;
            out_v <= 1'b0;
""")
        if chunks > 1:
            v.append(f"            chk <= {kw}'d0;\n" + (f"            grp <= {gw}'d0;\n" if groups > 1 else ""))
        v.append("""        end else begin
            if (out_v && out_ready) out_v <= 1'b0;
            if (en && e_v && e_final) out_v <= 1'b1;
            if (en) begin
                if (in_valid && in_ready) begin
                    busy <= 1'b1;
""")
        v.append(f"                    step <= {cw}'d0;\n")
        if chunks > 1:
            v.append(f"                    chk <= {kw}'d0;\n" + (f"                    grp <= {gw}'d0;\n" if groups > 1 else ""))
        v.append("""                end else if (last) begin
                    busy <= 1'b0;
                end else if (busy) begin
""")
        v.append(f"                    step <= step + {cw}'d1;\n")
        if chunks > 1:
            v.append(f"                    if (chk == {kw}'d{chunks - 1}) begin\n                        chk <= {kw}'d0;\n"
                     + (f"                        grp <= grp + {gw}'d1;\n" if groups > 1 else "")
                     + f"                    end else chk <= chk + {kw}'d1;\n")
        v.append("""                end
            end
        end
    end
    always @(posedge clk)
        if (in_valid && in_ready) xin <= in_data;
""")
        # tag pipeline (valid, last step, chunk flags, group index) alongside the datapath
        for nm, w, src, is_valid in tags:
            if n_stages == 0:
                v.append(f"    assign {nm} = {src};\n")
                continue
            decl = "" if w == 1 else f"[{w - 1}:0] "
            for st in range(n_stages):
                prev = src if st == 0 else f"{nm}_d{st - 1}"
                v.append(f"    reg {decl}{nm}_d{st};\n")
                if is_valid:
                    v.append(f"    always @(posedge clk) if (rst) {nm}_d{st} <= 1'b0; else if (en) {nm}_d{st} <= {prev};\n")
                else:
                    v.append(f"    always @(posedge clk) if (en) {nm}_d{st} <= {prev};\n")
            v.append(f"    assign {nm} = {nm}_d{n_stages - 1};\n")
        v.append("\n".join(body.lines) + "\n")
        lane_cat = "{" + ", ".join(reversed(lane_accs)) + "}"
        v.append(f"    wire [{lanes * qb - 1}:0] lanes_q = {lane_cat};\n")
        wr = "en && e_v" + (" && e_lastc" if chunks > 1 else "")
        total = groups * lanes * qb
        if groups > 1:
            v.append(f"    reg [{(groups - 1) * lanes * qb - 1}:0] res;            // results of finished groups\n")
            v.append(f"    always @(posedge clk)\n        if ({wr}) begin\n            case (e_grp)\n")
            for g in range(groups - 1):
                v.append(f"                {gw}'d{g}: res[{(g + 1) * lanes * qb - 1}:{g * lanes * qb}] <= lanes_q;\n")
            v.append("                default: ;\n            endcase\n        end\n")
            full = "{lanes_q, res}"
        else:
            full = "lanes_q"
        if ly.field_out:  # field j at its own scale: the aligned accumulator's bits from field_shift[j] up
            v.append(f"    wire [{total - 1}:0] res_all = {full};\n    wire _unused_fo = &{{1'b0, res_all, 1'b0}};\n")
            parts = []
            for j, t in enumerate(int(x) for x in ly.field_shift):
                base, w = j * qb + t, qb - t
                if w <= 0:  # a field that is always 0
                    parts.append(lit(0, ob))
                elif w >= ob:
                    parts.append(f"res_all[{base + ob - 1}:{base}]")
                else:
                    ext = f"res_all[{base + w - 1}]" if ly.out_fmt.signed else "1'b0"
                    parts.append(f"{{{{{ob - w}{{{ext}}}}}, res_all[{base + w - 1}:{base}]}}")
            full = "{" + ", ".join(reversed(parts)) + "}"
        elif total > n_out * ob:
            v.append(f"    wire [{total - 1}:0] res_all = {full};\n")
            v.append(f"    wire _unused_pad = &{{1'b0, res_all[{total - 1}:{n_out * ob}], 1'b0}};\n")
            full = f"res_all[{n_out * ob - 1}:0]"
        v.append(f"    always @(posedge clk)\n        if (en && e_v && e_final) out_r <= {full};\n")
        if chunks > 1:
            v.append("    wire _unused_lastc = e_lastc;\n" if groups == 1 else "")
        v.append(self._unused(ly, used_inputs, "xin"))
        v.append(self._unused_sliced(body))
        v.append("endmodule\n")
        return "".join(v), lat, steps

    # ---- top level -----------------------------------------------------------------------------
    def emit(self, out_dir: str | Path, onnx_rel: str = "../export/model.onnx") -> dict:
        if self.io == "stream":
            from codesign.rtl.stream import emit_stream

            return emit_stream(self, out_dir, onnx_rel)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files, layer_files = [], []
        latency, ii = 0, 1
        m = self.m
        insts = []
        for ly in m.layers:
            if ly.is_wiring:
                continue
            if self.strategy == "resource" and ly.is_linear:
                text, lat, lii = self.emit_folded(ly)
            else:
                text, lat = self.emit_parallel(ly)
                lii = 1
            latency += lat
            ii = max(ii, lii)
            self.layer_info[ly.name] = {"latency": lat, "ii": lii}
            (out_dir / f"{ly.name}.v").write_text(text)
            layer_files.append(f"{ly.name}.v")
            insts.append(ly)
        if not m.is_chain:  # forks and joins: latency of the longest path, skip FIFOs
            latency = self._plan_skips(ii)
        if self.axis_slice:
            self.lib_used.add("cs_skid_buffer.v")
            latency += 1
        top = self.emit_top() if m.is_chain else self.emit_top_graph()
        (out_dir / f"{self.top}.v").write_text(top)
        for lib in sorted(self.lib_used):
            shutil.copyfile(HW_DIR / lib, out_dir / lib)
            files.append(lib)
        files += layer_files + [f"{self.top}.v"]
        fin, fout = m.input_fmt, m.output_fmt
        out_exps = m.output_exps
        iface = {
            "top": self.top,
            "files": files,
            "clock": "clk", "reset": "rst", "reset_active_low": False,
            "input": {"tdata": "s_axis_tdata", "tvalid": "s_axis_tvalid", "tready": "s_axis_tready",
                      "fields": int(np.prod(m.input_shape)), "bits": fin.bits, "signed": fin.signed,
                      "scale_exp": fin.scale_exp, "shape": list(m.input_shape)},
            "output": {"tdata": "m_axis_tdata", "tvalid": "m_axis_tvalid", "tready": "m_axis_tready",
                       "fields": int(np.prod(m.output_shape)), "bits": fout.bits, "signed": fout.signed,
                       "scale_exp": fout.scale_exp if out_exps is None else None, "shape": list(m.output_shape)},
            "latency_cycles": latency, "ii": ii,
            "strategy": self.strategy, "reuse": self.reuse,
            "onnx": onnx_rel,
            "layers": [],
        }
        if out_exps is not None:  # per-channel output scales: field i is code * 2^scale_exps[i]
            iface["output"]["scale_exps"] = [int(v) for v in out_exps]
        for ly in insts:
            e = {"name": ly.name, "kind": ly.kind, "onnx_output": ly.onnx_output, "fields": ly.n_out,
                 "bits": ly.out_fmt.bits, "signed": ly.out_fmt.signed,
                 "scale_exp": ly.out_fmt.scale_exp if not ly.field_out else None,
                 "shape": list(ly.out_shape), "latency_cycles": self.layer_info[ly.name]["latency"],
                 "ii": self.layer_info[ly.name]["ii"], "pot": ly.pot, "sparsity": round(ly.sparsity, 4)}
            if ly.field_out:
                e["scale_exps"] = [int(v) for v in ly.out_exps()]
            if ly.inputs is not None and not m.is_chain:
                e["inputs"] = [s or "input" for s in ly.inputs]
            if ly.name in self.skips_by_layer:
                e["skip_fifo"] = self.skips_by_layer[ly.name]
            if self.debug_taps:
                e["tap"] = {"tdata": f"dbg_{ly.name}_tdata", "tvalid": f"dbg_{ly.name}_tvalid"}
            iface["layers"].append(e)
        iface["multiplier"] = self.multiplier
        iface["axis_slice"] = self.axis_slice
        iface["pipeline"] = self.pipeline
        return iface

    def _plan_skips(self, ii: int) -> int:
        """Arrival cycle of every stream (longest path); at each join a FIFO on the input that arrives
        first, deep enough to hold every vector issued while the other input's path computes (no
        throughput loss at the design's II). Returns the network latency."""
        m = self.m
        t = {"": 0}
        for k, ly in enumerate(m.layers):
            srcs = m.sources(k)
            if ly.is_wiring:
                t[ly.name] = t[srcs[0]]
                continue
            arr = t[srcs[0]]
            if len(srcs) == 2 and self._base(srcs[0]) != self._base(srcs[1]):
                ta, tb = t[srcs[0]], t[srcs[1]]
                port = 0 if ta < tb else 1  # the early input waits in the FIFO
                diff = abs(ta - tb)
                depth = max(2, -(-max(diff, 1) // ii) + 1)
                self.skips[(ly.name, port)] = depth
                self.skips_by_layer[ly.name] = {"input": port, "depth": depth, "wait_cycles": diff}
                self.lib_used.add("cs_fifo.v")
                arr = max(ta, tb) if diff >= 1 else ta + 1  # the FIFO adds one cycle
            t[ly.name] = arr + self.layer_info[ly.name]["latency"]
        return t[m.layers[-1].name] if m.layers else 0

    def _base(self, name: str) -> str:
        """The computing layer (or ``""``, the input) behind flatten/transpose wiring."""
        m = self.m
        while name:
            k = next(i for i, ly in enumerate(m.layers) if ly.name == name)
            if not m.layers[k].is_wiring:
                break
            name = m.sources(k)[0]
        return name

    def _top_head(self) -> list[str]:
        m = self.m
        fin, fout = m.input_fmt, m.output_fmt
        nin = int(np.prod(m.input_shape)) * fin.bits
        nout = int(np.prod(m.output_shape)) * fout.bits
        lines = [
            f"// {self.top}: generated by codesign.rtl (do not edit)",
            f"//   network : {m.name}, {len([ly for ly in m.layers if not ly.is_wiring])} layer module(s)",
            f"//   input   : {list(m.input_shape)} {fin.describe()} (field i = s_axis_tdata[i*{fin.bits} +: {fin.bits}])",
            f"//   output  : {list(m.output_shape)} {fout.describe()} (field i = m_axis_tdata[i*{fout.bits} +: {fout.bits}])",
            f"//   arch    : {self.strategy} strategy, reuse {self.reuse}, multiplier {self.multiplier}, pipeline {self.pipeline}",
            "//   AXI-Stream, one vector per beat; clk rising edge, rst synchronous active high.",
        ]
        for ly in m.layers:
            lines.append(f"//   {ly.name:8s}: {ly.describe()}")
        ports = ["    input  wire clk", "    input  wire rst",
                 f"    input  wire [{nin - 1}:0] s_axis_tdata", "    input  wire s_axis_tvalid", "    output wire s_axis_tready",
                 f"    output wire [{nout - 1}:0] m_axis_tdata", "    output wire m_axis_tvalid", "    input  wire m_axis_tready"]
        if self.debug_taps:
            for ly in m.layers:
                if not ly.is_wiring:
                    ports.append(f"    output wire [{ly.n_out * ly.out_fmt.bits - 1}:0] dbg_{ly.name}_tdata")
                    ports.append(f"    output wire dbg_{ly.name}_tvalid")
        lines.append(f"module {self.top} (\n" + ",\n".join(ports) + "\n);")
        return lines

    def emit_top(self) -> str:
        """Top level of a chain of layers."""
        m = self.m
        nout = int(np.prod(m.output_shape)) * m.output_fmt.bits
        lines = self._top_head()
        cur_d, cur_v, cur_r = "s_axis_tdata", "s_axis_tvalid", "s_axis_tready"
        for k, ly in enumerate(m.layers):
            if ly.kind == "flatten":
                continue
            if ly.kind == "transpose":
                b = ly.in_fmt.bits
                d = f"d{k}_{ly.name}"
                parts = ", ".join(f"{cur_d}[{int(p) * b + b - 1}:{int(p) * b}]" for p in reversed(ly.perm))
                lines.append(f"    wire [{ly.n_out * b - 1}:0] {d} = {{{parts}}};   // {ly.name}: transpose (wiring)")
                cur_d = d
                continue
            d, v, r = f"{ly.name}_tdata", f"{ly.name}_tvalid", f"{ly.name}_tready"
            lines.append(f"    wire [{ly.n_out * ly.out_fmt.bits - 1}:0] {d};\n    wire {v};\n    wire {r};")
            in_ready = f"{ly.name}_in_ready"
            lines.append(f"    wire {in_ready};")
            lines.append(f"    {ly.name} u_{ly.name} (.clk(clk), .rst(rst), .in_valid({cur_v}), .in_ready({in_ready}), "
                         f".in_data({cur_d}), .out_valid({v}), .out_ready({r}), .out_data({d}));")
            lines.append(f"    assign {cur_r} = {in_ready};")
            if self.debug_taps:
                lines.append(f"    assign dbg_{ly.name}_tdata = {d};\n    assign dbg_{ly.name}_tvalid = {v} && {r};")
            cur_d, cur_v, cur_r = d, v, r
        if self.axis_slice:
            lines.append(f"    // output register slice: no combinational path from m_axis_tready to s_axis_tready\n"
                         f"    cs_skid_buffer #(.W({nout})) u_out_slice (.clk(clk), .rst(rst), .s_tdata({cur_d}), "
                         f".s_tvalid({cur_v}), .s_tready({cur_r}),\n        .m_tdata(m_axis_tdata), .m_tvalid(m_axis_tvalid), "
                         f".m_tready(m_axis_tready));")
        else:
            lines.append(f"    assign m_axis_tdata = {cur_d};\n    assign m_axis_tvalid = {cur_v};\n    assign {cur_r} = m_axis_tready;")
        lines.append("endmodule")
        return "\n".join(lines) + "\n"

    def emit_top_graph(self) -> str:
        """Top level of a network that forks and re-joins (residual blocks).

        A stream read by several consumers is a *lazy fork*: each consumer sees ``valid`` only while all
        the others are ready, and the producer sees ``ready`` when all are (no consumer's ready depends on
        its valid, so this has no combinational loop). A join (``add``) fires when both inputs are valid;
        the input that arrives first waits in a ``cs_fifo`` (sized in :meth:`_plan_skips`), which also
        breaks the fork -> join loop of a skip connection."""
        m = self.m
        nout = int(np.prod(m.output_shape)) * m.output_fmt.bits
        lines = self._top_head()
        base = self._base

        def ports(k: int) -> list[str]:
            """The sources of layer k that are separate stream edges (Add(x, x): one edge)."""
            srcs = m.sources(k)
            return srcs[:1] if len(srcs) == 2 and base(srcs[0]) == base(srcs[1]) else srcs

        # stream of every computing layer / the input: (data, valid, ready, width)
        width = {"": int(np.prod(m.input_shape)) * m.input_fmt.bits}
        for ly in m.layers:
            if not ly.is_wiring:
                width[ly.name] = ly.n_out * ly.out_fmt.bits
        stream = {"": ("s_axis_tdata", "s_axis_tvalid", "s_axis_tready")}
        data = {"": "s_axis_tdata"}
        edges: dict[str, list[tuple[str, int]]] = {}  # base stream -> consumers (layer, port)
        for k, ly in enumerate(m.layers):
            if not ly.is_wiring:
                for p, src in enumerate(ports(k)):
                    edges.setdefault(base(src), []).append((ly.name, p))
        last = m.layers[-1].name
        edges.setdefault(base(last), []).append(("", 0))  # the output stream
        ready: dict[tuple[str, int], str] = {}  # consumer edge -> its ready (as the producer sees it)
        evalid: dict[tuple[str, int], str] = {}
        done: dict[str, int] = {}

        def edge_valid(b: str, edge: tuple[str, int]) -> str:
            if len(edges[b]) == 1:
                return stream[b][1]
            nm = f"{edge[0] or 'out'}_in{edge[1]}_valid"
            lines.append(f"    wire {nm};   // lazy fork of {b or 'the input'}")
            evalid[edge] = nm
            return nm

        def finish(b: str, edge: tuple[str, int]) -> None:
            cons = edges[b]
            if len(cons) == 1:
                lines.append(f"    assign {stream[b][2]} = {ready[edge]};")
                return
            done[b] = done.get(b, 0) + 1
            if done[b] < len(cons):
                return
            lines.append(f"    // fork of {b or 'the input'}: every consumer takes the vector in the same cycle")
            lines.append(f"    assign {stream[b][2]} = {' && '.join(f'({ready[c]})' for c in cons)};")
            for c in cons:
                others = [f"({ready[o]})" for o in cons if o != c]
                lines.append(f"    assign {evalid[c]} = {stream[b][1]} && {' && '.join(others)};")

        for k, ly in enumerate(m.layers):
            srcs = m.sources(k)
            if ly.kind == "flatten":
                data[ly.name] = data[srcs[0]]
                continue
            if ly.kind == "transpose":
                b = ly.in_fmt.bits
                d = f"d{k}_{ly.name}"
                src = data[srcs[0]]
                parts = ", ".join(f"{src}[{int(p) * b + b - 1}:{int(p) * b}]" for p in reversed(ly.perm))
                lines.append(f"    wire [{ly.n_out * b - 1}:0] {d} = {{{parts}}};   // {ly.name}: transpose (wiring)")
                data[ly.name] = d
                continue
            nm = ly.name
            d, v, r = f"{nm}_tdata", f"{nm}_tvalid", f"{nm}_tready"
            lines.append(f"    wire [{ly.n_out * ly.out_fmt.bits - 1}:0] {d};\n    wire {v};\n    wire {r};")
            in_ready = f"{nm}_in_ready"
            lines.append(f"    wire {in_ready};")
            sides = []  # (valid, data, ready target or None, edge)
            for p, src in enumerate(ports(k)):
                b = base(src)
                edge = (nm, p)
                ev = edge_valid(b, edge)
                if (nm, p) in self.skips:
                    depth = self.skips[(nm, p)]
                    f = f"{nm}_skip{p}"
                    lines.append(f"    // skip path into {nm} input {p}: waits here while the other input is computed\n"
                                 f"    wire [{width[b] - 1}:0] {f}_tdata;\n    wire {f}_tvalid;\n    wire {f}_tready;\n"
                                 f"    wire {f}_s_ready;\n"
                                 f"    cs_fifo #(.W({width[b]}), .DEPTH({depth})) u_{f} (.clk(clk), .rst(rst), "
                                 f".s_tdata({data[src]}), .s_tvalid({ev}), .s_tready({f}_s_ready),\n"
                                 f"        .m_tdata({f}_tdata), .m_tvalid({f}_tvalid), .m_tready({f}_tready));")
                    ready[edge] = f"{f}_s_ready"
                    sides.append((f"{f}_tvalid", f"{f}_tdata", f"{f}_tready", edge))
                else:
                    sides.append((ev, data[src], None, edge))
            if len(sides) == 1:
                in_v, in_d = sides[0][0], sides[0][1]
                if len(srcs) == 2:  # both operands from one stream (through wiring only): no wait
                    in_d = f"{{{data[srcs[1]]}, {data[srcs[0]]}}}"
                rdy = [in_ready]
            else:
                in_v = f"{nm}_in_valid"
                lines.append(f"    wire {in_v} = {sides[0][0]} && {sides[1][0]};   // join: both operands present")
                in_d = f"{{{sides[1][1]}, {sides[0][1]}}}"
                rdy = [f"{in_ready} && {sides[1][0]}", f"{in_ready} && {sides[0][0]}"]
            for (_, _, target, edge), rr in zip(sides, rdy, strict=True):
                if target is not None:
                    lines.append(f"    assign {target} = {rr};")
                else:
                    ready[edge] = rr
            lines.append(f"    {nm} u_{nm} (.clk(clk), .rst(rst), .in_valid({in_v}), .in_ready({in_ready}), "
                         f".in_data({in_d}), .out_valid({v}), .out_ready({r}), .out_data({d}));")
            for p, src in enumerate(ports(k)):
                finish(base(src), (nm, p))
            if self.debug_taps:
                lines.append(f"    assign dbg_{nm}_tdata = {d};\n    assign dbg_{nm}_tvalid = {v} && {r};")
            stream[nm] = (d, v, r)
            data[nm] = d
        b = base(last)
        out_d = data[last]
        out_v = edge_valid(b, ("", 0))
        if self.axis_slice:
            ready[("", 0)] = "out_slice_ready"
            lines.append(f"    wire out_slice_ready;\n"
                         f"    // output register slice: no combinational path from m_axis_tready to s_axis_tready\n"
                         f"    cs_skid_buffer #(.W({nout})) u_out_slice (.clk(clk), .rst(rst), .s_tdata({out_d}), "
                         f".s_tvalid({out_v}), .s_tready(out_slice_ready),\n        .m_tdata(m_axis_tdata), "
                         f".m_tvalid(m_axis_tvalid), .m_tready(m_axis_tready));")
        else:
            ready[("", 0)] = "m_axis_tready"
            lines.append(f"    assign m_axis_tdata = {out_d};\n    assign m_axis_tvalid = {out_v};")
        finish(b, ("", 0))
        lines.append("endmodule")
        return "\n".join(lines) + "\n"
