"""Verilog emitter: IR (:mod:`codesign.rtl.ir`) -> one module per layer + the top level + ``interface.json``.

Every layer module has the same streaming interface (one whole vector per beat)::

    clk, rst, in_valid, in_ready, in_data[N_IN*IB-1:0], out_valid, out_ready, out_data[N_OUT*OB-1:0]

The modules along the seams of the emitter:

* :mod:`~codesign.rtl.emit.netlist`: signals with exact bounds, module bodies, adder/max trees;
* :mod:`~codesign.rtl.emit.module`: the frame every layer module shares (header, ports, requantizer);
* :mod:`~codesign.rtl.emit.parallel`: ``latency`` strategy, fully parallel layers (II 1);
* :mod:`~codesign.rtl.emit.folded`: ``resource`` strategy, time-multiplexed linear layers;
* :mod:`~codesign.rtl.emit.top`: the vector-I/O top level (chains, residual forks/joins) and its interface;
* :mod:`~codesign.rtl.emit.stream_plan` / :mod:`~codesign.rtl.emit.stream`: ``io='stream'`` (line buffers).

Every function returns records (:class:`~codesign.rtl.emit.module.LayerModule`, ``VectorDesign``,
``StreamDesign``); :func:`write_design` is the only one that writes files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from codesign.config import RTLConfig
from codesign.resources import hw_dir
from codesign.rtl import ir
from codesign.rtl.emit.stream import build_stream
from codesign.rtl.emit.top import build_vector, vector_interface
from codesign.rtl.interface import Interface

__all__ = ["write_design", "HW_DIR"]

HW_DIR = hw_dir()  # the hand-written Verilog library (codesign.resources: the wheel's copy or the repo's hw/)


def write_design(m: ir.Model, cfg: RTLConfig, out_dir: str | Path, onnx_rel: str,
                 top: str = "codesign_top") -> Interface:
    """Emit ``m`` into ``out_dir``: every module, the hw/ library files it uses, the top level (not yet
    ``interface.json``: the caller writes the returned :class:`Interface`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    if cfg.io == "stream":
        d = build_stream(m, cfg, onnx_rel, top)
        libs, iface = d.libs, d.interface
        mods = list(d.modules) + (list(d.vector.modules) if d.vector is not None else [])
        if d.vector is not None:
            texts[f"{d.vector.top}.v"] = d.vector.top_text
        texts[f"{top}.v"] = d.top_text
    else:
        d = build_vector(m, cfg, top)
        libs, iface = d.libs, vector_interface(m, cfg, d, onnx_rel)
        mods = list(d.modules)
        texts[f"{top}.v"] = d.top_text
    for mod in mods:
        (out_dir / f"{mod.name}.v").write_text(mod.text)
    for name, text in texts.items():
        (out_dir / name).write_text(text)
    for lib in sorted(libs):
        shutil.copyfile(HW_DIR / lib, out_dir / lib)
    return iface
