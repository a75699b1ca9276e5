"""Toggle counts per signal group from a waveform (VCD or FST), read with pywellen.

A toggle is one bit changing value; a signal's toggles are the popcount of old XOR new over all
its value changes. Signals are grouped by the scope (module instance) they live in, below the DUT
instance; ports seen in several scopes (aliases) count once, in their deepest scope. The summary is
the activity input for energy estimates (cells x toggles), so it is written into verify.json.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from codesign.verify.iface import Interface
from codesign.verify.wrapper import TB_TOP


def _dut_prefix(names: list[str], iface: Interface) -> str:
    want = f"{TB_TOP}.dut."
    if any(n.startswith(want) for n in names):
        return want
    port = iface.output.tdata
    for n in names:  # loop style: the DUT is the top scope
        parts = n.split(".")
        if parts[-1] == port and len(parts) >= 2:
            return ".".join(parts[:-1]) + "."
    return ""


def _is_layer(scope_part: str, layer: str) -> bool:
    """``fc1`` matches the instance names ``fc1``, ``u_fc1``, ``fc1_i``."""
    return scope_part == layer or scope_part.endswith("_" + layer) or scope_part.startswith(layer + "_")


def toggle_summary(wave: str | Path, iface: Interface, *, max_changes: int = 50_000_000) -> dict[str, Any]:
    import pywellen

    w = pywellen.Waveform(str(wave))
    vs = [v for v in w.all_vars() if not v.is_real() and not v.is_string()] if callable(
        getattr(pywellen.Var, "is_real", None)) else list(w.all_vars())
    names = [v.full_name for v in vs]
    prefix = _dut_prefix(names, iface)
    # one entry per signal: its deepest (most specific) scope under the DUT
    by_sig: dict[Any, tuple[str, Any]] = {}
    clock_var = None
    for v, name in zip(vs, names, strict=True):
        if not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        if rel == iface.clock:
            clock_var = v
        key = str(v.signal_ref)
        if key not in by_sig or rel.count(".") > by_sig[key][0].count("."):
            by_sig[key] = (rel, v)
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {"signals": 0, "bits": 0, "toggles": 0})
    changes_seen = 0
    for rel, v in by_sig.values():
        scope = rel.rsplit(".", 1)[0] if "." in rel else "(top)"
        sig = v.signal
        n = len(sig)
        changes_seen += n
        if changes_seen > max_changes:
            raise RuntimeError(f"waveform too large for toggle counting (> {max_changes:,} changes); "
                               "simulate fewer vectors with waves=True")
        t = 0
        prev = None
        for i in range(n):
            val = sig[i][1]
            if isinstance(val, int):
                if prev is not None:
                    t += (prev ^ val).bit_count()
                prev = val
            else:
                prev = None  # x/z: not counted
        g = groups[scope]
        g["signals"] += 1
        g["bits"] += int(v.bitwidth or 1)
        g["toggles"] += t
    cycles = None
    if clock_var is not None:
        cycles = len(clock_var.signal) // 2
    out_groups = {}
    for scope in sorted(groups):
        g = dict(groups[scope])
        if g["toggles"] == 0 and g["bits"] == 0:
            continue
        if cycles:
            g["toggles_per_cycle"] = round(g["toggles"] / cycles, 3)
        out_groups[scope] = g
    total = sum(g["toggles"] for g in out_groups.values())
    by_layer = {}
    for la in iface.layers:
        ts = sum(g["toggles"] for s, g in out_groups.items() if any(_is_layer(p, la.name) for p in s.split(".")))
        if ts:
            by_layer[la.name] = ts
    return {"file": str(wave), "cycles": cycles, "signals": len(by_sig), "toggles": total,
            "toggles_per_cycle": round(total / cycles, 3) if cycles else None,
            "groups": out_groups, "by_layer": by_layer}
