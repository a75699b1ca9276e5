"""Bit-exact verification of generated RTL against the golden model (cocotb; Verilator or Icarus).

    from codesign.verify import verify
    res = verify("runs/digits_mlp/rtl", "runs/digits_mlp/export/model.onnx", vectors=100_000)
    assert res["mismatches"] == 0

Two testbench styles share one comparison path: ``stream`` (default; a generated Verilog wrapper
streams ``$readmemh`` vectors through the DUT with random gaps/backpressure and logs outputs) and
``loop`` (cocotb drives each cycle from Python). See sim/README.md.

Names are imported lazily, so the cocotb test modules in this package start fast inside the
simulator (they do not pull in numpy and the rest of the flow).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "verify": "codesign.verify.core",
    "run_stage": "codesign.verify.core",
    "simulate": "codesign.verify.core",
    "run_codes": "codesign.verify.core",
    "summary": "codesign.verify.core",
    "STYLES": "codesign.verify.core",
    "Interface": "codesign.verify.iface",
    "load_interface": "codesign.verify.iface",
    "Reference": "codesign.verify.reference",
    "make_reference": "codesign.verify.reference",
    "available": "codesign.verify.sim",
    "tool_env": "codesign.verify.sim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'codesign.verify' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    return __all__
