"""``generate`` and the ``rtl`` stage entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx
from pydantic import ValidationError

from codesign.config import RTLConfig
from codesign.errors import UnsupportedError
from codesign.rtl.emit import write_design
from codesign.rtl.frontend import load_model, lower
from codesign.rtl.frontend.forms import choose_forms
from codesign.rtl.ir import Model


def rtl_config(cfg: RTLConfig | None = None, **options: Any) -> RTLConfig:
    """An :class:`~codesign.config.RTLConfig` from ``cfg`` with ``options`` (its field names) applied; a bad
    value is an :class:`UnsupportedError` naming ``rtl.<key>``."""
    base = (cfg or RTLConfig()).model_dump()
    base.update(options)
    try:
        return RTLConfig.model_validate(base)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "rtl"
        raise UnsupportedError(f"rtl.{key} {base.get(key)!r}: {err['msg']}") from None


def generate(onnx_path_or_model, out_dir: str | Path, config: RTLConfig | None = None, *, name: str = "codesign",
             onnx_rel: str | None = None, input_precision: str | None = None, **options: Any) -> dict:
    """Lower a QONNX model (path, ModelProto, qonnx ModelWrapper or an IR :class:`Model`) and write
    ``out_dir/*.v``, ``out_dir/interface.json`` and ``out_dir/ir.json`` (the IR, for the energy stage).
    Returns the interface (the content of ``interface.json``). ``input_precision``: the grid of a graph
    input that no quantizer and no annotation defines (hls4ml syntax, e.g. ``ap_fixed<16,6>``).

    ``config`` is an :class:`~codesign.config.RTLConfig` (the ``rtl:`` section of a run's config);
    keyword ``options`` override its fields:

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
    :mod:`codesign.rtl.emit.stream`; latency strategy only)."""
    cfg = rtl_config(config, **options)
    out_dir = Path(out_dir)
    if isinstance(onnx_path_or_model, Model):
        model = onnx_path_or_model
    else:
        model = lower(load_model(onnx_path_or_model), name=name, input_precision=input_precision)
    if onnx_rel is None:
        if isinstance(onnx_path_or_model, str | Path):
            onnx_rel = os.path.relpath(Path(onnx_path_or_model).resolve(), out_dir.resolve())
        else:
            onnx_rel = "../export/model.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.v"):  # a regenerated folder holds exactly the new design
        old.unlink()
    model = choose_forms(model, cfg.epilogue, folded=cfg.strategy == "resource")
    iface = write_design(model, cfg, out_dir, onnx_rel)
    if input_precision:
        iface = iface.replace(input_precision=input_precision)
    (out_dir / "ir.json").write_text(json.dumps(model.to_json()) + "\n")
    iface.write(out_dir)
    return iface.to_json()


def run_stage(rd, cfg) -> dict:
    """Stage ``rtl``: reads ``export/model.onnx``, writes ``rtl/`` and records rtl.* figures."""
    src = rd.require("export/model.onnx", "export")
    out = rd.stage_dir("rtl")
    try:
        model = onnx.load(str(src))
    except Exception as e:  # noqa: BLE001 - a corrupt file is a user-visible input problem
        raise UnsupportedError(f"{src}: cannot read ONNX model ({e})") from None
    iface = generate(model, out, cfg.rtl, name=cfg.name, onnx_rel="../export/model.onnx",
                     input_precision=cfg.quant.input_precision)
    rd.add_tree(out, "rtl")
    figures = {"rtl.strategy": iface["strategy"], "rtl.reuse": iface["reuse"],
               "rtl.latency_cycles": iface["latency_cycles"], "rtl.ii": iface["ii"]}
    if iface.get("io") == "stream":
        figures["rtl.io"] = "stream"
    rd.record("rtl", {k.split(".", 1)[1]: v for k, v in figures.items()})
    return figures
