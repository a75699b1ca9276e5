"""Netlist primitives of the Verilog emitter: signals with exact bounds, the module body that collects
declarations, and the adder / max trees every layer architecture is built from."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from codesign.rtl.formats import bits_for

UNCAPPED = 1 << 30


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


def fit(x: Sig, w: int, body: Body | None = None) -> str:
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


def ispow2(v: int) -> bool:
    a = abs(v)
    return a != 0 and (a & (a - 1)) == 0


def spread_cuts(depth_stages: int, p: int) -> list[int]:
    """Register positions (after stage i, 0 <= i < depth_stages) for p evenly spread stages."""
    p = min(p, depth_stages)
    return sorted({math.ceil(k * depth_stages / (p + 1)) - 1 for k in range(1, p + 1)})


def tree_depth(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


class Body:
    """Declarations and statements of one module, in order, plus what the module needs: the signals
    only partly used (``sliced``) and the hw/ library files it instantiates (``libs``)."""

    def __init__(self, en: str | None = "en"):
        self.en = en  # enable of every pipeline register (None: free-running, flow_control 'credit')
        self.lines: list[str] = []
        self.n = 0
        self.cap = UNCAPPED  # modular width limit of the current tree (exact result width)
        self.sliced: set[str] = set()
        self.libs: set[str] = set()
        # (* keep *) on adder outputs: stops yosys alumacc from merging a whole tree into one $macc,
        # which maccmap turns into LUT full adders instead of carry chains (ECP5: 1113 -> 645 LUT4-eq.
        # on a 16x4 power-of-two layer).
        self.keep = True

    @contextmanager
    def capped(self, width: int) -> Iterator[None]:
        """Arithmetic inside is modulo ``2^width`` (the exact result's width): wider bits are dropped."""
        cap, self.cap = self.cap, width
        try:
            yield
        finally:
            self.cap = cap

    def wire(self, prefix: str, width: int, expr: str, lo: int, hi: int, keep: bool = False) -> Sig:
        self.n += 1
        attr = "(* keep *) " if keep else ""
        self.lines.append(f"    {attr}wire signed [{width - 1}:0] {prefix} = {expr};")
        return Sig(prefix, width, lo, hi)

    def reg(self, nm: str, src: Sig, keep: bool = False) -> Sig:
        """Register ``src`` as ``nm`` (``keep``: a copy that synthesis must not merge with its twins)."""
        if src.const:
            return src
        self.lines.append(f"    reg signed [{src.width - 1}:0] {nm};")
        cond = f"if ({self.en}) " if self.en else ""
        self.lines.append(f"    {'(* keep *) ' if keep else ''}always @(posedge clk) {cond}{nm} <= {src.name};")
        return Sig(nm, src.width, src.lo, src.hi, src.neg)


def add_sigs(body: Body, nm: str, a: Sig, b: Sig) -> Sig:
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


def positive(body: Body, nm: str, a: Sig) -> Sig:
    """A tree result with ``neg`` set becomes an explicit negation."""
    if not a.neg:
        return a
    w = min(max(bits_for(a.lo, a.hi), a.width), body.cap)
    return body.wire(nm, w, f"-({fit(a, w, body)})", a.lo, a.hi)


def max_sigs(body: Body, nm: str, a: Sig, b: Sig) -> Sig:
    w = max(a.width, b.width)
    lo, hi = max(a.lo, b.lo), max(a.hi, b.hi)
    return body.wire(nm, w, f"({a.ext(w)} > {b.ext(w)}) ? {a.ext(w)} : {b.ext(w)}", lo, hi)


def tree(body: Body, prefix: str, leaves: list[Sig], depth: int, cuts: set[int], op=add_sigs) -> Sig:
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
