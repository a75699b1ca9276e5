"""``latency`` architecture: fully parallel layer modules (II = 1).

Each output field is an adder tree over its non-zero terms. A weight 0 generates nothing, +-2^k is a
wire shift, any other constant is a canonical-signed-digit shift-add (``multiplier='shiftadd'``, every
digit a tree leaf) or one ``*`` (``multiplier='dsp'``). Shift-add digits that several outputs have in
common are computed once (:mod:`codesign.rtl.cse`). Every signal is sized from exact interval bounds.
``pipeline`` register stages are spread evenly over the tree (leaf stage + adder levels); requantization
(``hw/cs_requant.v``) feeds the output register. The layer advances with ``en = !out_valid ||
out_ready`` (``in_ready = en``): backpressure stalls it. With ``flow_control='credit'`` every register
advances every cycle (no enable: the stall does not fan out to the datapath), ``in_ready`` is 1 and the
top level's ``hw/cs_credit_fifo.v`` absorbs backpressure. Latency = pipeline stages actually placed + 1.
MaxPool is a tree of comparators, an elementwise requantization a requantizer per field. Per-channel
weight scales (``field_shift``): every field's terms are divided by its power-of-two factor and
requantized with a per-field shift.
"""

from __future__ import annotations

import heapq

import numpy as np

from codesign.config import RTLConfig
from codesign.rtl import ir
from codesign.rtl.cse import share
from codesign.rtl.emit.module import (
    LayerModule,
    header,
    in_sig,
    ports,
    requant_inst,
    requant_of,
    unused_inputs,
    unused_sliced,
)
from codesign.rtl.emit.netlist import (
    UNCAPPED,
    Body,
    Sig,
    add_sigs,
    const_sig,
    csd,
    fit,
    ispow2,
    lit,
    max_sigs,
    positive,
    spread_cuts,
    tree,
    tree_depth,
)
from codesign.rtl.formats import MulShift, Requant, Thresholds, bits_for

SHARE_DEPTH = 3  # a shared shift-add term is at most this many adders deep
REQUANT_STAGES = 2  # at most this many registers inside a requantizer (hw/cs_requant_piped.v)


def digit_leaf(body: Body, nm: str, x: Sig, s: int, k: int) -> Sig:
    """The term ``s * (x << k)`` as a wire shift (``neg`` set for s < 0), at most ``body.cap`` bits."""
    cap = body.cap
    slo, shi = x.lo << k, x.hi << k  # stored: x << k; the true value is s * that
    inner = min(max(bits_for(slo, shi) - k, x.width), cap - k)
    shifted = fit(x, inner, body) if k == 0 else f"{{{fit(x, inner, body)}, {k}'b0}}"
    lo, hi = sorted((s * slo, s * shi))
    leaf = body.wire(nm, inner + k, shifted, lo, hi)
    leaf.neg = s < 0
    return leaf


def _columns(conns, caps: list[int], cfg: RTLConfig):
    """Per output: shift-add digits ``(input, shift, sign)`` and ``*`` products ``(input, weight)``."""
    cols, prods = [], []
    for j, terms in enumerate(conns):
        dg, pr = [], []
        for i, wv in terms:
            if ispow2(wv) or cfg.multiplier == "shiftadd":
                # a digit of weight 2^cap or more is a multiple of 2^cap: zero modulo the result width
                dg += [(i, k, sg) for sg, k in csd(int(wv)) if k < caps[j]]
            else:
                pr.append((i, int(wv)))
        cols.append(dg)
        prods.append(pr)
    return cols, prods


def _plan_trees(cols, prods, biases, level: dict[int, int]):
    """Per output, the adder tree that adds the two shallowest pending terms first (a nested tuple
    ``(level, seq, node)``), and the deepest tree's depth."""
    plans, depth = [], 0
    for j in range(len(cols)):
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
    return plans, depth


class _TreeBuilder:
    """Prints the planned adder trees of one layer: shared terms made once, signals registered at
    every pipeline cut they cross (each delayed copy made once per register group and shared)."""

    def __init__(self, body: Body, xs: dict[int, Sig], n_in: int, shared, cuts: set[int], copies: int = 1):
        self.body, self.xs, self.n_in, self.cuts = body, xs, n_in, cuts
        self.sh_by_id = {t.id: t for t in shared}
        self.level = {t.id: t.level for t in shared}
        self.delayed: dict[tuple[str, int, int], Sig] = {}
        self.made: dict[int, Sig] = {}
        self.copies = copies  # register groups (rtl.copies); the outputs being built read group ``group``
        self.group = 0

    def delay(self, x: Sig, frm: int, to: int) -> Sig:
        """``x`` (valid after level ``frm``) registered at every cut it crosses before level ``to``;
        each copy ``<name>_d<cut>`` (``..._d<cut>g<group>`` beyond group 0) is made once per group and
        shared by the outputs of that group."""
        base, g = x.name, self.group
        for c in sorted(self.cuts):
            if frm <= c < to and not x.const:
                if (base, c, g) not in self.delayed:
                    nm = f"{base}_d{c}" + (f"g{g}" if g else "")
                    self.delayed[(base, c, g)] = self.body.reg(nm, x, keep=self.copies > 1)
                x = self.delayed[(base, c, g)]
        return x

    def source(self, src: int, at: int) -> Sig:
        """Input field or shared term ``src`` as a signal usable by an adder at level ``at``."""
        if src < self.n_in:
            return self.delay(self.xs[src], 0, at)
        if src not in self.made:
            t, body = self.sh_by_id[src], self.body
            with body.capped(UNCAPPED):  # shared terms are exact (never wrapped)
                name = {i: (f"x{i}" if i < self.n_in else f"s{i}") for i in (t.a, t.b)}
                body.lines.append(f"    // shared term s{src} = ({name[t.a]} << {t.ka}) {'+' if t.sign_b > 0 else '-'} "
                                  f"({name[t.b]} << {t.kb}), adder level {t.level}")
                a = digit_leaf(body, f"s{src}_a", self.source(t.a, t.level), 1, t.ka)
                b = digit_leaf(body, f"s{src}_b", self.source(t.b, t.level), t.sign_b, t.kb)
                self.made[src] = add_sigs(body, f"s{src}", a, b)
        return self.delay(self.made[src], self.level[src], at)

    def node(self, j: int, node, at: int) -> Sig:
        body = self.body
        if node[0] == "d":
            src, k, sg = node[1]
            nm = f"{src}" if src < self.n_in else f"s{src}"
            return digit_leaf(body, f"n{j}_t{nm}{'n' if sg < 0 else 'p'}{k}", self.source(src, at), sg, k)
        if node[0] == "p":
            i, wv = node[1], node[2]
            x = self.xs[i]
            lo, hi = sorted((wv * x.lo, wv * x.hi))
            w = min(bits_for(lo, hi), body.cap)
            return self.delay(body.wire(f"n{j}_m{i}", w, f"{fit(x, w, body)} * {lit(wv, w)}", lo, hi), 0, at)
        if node[0] == "b":
            return const_sig(node[1])
        lv = node[3]
        a, b = self.node(j, node[1], lv), self.node(j, node[2], lv)
        body.n += 1
        return self.delay(add_sigs(body, f"n{j}_a{body.n}", a, b), lv, at)


def register_group(j: int, n_out: int, copies: int) -> int:
    """The register group (``rtl.copies``) of output ``j`` of ``n_out``: contiguous ranges of outputs."""
    return j * copies // n_out


def _share_in_groups(cols, n_in: int, cfg: RTLConfig):
    """Common-subexpression sharing (:func:`codesign.rtl.cse.share`) within each register group
    (``rtl.copies``; one group: the whole layer): no shared term is read across groups, so each group's
    adder trees read only its own registers."""
    shared, out, n = [], [], len(cols)
    for g in range(cfg.copies):
        idx = [j for j in range(n) if register_group(j, n, cfg.copies) == g]
        sh, cg = share([cols[j] for j in idx], first_id=n_in + len(shared), max_level=SHARE_DEPTH)
        shared += sh
        out += cg
    return shared, out


def linear_sums(body: Body, n_in: int, xs: dict[int, Sig], conns, biases, exact,
                cfg: RTLConfig) -> tuple[list[Sig], set[int]]:
    """Exact sums of the constant-weight terms of every output (fully parallel Dense/Conv/Add/AvgPool).

    Shift-add digits (CSD; power-of-two weights are one digit) that pairs of outputs have in common are
    computed once (:mod:`codesign.rtl.cse`, ``share``); every output is then reduced by an adder tree that
    combines its shallowest terms first. ``cfg.pipeline`` register stages are spread over the deepest
    output's adder levels; a signal consumed across a stage is registered once and shared.
    Returns the sums (true bounds) and the register cuts (adder levels followed by registers)."""
    caps = [bits_for(*exact[j]) for j in range(len(conns))]
    cols, prods = _columns(conns, caps, cfg)
    shared, cols = _share_in_groups(cols, n_in, cfg) if cfg.share else ([], cols)
    if shared:
        body.lines.append(f"    // {len(shared)} shift-add terms are shared between outputs (s<id>: codesign.rtl.cse)")
    tb = _TreeBuilder(body, xs, n_in, shared, set(), cfg.copies)
    plans, depth = _plan_trees(cols, prods, biases, tb.level)
    tb.cuts = set(spread_cuts(depth + 1, cfg.pipeline))
    sums = []
    for j, (_, _, root) in enumerate(plans):
        tb.group = register_group(j, len(plans), cfg.copies)
        with body.capped(caps[j]):
            acc = positive(body, f"n{j}_acc", tb.node(j, root, depth + 1))
        if not acc.const:
            acc = Sig(acc.name, acc.width, *exact[j])  # true range (the tree may be wrapped)
        sums.append(acc)
    return sums, tb.cuts


POPCOUNT_AUTO_FAN_IN = 256  # rtl.popcount 'auto': the popcount form from this many inputs per output up


def popcount_weight(ly: ir.Layer, xs: dict[int, Sig], conns, fs: list[int], cfg: RTLConfig) -> int | None:
    """The common weight magnitude ``c`` when the layer takes the popcount form (``rtl.popcount``): a Dense/Conv
    whose weights are all ``+-c`` (binary or ternary weights; on bipolar inputs the stored bits ``b`` of
    ``x = 2b - 1``); else None."""
    if cfg.popcount == "off" or not isinstance(ly, ir.Linear) or any(fs) or not xs:
        return None
    mags = {abs(int(w)) for terms in conns for _, w in terms}
    if len(mags) != 1:
        return None
    if cfg.popcount == "auto" and max(len(terms) for terms in conns) < POPCOUNT_AUTO_FAN_IN:
        return None
    return mags.pop()


def popcount_sums(body: Body, ly: ir.Layer, xs: dict[int, Sig], conns, biases, exact, c: int) -> list[Sig]:
    """``acc_j = c * sum_p s_p 2^p (popcount(X_p & P_j) - popcount(X_p & N_j)) + bias_j``: ``X_p`` is bit ``p``
    of every used input field (bit planes; ``s_p = -1`` for the sign bit of signed fields, else 1; one plane for
    1-bit inputs), ``P_j`` / ``N_j`` the inputs output ``j`` adds / subtracts. Exact: the result fits its
    exact-bounds width and every step is a ring operation modulo that width."""
    used = sorted(xs)
    pos = {i: k for k, i in enumerate(used)}
    n = len(used)
    fmt = ly.in_field(used[0])[1]
    planes = fmt.bits
    body.lines.append(f"    // popcount form (rtl.popcount): weights +-{c} on {n} inputs, {planes} bit plane(s)")
    body.libs.add("cs_popcount.v")
    for p in range(planes):
        bits = ", ".join(f"x{i}[{p}]" for i in reversed(used))
        body.lines.append(f"    wire [{n - 1}:0] xv{p} = {{{bits}}};")
    sums = []
    for j, terms in enumerate(conns):
        lo, hi = exact[j]
        w = bits_for(lo, hi)
        pmask = sum(1 << pos[i] for i, wt in terms if wt > 0)
        nmask = sum(1 << pos[i] for i, wt in terms if wt < 0)
        plane_terms = []
        for p in range(planes):
            parts = []
            for tag, mask in (("p", pmask), ("m", nmask)):
                if mask:
                    cw = max(bits_for(0, bin(mask).count("1")) + 1, n.bit_length())  # >= $clog2(n + 1)
                    body.lines.append(f"    wire [{cw - 1}:0] n{j}_{tag}{p};")
                    body.lines.append(f"    cs_popcount #(.N({n}), .W({cw})) u_n{j}_{tag}{p} "
                                      f"(.x(xv{p} & {lit(mask, n)}), .count(n{j}_{tag}{p}));")
                    parts.append(f"$signed({{{w}'d0, n{j}_{tag}{p}}})")
                else:
                    parts.append(f"{w}'sd0")
            diff = f"({parts[0]} - {parts[1]})"
            term = f"({diff} <<< {p})" if p else diff
            plane_terms.append(("-" if fmt.signed and p == planes - 1 else "+", term))
        total = "".join(f" {sg} {t}" for sg, t in plane_terms).lstrip(" +")
        if ispow2(c):
            k = c.bit_length() - 1
            scaled = f"(({total}) <<< {k})" if k else f"({total})"
        else:
            scaled = f"(({total}) * {w}'sd{c})"
        expr = f"{scaled} + $signed({lit(int(biases[j]), w)})" if int(biases[j]) else scaled
        body.lines.append(f"    wire signed [{w - 1}:0] n{j}_acc = {expr};")
        sums.append(Sig(f"n{j}_acc", w, lo, hi))
    return sums


def _terms(ly: ir.Layer):
    """(connections, biases, per-field shift) of a layer as the fully parallel trees compute them:
    per-channel scales divide each field's terms by its power-of-two factor (exact)."""
    if isinstance(ly, ir.Requantize):
        return [[(j, 1)] for j in range(ly.n_out)], np.zeros(ly.n_out, dtype=np.int64), [0] * ly.n_out
    conns = ly.connections()
    if isinstance(ly, ir.MaxPool):
        return conns, np.zeros(ly.n_out, dtype=np.int64), [0] * ly.n_out
    biases = ly.bias_vector()
    fs = [0] * ly.n_out
    if ly.field_shift is not None and (ly.requant is not None or ly.field_out):
        fs = [int(t) for t in ly.field_shift]
        for j, t in enumerate(fs):
            if t:
                assert all(w % (1 << t) == 0 for _, w in conns[j]) and biases[j] % (1 << t) == 0, (ly.name, j)
        conns = [[(i, w >> t) for i, w in terms] for terms, t in zip(conns, fs, strict=True)]
        biases = np.array([int(b) >> t for b, t in zip(biases, fs, strict=True)], dtype=np.int64)
    return conns, biases, fs


def requant_stages(ly: ir.Layer, cfg: RTLConfig, cuts: set[int]) -> int:
    """Register stages inside the requantizer (0-2): the ``pipeline`` stages the adder tree could not
    take (``pipeline`` beyond one register per adder level), for a fixed-point ``Requant`` only."""
    if not isinstance(ly, ir.AccLayer) or not isinstance(ly.requant, Requant):
        return 0
    return max(0, min(REQUANT_STAGES, cfg.pipeline - len(cuts)))


def _outputs(body: Body, ly: ir.Layer, accs: list[Sig], fs: list[int], rq_stages: int = 0) -> list[str]:
    """The output field wires ``q<j>``: maxpool results as they are, else requantized (``rq_stages``
    registers inside each requantizer)."""
    ob = ly.out_fmt.bits
    outs = []
    chans = ly.field_channels() if isinstance(requant_of(ly), Thresholds | MulShift) else None
    for j, acc in enumerate(accs):
        qn = f"q{j}"
        if isinstance(ly, ir.MaxPool):
            if acc.const:
                body.lines.append(f"    wire [{ob - 1}:0] {qn} = {lit(acc.lo, ob)};")
            elif acc.width == ob:
                body.lines.append(f"    wire [{ob - 1}:0] {qn} = {acc.name};")
            else:  # unsigned fields were widened by one zero bit
                body.lines.append(f"    wire [{ob - 1}:0] {qn} = {acc.name}[{ob - 1}:0];")
                body.lines.append(f"    wire _unused_{qn} = {acc.name}[{acc.width - 1}];")
        else:
            rq = ly.requant
            if fs[j] and rq is not None and not ly.field_out:
                rq = Requant(rq.shift - fs[j], rq.rounding, rq.relu, rq.out)
            requant_inst(body, rq, ob, f"n{j}", acc, qn, int(chans[j]) if chans is not None else 0, rq_stages)
        outs.append(qn)
    return outs


def emit_parallel(ly: ir.Layer, cfg: RTLConfig) -> LayerModule:
    """Fully parallel module of an accumulator layer, a maxpool or an elementwise requantization."""
    body = Body(en=None if cfg.flow_control == "credit" else "en")
    rq_stages = 0
    conns, biases, fs = _terms(ly)
    used = sorted({i for terms in conns for i, _ in terms})
    xs = {i: in_sig(ly, i) for i in used}
    for i in used:  # name the input fields
        s = xs[i]
        body.lines.append(f"    wire signed [{s.width - 1}:0] x{i} = {s.name};")
        xs[i] = Sig(f"x{i}", s.width, s.lo, s.hi)
    exact = ly.acc_bounds() if isinstance(ly, ir.AccLayer) else None
    if exact is not None and any(fs):
        exact = [(lo >> t, hi >> t) for (lo, hi), t in zip(exact, fs, strict=True)]
    if isinstance(ly, ir.MaxPool | ir.Requantize):  # max / pass-through: level-synchronous trees
        all_leaves = [[xs[i] for i, _ in terms] for terms in conns] if isinstance(ly, ir.MaxPool) else \
            [[xs[j]] for j in range(ly.n_out)]
        depth = max((tree_depth(len(lv)) for lv in all_leaves), default=0)
        cuts = set(spread_cuts(depth + 1, cfg.pipeline))
        op = max_sigs if isinstance(ly, ir.MaxPool) else add_sigs
        accs = [positive(body, f"n{j}_acc", tree(body, f"n{j}", lv, depth, cuts, op=op))
                for j, lv in enumerate(all_leaves)]
        if exact is not None:
            accs = [a if a.const else Sig(a.name, a.width, *exact[j]) for j, a in enumerate(accs)]
    elif (c := popcount_weight(ly, xs, conns, fs, cfg)) is not None:
        accs, cuts = popcount_sums(body, ly, xs, conns, biases, exact, c), set()
    else:
        accs, cuts = linear_sums(body, ly.n_in, xs, conns, biases, exact, cfg)
        rq_stages = requant_stages(ly, cfg, cuts)
    outs = _outputs(body, ly, accs, fs, rq_stages)
    stages = len(cuts) + rq_stages + 1
    return LayerModule(ly.name, _parallel_text(ly, cfg, body, used, outs, stages), stages, 1, frozenset(body.libs))


def _parallel_text(ly: ir.Layer, cfg: RTLConfig, body: Body, used: list[int], outs: list[str], stages: int) -> str:
    ob = ly.out_fmt.bits
    v = [header(ly, f"fully parallel (latency strategy), multiplier={cfg.multiplier}, "
                    f"{stages - 1} tree register stage(s) + output register: latency {stages}, II 1"),
         ports(ly)]
    credit = cfg.flow_control == "credit"
    if credit:
        v.append("    // valid-only pipeline (flow_control 'credit'): the datapath advances every cycle;\n"
                 "    // the top level's credit counter and output FIFO (cs_credit_fifo) absorb backpressure\n"
                 "    assign in_ready = 1'b1;\n    wire _unused_out_ready = out_ready;\n")
    else:
        v.append("    wire en = !out_valid || out_ready;   // the pipeline advances\n    assign in_ready = en;\n")
    adv = "" if credit else "if (en) "
    v.append(f"    reg [{stages - 1}:0] vld;\n    always @(posedge clk)\n        if (rst) vld <= {stages}'b0;\n")
    if stages == 1:
        v.append(f"        else {adv}vld <= in_valid;\n")
    else:
        v.append(f"        else {adv}vld <= {{vld[{stages - 2}:0], in_valid}};\n")
    v.append(f"    assign out_valid = vld[{stages - 1}];\n")
    v.append(unused_inputs(ly, set(used)))
    v.append("\n".join(body.lines) + "\n")
    v.append(unused_sliced(body))
    v.append(f"    reg [{ly.n_out * ob - 1}:0] out_r;\n    always @(posedge clk)\n        {adv}begin\n")
    for j, q in enumerate(outs):
        v.append(f"            out_r[{j * ob + ob - 1}:{j * ob}] <= {q};\n")
    v.append("        end\n    assign out_data = out_r;\nendmodule\n")
    return "".join(v)
