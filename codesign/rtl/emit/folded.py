"""``resource`` architecture: folded (time-multiplexed) linear layer modules, reuse factor R.

A linear layer computes ``lanes = ceil(n_out / R)`` output fields per cycle over ``groups =
ceil(n_out / lanes)`` output groups. When ``R > n_out`` it also folds over the inputs (input-serial): one
field per group, its terms spread over ``chunks = min(R // n_out, n_terms)`` cycles with ``K =
ceil(n_terms / chunks)`` MAC slots and an accumulator. ``steps = groups * chunks <= R`` = II. Weights and
biases come from case-statement ROMs addressed by the step counter; a term slot whose input index
changes with the step gets a multiplexer (keyed by the chunk counter when that suffices); a slot whose
weight is zero in every step is removed. ``pipeline`` stages: operand register (ROMs and multiplexers),
product register, then adder-tree levels; control tags travel alongside the datapath and the layer
stalls only when a finished vector meets a full output register. Latency = steps + stages + 1.
``timing_regs`` (slow fabrics): operand register twice, the requantizer reads a register (input-serial: the
accumulator), and a registered last-step flag ``at_last``.

:func:`fold_plan` and :func:`slot_table` plan (pure data); the ``_print_*`` functions print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from codesign.config import RTLConfig
from codesign.rtl import ir
from codesign.rtl.emit.module import (
    LayerModule,
    header,
    in_sig,
    ports,
    requant_inst,
    unused_inputs,
    unused_sliced,
)
from codesign.rtl.emit.netlist import (
    UNCAPPED,
    Body,
    Sig,
    const_sig,
    fit,
    lit,
    positive,
    spread_cuts,
    tree,
    tree_depth,
)
from codesign.rtl.emit.thresholds import thresholds_folded
from codesign.rtl.formats import FixedFormat, Requant, Thresholds, bits_for


@dataclass(frozen=True)
class FoldPlan:
    lanes: int
    groups: int
    chunks: int
    kslots: int | None  # term slots per chunk (None: all of a field's terms)
    cols: list[int] | None  # dense input-serial: the input column order

    @property
    def steps(self) -> int:
        return self.groups * self.chunks


def fold_plan(ly: ir.Linear, conns, reuse: int) -> FoldPlan:
    """Lanes, groups, chunks, slots per chunk and (dense, input-serial) the input column order."""
    n_out = ly.n_out
    nterm = max((len(c) for c in conns), default=0)
    if reuse <= n_out or nterm <= 1:
        lanes = max(1, math.ceil(n_out / reuse))
        return FoldPlan(lanes, math.ceil(n_out / lanes), 1, None, None)
    # input-serial: one output field per group, its terms spread over `chunks` cycles
    cols = None
    if isinstance(ly, ir.Dense):  # column order: slot k of chunk c reads input cols[c*K+k] for every output
        cols = sorted({i for c in conns for i, _ in c})
        nterm = len(cols)
    chunks = max(1, min(reuse // n_out, nterm))
    k = math.ceil(nterm / chunks)
    chunks = math.ceil(nterm / k)
    return FoldPlan(1, n_out, chunks, k, cols)


def slot_table(conns, n_out: int, p: FoldPlan) -> list[list[list]]:
    """``ent[lane][k][t]``: the ``(input, weight)`` of term slot ``k`` of ``lane`` at step ``t`` (or None),
    ``t = group * chunks + chunk``."""
    def neuron_terms(j: int) -> list:
        if p.cols is not None:
            wcol = {i: wv for i, wv in conns[j]}
            return [(i, wcol.get(i, 0)) for i in p.cols]
        return sorted(conns[j])

    slot_ent = []
    for lane in range(p.lanes):
        per_t = []
        for g in range(p.groups):
            j = g * p.lanes + lane
            terms = neuron_terms(j) if j < n_out else []
            for c in range(p.chunks):
                per_t.append(terms[c * p.kslots:(c + 1) * p.kslots] if p.kslots else terms)
        n_slots = max((len(r) for r in per_t), default=0)
        slot_ent.append([[(r[k] if k < len(r) else None) for r in per_t] for k in range(n_slots)])
    return slot_ent


class _FoldedBody:
    """The datapath under construction: named input fields, operand registers, ROMs."""

    def __init__(self, ly: ir.Linear, cfg: RTLConfig, p: FoldPlan):
        self.ly, self.cfg, self.p = ly, cfg, p
        self.body = Body()
        self.opreg = cfg.pipeline >= 1  # register stage after the ROMs / input multiplexers
        self.cw = max(1, (p.steps - 1).bit_length())
        self.kw = max(1, (p.chunks - 1).bit_length())
        self.gw = max(1, (p.groups - 1).bit_length())
        self.used_inputs: set[int] = set()
        self.x_names: dict[int, Sig] = {}

    def xsig(self, i: int) -> Sig:
        if i not in self.x_names:
            s = in_sig(self.ly, i, "xin")
            self.body.lines.append(f"    wire signed [{s.width - 1}:0] x{i} = {s.name};")
            self.x_names[i] = Sig(f"x{i}", s.width, s.lo, s.hi)
        self.used_inputs.add(i)
        return self.x_names[i]

    def opr(self, nm: str, width: int, signed: bool = True) -> str:
        """Operand register stage: ``nm`` is the (registered) value of ``nm_c``."""
        kind = "signed " if signed else ""
        if self.opreg and self.cfg.timing_regs:  # twice: a fabric register, then the multiplier's input register
            self.body.lines.append(f"    reg {kind}[{width - 1}:0] {nm}_q, {nm};\n"
                                   f"    always @(posedge clk) if (en) begin {nm}_q <= {nm}_c; {nm} <= {nm}_q; end")
        elif self.opreg:
            self.body.lines.append(f"    reg {kind}[{width - 1}:0] {nm};\n"
                                   f"    always @(posedge clk) if (en) {nm} <= {nm}_c;")
        else:
            self.body.lines.append(f"    wire {kind}[{width - 1}:0] {nm} = {nm}_c;")
        return nm

    def rom(self, nm: str, width: int, values: list[int], what: str) -> str:
        kind = "signed " if width > 1 else ""
        lines = self.body.lines
        lines.append(f"    reg {kind}[{width - 1}:0] {nm}_c;   // {what}")
        lines.append("    always @(*) begin\n        case (step)")
        for t, v in enumerate(values):
            lines.append(f"            {self.cw}'d{t}: {nm}_c = {lit(v, width)};")
        lines.append(f"            default: {nm}_c = {lit(0, width)};\n        endcase\n    end")
        return self.opr(nm, width, width > 1)

    def pot_slot(self, pre: str, xs: Sig, ws: list[int], w: int, lo: int, hi: int, corr: list[int]) -> Sig:
        """Power-of-two product from (zero, sign, exponent) ROMs: ``x <<< e``, negated as ``~(x <<< e)``
        with the missing +1 added to ``corr[step]`` (folded into the lane's bias ROM: no negators)."""
        body = self.body
        exps = [abs(v).bit_length() - 1 if v else 0 for v in ws]
        emin = min(e for e, v in zip(exps, ws, strict=True) if v)
        rel = [e - emin if v else 0 for e, v in zip(exps, ws, strict=True)]
        ew = max(1, max(rel).bit_length())
        base = fit(xs, w, body) if emin == 0 else f"{{{fit(xs, w - emin, body)}, {emin}'b0}}"
        sh = f"({base} <<< {self.rom(f'{pre}_e', ew, rel, 'exponent ROM')})" if max(rel) > 0 else base
        expr = sh
        if any(v < 0 for v in ws):
            if all(v <= 0 for v in ws):
                expr = f"~{sh}"
            else:
                sn = self.rom(f"{pre}_n", 1, [int(v < 0) for v in ws], "sign ROM")
                expr = f"({sh} ^ {{{w}{{{sn}}}}})"
            for t, v in enumerate(ws):
                corr[t] += int(v < 0)  # -p = ~p + 1
        if any(v == 0 for v in ws):
            zn = self.rom(f"{pre}_z", 1, [int(v == 0) for v in ws], "zero ROM")
            expr = f"({zn} ? {lit(0, w)} : {expr})"
        return body.wire(f"{pre}_p", w, expr, lo - 1, hi)  # ~p = -p - 1

    def slot_input(self, lane: int, k: int, entries: list) -> str:
        """The operand wire of term slot ``k`` (a multiplexer when its input changes with the step)."""
        p, body = self.p, self.body
        xw = self.ly.in_fmt.bits + (0 if self.ly.in_fmt.signed else 1)
        idxs = sorted({e[0] for e in entries if e and e[1] != 0})
        nm = f"l{lane}_s{k}_x"
        for i in idxs:
            self.xsig(i)
        if len(idxs) == 1:
            body.lines.append(f"    wire signed [{xw - 1}:0] {nm}_c = x{idxs[0]};")
        else:
            by_c: dict[int, int] = {}
            ok = True
            for t, e in enumerate(entries):
                if e and e[1] != 0:
                    ok &= by_c.setdefault(t % p.chunks, e[0]) == e[0]
            sel, n_sel, sw = ("chk", p.chunks, self.kw) if ok and p.chunks > 1 else ("step", p.steps, self.cw)
            table = by_c if sel == "chk" else {t: e[0] for t, e in enumerate(entries) if e and e[1] != 0}
            body.lines.append(f"    reg signed [{xw - 1}:0] {nm}_c;")
            body.lines.append(f"    always @(*) begin\n        case ({sel})\n" + "".join(
                f"            {sw}'d{t}: {nm}_c = x{table[t]};\n" for t in range(n_sel) if t in table)
                + f"            default: {nm}_c = {lit(0, xw)};\n        endcase\n    end")
        return self.opr(nm, xw)

    def lane_leaves(self, lane: int, slots: list, biases, exact) -> tuple[list[Sig], int, int]:
        """The products (and bias) one lane adds per step, and the lane's exact accumulator range."""
        ly, p, body = self.ly, self.p, self.body
        n_out = ly.n_out
        xw = ly.in_fmt.bits + (0 if ly.in_fmt.signed else 1)
        xlo, xhi = ly.in_fmt.lo, ly.in_fmt.hi
        pot_shift = ly.pot and self.cfg.multiplier == "shiftadd"
        lane_b = [exact[g * p.lanes + lane] for g in range(p.groups) if g * p.lanes + lane < n_out]
        lane_lo, lane_hi = min(b[0] for b in lane_b), max(b[1] for b in lane_b)
        corr = [0] * p.steps  # +1 per negated power-of-two product, per step
        leaves = []
        for k, entries in enumerate(slots):
            ws = [e[1] if e else 0 for e in entries]
            if all(w == 0 for w in ws):
                continue
            xs = Sig(self.slot_input(lane, k, entries), xw, xlo, xhi)
            wlo, whi = min(ws), max(ws)
            cands = [a * b for a in (xlo, xhi) for b in (wlo, whi)] + [0]
            plo, phi = min(cands), max(cands)
            w_p = min(bits_for(plo, phi), body.cap)
            if pot_shift:  # a negated product is ~p = -p - 1: its wire must hold plo - 1 too
                w_n = min(bits_for(plo - 1, phi), body.cap) if wlo < 0 else w_p
                leaves.append(self.pot_slot(f"l{lane}_s{k}", xs, ws, w_n, plo, phi, corr))
                continue
            pw = bits_for(wlo, whi)
            wn = self.rom(f"l{lane}_s{k}_w", pw, ws, "weight ROM")
            leaves.append(body.wire(f"l{lane}_s{k}_p", w_p,
                                    f"{fit(xs, w_p, body)} * {fit(Sig(wn, pw, wlo, whi), w_p, body)}", plo, phi))
        bs = []
        for g in range(p.groups):
            j = g * p.lanes + lane
            for c in range(p.chunks):
                bs.append((int(biases[j]) if (j < n_out and c == 0) else 0) + corr[g * p.chunks + c])
        if any(b != 0 for b in bs):
            if len(set(bs)) == 1:
                leaves.append(const_sig(bs[0]))
            else:
                bw = bits_for(min(bs), max(bs))
                leaves.append(Sig(self.rom(f"l{lane}_b", bw, bs, "bias ROM"), bw, min(bs), max(bs)))
        return leaves, lane_lo, lane_hi


def _result_format(ly: ir.Linear) -> tuple[int, Requant | None]:
    """(lane result width, requantizer): ``field_out`` layers keep the aligned accumulator (a bare relu
    at most) and cut every field out of it at its own scale."""
    if not ly.field_out:
        return ly.out_fmt.bits, ly.requant
    bnd = ly.acc_bounds()
    alo, ahi = min(b[0] for b in bnd), max(b[1] for b in bnd)
    if ly.requant is None:
        return bits_for(alo, ahi), None
    qf = FixedFormat(max(bits_for(0, max(ahi, 0)) - 1, 1), False, ly.acc_fmt.scale_exp)  # a bare relu
    return qf.bits, Requant(0, "FLOOR", True, qf)


def emit_folded(ly: ir.Linear, cfg: RTLConfig) -> LayerModule:
    """Time-multiplexed, pipelined linear layer."""
    conns = ly.connections()
    p = fold_plan(ly, conns, cfg.reuse)
    fb = _FoldedBody(ly, cfg, p)
    body = fb.body
    qb, q_rq = _result_format(ly)
    exact = ly.acc_bounds()
    biases = ly.bias_vector()
    lanes, caps = [], []
    for lane, slots in enumerate(slot_table(conns, ly.n_out, p)):
        lane_b = [exact[g * p.lanes + lane] for g in range(p.groups) if g * p.lanes + lane < ly.n_out]
        cap = bits_for(min(b[0] for b in lane_b), max(b[1] for b in lane_b))
        with body.capped(cap):
            lanes.append(fb.lane_leaves(lane, slots, biases, exact))
        caps.append(cap)
    # register stages: operand register, products (level 0), adder-tree levels
    depth = max((tree_depth(len(lv)) for lv, _, _ in lanes), default=0)
    cuts: set[int] = set()
    if cfg.pipeline >= 2:
        cuts.add(0)
        cuts |= {c + 1 for c in spread_cuts(depth, cfg.pipeline - 2)}
    n_stages = int(fb.opreg) * (1 + int(cfg.timing_regs)) + len(cuts) + int(cfg.timing_regs)
    lane_q = []
    chans = ly.field_channels()
    for lane, (leaves, lane_lo, lane_hi) in enumerate(lanes):
        with body.capped(caps[lane]):
            acc = _lane_sum(body, lane, leaves, depth, cuts, caps[lane], lane_lo, lane_hi, p.chunks, cfg.timing_regs)
        if isinstance(q_rq, Thresholds):  # the lane's field (and channel) changes with the group
            js = [min(g * p.lanes + lane, ly.n_out - 1) for g in range(p.groups)]
            thresholds_folded(body, q_rq, qb, f"l{lane}", acc, f"q{lane}", [int(chans[j]) for j in js], "e_grp",
                              fb.gw)
        else:
            requant_inst(body, q_rq, qb, f"l{lane}", acc, f"q{lane}")
        lane_q.append(f"q{lane}")
    assert body.cap == UNCAPPED
    lat = p.steps + n_stages + 1  # input latch + steps + register stages (the last writes the output register)
    text = _print_folded(ly, cfg, fb, p, n_stages, len(cuts), lat, lane_q, qb)
    return LayerModule(ly.name, text, lat, p.steps, frozenset(body.libs))


def _lane_sum(body: Body, lane: int, leaves: list[Sig], depth: int, cuts: set[int], cap: int, lo: int, hi: int,
              chunks: int, timing_regs: bool = False) -> Sig:
    """The lane's adder tree, plus the accumulator over the chunks of one output field when input-serial
    (modulo 2^cap: exact at the end). ``timing_regs``: the requantizer reads a register one stage later
    (the accumulator itself, written under the ``a_*`` tags of the stage before the result stage ``e_*``)."""
    s = positive(body, f"l{lane}_sum", tree(body, f"l{lane}", leaves, depth, cuts))
    if chunks > 1:
        t = "a" if timing_regs else "e"
        body.lines.append(f"    reg signed [{cap - 1}:0] l{lane}_acc;\n"
                          f"    wire signed [{cap - 1}:0] l{lane}_tot = ({t}_first ? {lit(0, cap)} : l{lane}_acc) + "
                          f"{fit(s, cap, body)};\n"
                          f"    always @(posedge clk) if (en && {t}_v) l{lane}_acc <= l{lane}_tot;")
        return Sig(f"l{lane}_acc" if timing_regs else f"l{lane}_tot", cap, lo, hi)
    if timing_regs:
        s = body.reg(f"l{lane}_res", s)
    return s if s.const else Sig(s.name, s.width, lo, hi)


def _tags(p: FoldPlan, cw: int, kw: int, gw: int, timing_regs: bool = False) -> list[tuple[str, int, str, bool, bool]]:
    """Control tags that travel with the datapath: (name, width, source, is the valid bit, ends one stage early).
    With ``timing_regs`` the accumulator's first-chunk flag is ``a_first``, one stage before the result stage."""
    tags = [("e_v", 1, "busy", True, False), ("e_final", 1, f"(step == {cw}'d{p.steps - 1})", False, False)]
    if p.chunks > 1:
        first = ("a_first", 1, f"(chk == {kw}'d0)", False, True) if timing_regs else \
            ("e_first", 1, f"(chk == {kw}'d0)", False, False)
        tags += [first, ("e_lastc", 1, f"(chk == {kw}'d{p.chunks - 1})", False, False)]
    if p.groups > 1:
        tags.append(("e_grp", gw, "grp" if p.chunks > 1 else "step", False, False))
    return tags


def _print_control(ly: ir.Linear, p: FoldPlan, fb: _FoldedBody, tags, n_stages: int) -> list[str]:
    """Step counter, input latch, handshake and the tag pipeline (with ``timing_regs`` and an accumulator, also
    the accumulator stage's ``a_v``/``a_first``: one stage before ``e_*``)."""
    cw, kw, gw = fb.cw, fb.kw, fb.gw
    v = [f"""    // {p.steps} step(s) per vector; the datapath is a {n_stages}-stage pipeline behind the step counter
    reg busy;
    reg [{cw - 1}:0] step;
    reg [{ly.n_in * ly.in_fmt.bits - 1}:0] xin;                 // latched input vector
    reg out_v;
    reg [{ly.n_out * ly.out_fmt.bits - 1}:0] out_r;
"""]
    if p.chunks > 1:
        v.append(f"    reg [{kw - 1}:0] chk;\n" + (f"    reg [{gw - 1}:0] grp;\n" if p.groups > 1 else ""))
    for nm, w, *_ in tags:
        v.append(f"    wire {'' if w == 1 else f'[{w - 1}:0] '}{nm};\n")
    rl = fb.cfg.timing_regs  # the last-step flag is a register (no step comparator on the ready path)
    at_last = f"1'b{int(p.steps == 1)}"
    if rl:
        v.append(f"    reg at_last;   // step == {p.steps - 1}, set one step ahead\n")
    v.append(f"""    wire stall = e_v && e_final && out_v && !out_ready;   // finished vector, output register full
    wire en = !stall;
    wire last = busy && {'at_last' if rl else f"(step == {cw}'d{p.steps - 1})"};
    assign in_ready = en && (!busy || last);
    assign out_valid = out_v;
    assign out_data = out_r;
    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0;
            step <= {cw}'d0;
            out_v <= 1'b0;
""")
    if rl:
        v.append(f"            at_last <= {at_last};\n")
    counters = (f"chk <= {kw}'d0;\n", f"grp <= {gw}'d0;\n")
    if p.chunks > 1:
        v.append("            " + counters[0] + (("            " + counters[1]) if p.groups > 1 else ""))
    v.append("""        end else begin
            if (out_v && out_ready) out_v <= 1'b0;
            if (en && e_v && e_final) out_v <= 1'b1;
            if (en) begin
                if (in_valid && in_ready) begin
                    busy <= 1'b1;
""")
    v.append(f"                    step <= {cw}'d0;\n")
    if rl:
        v.append(f"                    at_last <= {at_last};\n")
    if p.chunks > 1:
        second = ("                    " + counters[1]) if p.groups > 1 else ""
        v.append("                    " + counters[0] + second)
    v.append("""                end else if (last) begin
                    busy <= 1'b0;
                end else if (busy) begin
""")
    v.append(f"                    step <= step + {cw}'d1;\n")
    if rl and p.steps > 1:
        v.append(f"                    at_last <= (step == {cw}'d{p.steps - 2});\n")
    if p.chunks > 1:
        v.append(f"                    if (chk == {kw}'d{p.chunks - 1}) begin\n"
                 f"                        chk <= {kw}'d0;\n"
                 + (f"                        grp <= grp + {gw}'d1;\n" if p.groups > 1 else "")
                 + f"                    end else chk <= chk + {kw}'d1;\n")
    v.append("""                end
            end
        end
    end
    always @(posedge clk)
        if (in_valid && in_ready) xin <= in_data;
""")
    for nm, w, src, is_valid, early in tags:  # tag pipeline (valid, last step, chunk flags, group index)
        depth = n_stages - int(early)
        if depth == 0:
            v.append(f"    assign {nm} = {src};\n")
            continue
        decl = "" if w == 1 else f"[{w - 1}:0] "
        for st in range(depth):
            prev = src if st == 0 else f"{nm}_d{st - 1}"
            v.append(f"    reg {decl}{nm}_d{st};\n")
            if is_valid:
                v.append(f"    always @(posedge clk) if (rst) {nm}_d{st} <= 1'b0; else if (en) {nm}_d{st} <= {prev};\n")
            else:
                v.append(f"    always @(posedge clk) if (en) {nm}_d{st} <= {prev};\n")
        v.append(f"    assign {nm} = {nm}_d{depth - 1};\n")
    if fb.cfg.timing_regs and p.chunks > 1:  # the accumulator's valid: one stage before the result stage
        v.append(f"    wire a_v = {'busy' if n_stages < 2 else f'e_v_d{n_stages - 2}'};\n")
    return v


def _print_results(ly: ir.Linear, p: FoldPlan, gw: int, lane_q: list[str], qb: int) -> list[str]:
    """Lane results into the output register (finished groups wait in ``res``)."""
    ob, n_out = ly.out_fmt.bits, ly.n_out
    lane_cat = "{" + ", ".join(reversed(lane_q)) + "}"
    v = [f"    wire [{p.lanes * qb - 1}:0] lanes_q = {lane_cat};\n"]
    wr = "en && e_v" + (" && e_lastc" if p.chunks > 1 else "")
    total = p.groups * p.lanes * qb
    if p.groups > 1:
        v.append(f"    reg [{(p.groups - 1) * p.lanes * qb - 1}:0] res;            // results of finished groups\n")
        v.append(f"    always @(posedge clk)\n        if ({wr}) begin\n            case (e_grp)\n")
        for g in range(p.groups - 1):
            v.append(f"                {gw}'d{g}: res[{(g + 1) * p.lanes * qb - 1}:{g * p.lanes * qb}] <= lanes_q;\n")
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
    if p.chunks > 1:
        v.append("    wire _unused_lastc = e_lastc;\n" if p.groups == 1 else "")
    return v


def _print_folded(ly: ir.Linear, cfg: RTLConfig, fb: _FoldedBody, p: FoldPlan, n_stages: int, n_cuts: int, lat: int,
                  lane_q: list[str], qb: int) -> str:
    pot_shift = ly.pot and cfg.multiplier == "shiftadd"
    mode = (f"input-serial: {p.chunks} chunk(s) x {p.kslots} term slot(s) per output field, accumulator"
            if p.chunks > 1 else f"{p.lanes} lane(s) x {p.steps} step(s)")
    v = [header(ly, f"folded (resource strategy), reuse {cfg.reuse}: {mode}; {p.steps} step(s); "
                    f"weights in a case ROM, {'barrel shift (power-of-two weights)' if pot_shift else 'multiplier *'}; "
                    f"{n_stages} register stage(s) (operands {int(fb.opreg) * (1 + int(cfg.timing_regs))}, "
                    f"tree {n_cuts}"
                    f"{', result 1' if cfg.timing_regs else ''}); "
                    f"latency {lat}, II {p.steps}"),
         ports(ly)]
    v += _print_control(ly, p, fb, _tags(p, fb.cw, fb.kw, fb.gw, cfg.timing_regs), n_stages)
    v.append("\n".join(fb.body.lines) + "\n")
    v += _print_results(ly, p, fb.gw, lane_q, qb)
    v.append(unused_inputs(ly, fb.used_inputs, "xin"))
    v.append(unused_sliced(fb.body))
    v.append("endmodule\n")
    return "".join(v)
