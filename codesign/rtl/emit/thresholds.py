"""Threshold requantizers (:class:`~codesign.rtl.formats.Thresholds`) and their multiply-shift form
(:class:`~codesign.rtl.formats.MulShift`) in Verilog.

A field's code is ``base + dir * #{k : acc >= t_k}``. Fully parallel: one comparator per threshold that
the field's exact accumulator range can reach (thresholds at or below the range fold into the base,
those above it are dropped), their count added to (or, for a decreasing channel, subtracted from) the
base. Folded: the lane's field changes with the step, so the thresholds, base and direction of the
field's channel come from case ROMs addressed by the group tag that travels with the datapath.
"""

from __future__ import annotations

from codesign.rtl.emit.netlist import Body, Sig, add_sigs, const_sig, csd, fit, lit, positive
from codesign.rtl.formats import MulShift, Thresholds, bits_for


def _count(names: list[str], cw: int) -> str:
    """Sum of 1-bit signals as a ``cw``-bit expression."""
    if cw == 1:
        return " + ".join(names)
    return " + ".join(f"{{{cw - 1}'d0, {n}}}" for n in names)


def thresholds_parallel(body: Body, th: Thresholds, ob: int, prefix: str, acc: Sig, qname: str, channel: int) -> None:
    """Code of one output field (channel ``channel``) from its accumulator ``acc`` (exact bounds)."""
    base, ts = th.field(channel, acc.lo, acc.hi)
    d = th.dir[channel]
    mask = (1 << ob) - 1
    if acc.const or not ts:
        body.lines.append(f"    wire [{ob - 1}:0] {qname} = {lit(base & mask, ob)};   // constant over the "
                          "accumulator's range")
        return
    w = acc.width
    cw = max(1, len(ts).bit_length())
    cmps = [f"{prefix}_ge{k}" for k in range(len(ts))]
    body.lines.append(f"    // thresholds of channel {channel}: code = {base} {'+' if d > 0 else '-'} #(acc >= t), "
                      f"t = {ts}")
    for nm, t in zip(cmps, ts, strict=True):
        body.lines.append(f"    wire {nm} = {acc.name} >= $signed({lit(t, w)});")
    op = "+" if d > 0 else "-"
    body.lines.append(f"    wire [{cw - 1}:0] {prefix}_cnt = {_count(cmps, cw)};")
    body.lines.append(f"    wire [{ob - 1}:0] {qname} = {lit(base & mask, ob)} {op} {prefix}_cnt;")


def thresholds_folded(body: Body, th: Thresholds, ob: int, prefix: str, acc: Sig, qname: str,
                      channels: list[int], sel: str, sel_w: int) -> None:
    """Code of a lane whose field (channel ``channels[g]`` in group ``g``) changes with the group tag ``sel``."""
    if len(set(channels)) == 1:
        thresholds_parallel(body, th, ob, prefix, acc, qname, channels[0])
        return
    w = max(acc.width, bits_for(acc.lo, acc.hi + 1))  # room for a "never" threshold above the range
    never = acc.hi + 1
    levels = max(len(th.t[c]) for c in channels)
    mask = (1 << ob) - 1

    def rom(nm: str, width: int, values: list[int], what: str, signed: bool) -> str:
        kind = "signed " if signed else ""
        body.lines.append(f"    reg {kind}[{width - 1}:0] {nm};   // {what}, by group")
        body.lines.append(f"    always @(*) begin\n        case ({sel})")
        for g, v in enumerate(values):
            body.lines.append(f"            {sel_w}'d{g}: {nm} = {lit(v, width)};")
        body.lines.append(f"            default: {nm} = {lit(values[0], width)};\n        endcase\n    end")
        return nm

    accx = f"{prefix}_accx"
    body.lines.append(f"    wire signed [{w - 1}:0] {accx} = {acc.ext(w)};")
    cmps = []
    for k in range(levels):
        vals = [th.t[c][k] if k < len(th.t[c]) else never for c in channels]
        t = rom(f"{prefix}_t{k}", w, [max(min(v, never), acc.lo) for v in vals], f"threshold {k}", True)
        cmps.append(f"{prefix}_ge{k}")
        body.lines.append(f"    wire {cmps[-1]} = {accx} >= {t};")
    base = rom(f"{prefix}_base", ob, [th.base[c] & mask for c in channels], "code below every threshold", False)
    dirn = rom(f"{prefix}_dec", 1, [int(th.dir[c] < 0) for c in channels], "decreasing channel", False)
    cw = max(1, levels.bit_length())
    body.lines.append(f"    wire [{cw - 1}:0] {prefix}_cnt = {_count(cmps, cw) if cmps else f'{cw}' + chr(39) + 'd0'};")
    body.lines.append(f"    wire [{ob - 1}:0] {qname} = {dirn} ? {base} - {prefix}_cnt : {base} + {prefix}_cnt;")


def mulshift_parallel(body: Body, ms: MulShift, ob: int, prefix: str, acc: Sig, qname: str, channel: int) -> None:
    """``clip((acc * m + b) >> shift)`` for one field: ``acc * m`` as canonical-signed-digit shift-adds."""
    m, b, s = ms.m[channel], ms.b[channel], ms.shift
    clo, chi = ms.clip[channel]
    mask = (1 << ob) - 1
    if acc.const or m == 0:
        v = min(max((acc.lo * m + b) >> s, clo), chi)
        body.lines.append(f"    wire [{ob - 1}:0] {qname} = {lit(v & mask, ob)};")
        return
    lo, hi = sorted((acc.lo * m, acc.hi * m))
    w = bits_for(lo + b, hi + b)
    body.lines.append(f"    // multiply-shift of channel {channel}: clip((acc * {m} + {b}) >>> {s}, {clo}, {chi})")
    total = const_sig(b)
    with body.capped(w):  # modulo 2^w: the exact result fits, so every wrapped partial sum is fine
        for k, (sg, sh) in enumerate(csd(m)):
            slo, shi = sorted((sg * (acc.lo << sh), sg * (acc.hi << sh)))
            term = body.wire(f"{prefix}_d{k}", w, f"{'-' if sg < 0 else ''}({fit(acc, w, body)} <<< {sh})", slo, shi)
            total = add_sigs(body, f"{prefix}_s{k}", total, term)
        total = positive(body, f"{prefix}_sum", total)
    rw = max(w - s, 1)
    r = f"{prefix}_r"
    body.lines.append(f"    wire signed [{rw - 1}:0] {r} = {fit(total, w, body)}[{w - 1}:{min(s, w - 1)}];")
    cw = max(rw, bits_for(clo, chi), ob)  # at least the output width: rx[ob-1:0] sign-extends a narrow result
    rx = f"{prefix}_rx"
    body.lines.append(f"    wire signed [{cw - 1}:0] {rx} = {Sig(r, rw, 0, 0).ext(cw)};")
    body.lines.append(f"    wire [{ob - 1}:0] {qname} = ({rx} < $signed({lit(clo, cw)})) ? {lit(clo & mask, ob)} : "
                      f"({rx} > $signed({lit(chi, cw)})) ? {lit(chi & mask, ob)} : {rx}[{ob - 1}:0];")
