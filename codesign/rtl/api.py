"""``generate`` and the ``rtl`` stage entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx

from codesign.errors import UnsupportedError
from codesign.rtl.emit import Emitter
from codesign.rtl.frontend_qonnx import load_model, lower


def generate(onnx_path_or_model, out_dir: str | Path, strategy: str = "latency", reuse: int = 1,
             multiplier: str = "shiftadd", pipeline: int = 1, debug_taps: bool = False,
             name: str = "codesign", onnx_rel: str | None = None, axis_slice: bool = False,
             share: bool = True, io: str = "vector") -> dict:
    """Lower a QONNX model (path, ModelProto, qonnx ModelWrapper or an IR :class:`Model`) and write
    ``out_dir/*.v`` + ``out_dir/interface.json``. Returns the interface dict.

    ``strategy``: ``latency`` (fully parallel, II 1) or ``resource`` (folded by ``reuse``: over output
    fields while ``reuse <= n_out``, beyond that also over the inputs, with a few MAC units and an
    accumulator; II <= ``reuse`` per layer);
    ``multiplier``: ``shiftadd`` (CSD shift-add constants; power-of-two weights are wire shifts) or
    ``dsp`` (``*`` for non-power-of-two constants); ``pipeline``: register stages per adder tree
    (resource: operand register, product register, then adder-tree levels);
    ``debug_taps``: per-layer ``dbg_<layer>_tdata/tvalid`` outputs; ``axis_slice``: a register slice
    (``hw/cs_skid_buffer.v``) on the output stream (+1 cycle latency); ``share``: compute shift-add
    terms that several outputs of a fully parallel layer have in common once (:mod:`codesign.rtl.cse`);
    ``io``: ``vector`` (one whole input vector per beat) or ``stream`` (one pixel per beat: the leading
    window layers stream over line buffers, a collector hands the feature map to the vector layers; see
    :mod:`codesign.rtl.stream`; latency strategy only)."""
    from codesign.rtl.ir import Model

    out_dir = Path(out_dir)
    if isinstance(onnx_path_or_model, Model):
        model = onnx_path_or_model
    else:
        model = lower(load_model(onnx_path_or_model), name=name)
    if onnx_rel is None:
        if isinstance(onnx_path_or_model, (str, Path)):
            onnx_rel = os.path.relpath(Path(onnx_path_or_model).resolve(), out_dir.resolve())
        else:
            onnx_rel = "../export/model.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.v"):  # a regenerated folder holds exactly the new design
        old.unlink()
    em = Emitter(model, strategy=strategy, reuse=reuse, multiplier=multiplier, pipeline=pipeline,
                 debug_taps=debug_taps, axis_slice=axis_slice, share_terms=share, io=io)
    iface = em.emit(out_dir, onnx_rel=onnx_rel)
    (out_dir / "interface.json").write_text(json.dumps(iface, indent=2) + "\n")
    return iface


def run_stage(rd, cfg) -> dict:
    """Stage ``rtl``: reads ``export/model.onnx``, writes ``rtl/`` and records rtl.* figures."""
    from codesign.run import atomic_write_json

    src = rd.require("export/model.onnx", "export")
    out = rd.stage_dir("rtl")
    r = cfg.rtl
    try:
        model = onnx.load(str(src))
    except Exception as e:  # noqa: BLE001 - a corrupt file is a user-visible input problem
        raise UnsupportedError(f"{src}: cannot read ONNX model ({e})") from None
    iface = generate(model, out, strategy=r.strategy, reuse=r.reuse, multiplier=r.multiplier,
                     pipeline=r.pipeline, debug_taps=r.debug_taps, axis_slice=r.axis_slice, share=r.share, io=r.io, name=cfg.name,
                     onnx_rel="../export/model.onnx")
    atomic_write_json(out / "interface.json", iface)
    rd.add_tree(out, "rtl")
    figures = {"rtl.strategy": iface["strategy"], "rtl.reuse": iface["reuse"],
               "rtl.latency_cycles": iface["latency_cycles"], "rtl.ii": iface["ii"]}
    if iface.get("io") == "stream":
        figures["rtl.io"] = "stream"
    rd.record("rtl", {k.split(".", 1)[1]: v for k, v in figures.items()})
    return figures
