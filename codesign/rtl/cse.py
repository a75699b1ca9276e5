"""Common-subexpression sharing for the constant adder trees of fully parallel layers.

A fully parallel layer computes, for every output, a sum of signed, shifted input fields (the
canonical-signed-digit terms of its constant weights). Two terms that occur together in several
outputs, such as ``x3 + (x7 << 2)``, are computed once and shared: each such pair saves one adder
per extra output that uses it. This is the two-term common-subexpression elimination that
distributed-arithmetic generators (da4ml, Hcub-style multiple-constant multiplication) apply,
done greedily: the most frequent pair first, ties to the shallowest result, until no pair occurs
twice. A shared term may itself pair up again, up to ``max_level`` adders deep.

The sums stay exact integers, so sharing never changes a result bit: only how it is computed.

A digit is ``(source, shift, sign)``: the value ``sign * (source << shift)``; sources ``0 .. n-1``
are the layer's input fields, sources from ``first_id`` on are :class:`Shared` terms.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

Digit = tuple[int, int, int]


@dataclass(frozen=True)
class Shared:
    """``(a << ka) + sign_b * (b << kb)`` with ``min(ka, kb) == 0``, ``level`` adders deep."""

    id: int
    a: int
    ka: int
    b: int
    kb: int
    sign_b: int
    level: int


def _key(d1: Digit, d2: Digit) -> tuple[int, int, int, int]:
    """Canonical pair key ``(src1, src2, k2 - k1, s1 * s2)``, the pair ordered by (source, shift)."""
    if (d2[0], d2[1]) < (d1[0], d1[1]):
        d1, d2 = d2, d1
    return d1[0], d2[0], d2[1] - d1[1], d1[2] * d2[2]


def share(columns: list[list[Digit]], first_id: int, max_level: int = 3,
          max_pairs: int = 2_000_000) -> tuple[list[Shared], list[list[Digit]]]:
    """Greedy pairwise sharing over ``columns`` (one digit list per output).

    Returns the shared terms (in dependency order) and the rewritten columns, whose digit sums
    equal the original ones. ``max_pairs``: a layer with more term pairs than this is left as it
    is (the greedy search would be slow; conv layers flattened over many positions)."""
    cols = [list(c) for c in columns]
    if sum(len(c) * (len(c) - 1) // 2 for c in cols) > max_pairs:
        return [], cols
    level: dict[int, int] = {}

    def lvl(src: int) -> int:
        return level.get(src, 0)

    counts: dict[tuple, int] = {}
    where: dict[tuple, set[int]] = {}
    heap: list[tuple[int, int, tuple]] = []

    def bump(key: tuple, ci: int, by: int) -> None:
        n = counts.get(key, 0) + by
        counts[key] = n
        if by > 0:
            where.setdefault(key, set()).add(ci)
            if n >= 2:
                heapq.heappush(heap, (-n, max(lvl(key[0]), lvl(key[1])) + 1, key))

    for ci, c in enumerate(cols):
        for a in range(len(c)):
            for b in range(a + 1, len(c)):
                bump(_key(c[a], c[b]), ci, 1)

    shared: list[Shared] = []
    while heap:
        negn, lv, key = heapq.heappop(heap)
        if counts.get(key, 0) != -negn:
            continue  # stale entry
        if -negn < 2:
            break
        if lv > max_level:
            continue
        s1, s2, dk, ss = key
        new = first_id + len(shared)  # the id of this pair's shared term, once it replaces an instance
        for ci in sorted(where.get(key, ())):
            c = cols[ci]
            while True:  # replace disjoint instances of the pair in this column
                have = {(d[0], d[1]): d for d in c}
                hit = None
                for d in c:
                    if d[0] != s1:
                        continue
                    e = have.get((s2, d[1] + dk))
                    if e is not None and e is not d and e[2] == d[2] * ss:
                        hit = (d, e)
                        break
                if hit is None:
                    break
                d1, d2 = hit
                for gone in (d1, d2):  # drops every pair count of d1 and d2, the shared pair once
                    c.remove(gone)
                    for e in c:
                        bump(_key(gone, e), ci, -1)
                base = min(d1[1], d2[1])
                if new not in level:
                    level[new] = max(lvl(s1), lvl(s2)) + 1
                    shared.append(Shared(new, s1, d1[1] - base, s2, d2[1] - base, ss, level[new]))
                nd = (new, base, d1[2])
                for e in c:
                    bump(_key(nd, e), ci, 1)
                c.append(nd)
    return shared, cols
