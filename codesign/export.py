"""Export stage: Brevitas model -> QONNX (raw) -> cleaned QONNX, validated against PyTorch.

Artifacts (``export/``): ``model_raw.onnx`` (``brevitas.export.export_qonnx``), ``model.onnx`` (cleaned by
:func:`codesign.graph.clean.clean_qonnx`: ``cleanup_model``, channels-last for conv graphs with a
channels-last input, Gemm -> MatMul (+ Add of its bias), ``rounding_mode`` attributes upper-case QONNX names:
``ROUND`` (half to even), ``FLOOR``, ``CEIL``, ``DOWN`` (Brevitas ROUND_TO_ZERO); weight Quant nodes carry
their quantizer's real rounding, Brevitas writes ROUND there), ``test_x.npy`` (test
inputs, float64 real values on the input quantizer's grid, in the cleaned graph's layout, i.e.
channels-last for conv models) and ``test_y.npy``.

The cleaned graph keeps batch size 1 (the export example); :func:`execute_qonnx` runs a batch.

ONNX ``metadata_props`` of both graphs:

- ``codesign.pot_layers``: JSON list of the layer names (``fc1``, ``conv2`` ...) whose weights are
  powers of two (every weight 0 or +-2^e).
- ``codesign.pot_weight_quant_nodes``: JSON list of the names of those layers' weight ``Quant`` nodes
  in the cleaned graph (``model.onnx``) (empty in ``model_raw.onnx``, whose node names are Brevitas').
- ``codesign.layers``: JSON list, in graph order, of ``{"layer", "op", "node", "weight_quant",
  "pot"}``: the layer name, the ONNX op type (MatMul/Conv), the node's name and its weight Quant node's
  name in the cleaned graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from codesign.config import Config
from codesign.errors import CodesignError, UnsupportedError
from codesign.graph.clean import clean_qonnx, qonnx_rounding
from codesign.run import RunDir, atomic_path

META_POT_LAYERS = "codesign.pot_layers"
META_POT_NODES = "codesign.pot_weight_quant_nodes"
META_LAYERS = "codesign.layers"


def _set_meta(model: onnx.ModelProto, key: str, value) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = json.dumps(value)
            return
    p = model.metadata_props.add()
    p.key, p.value = key, json.dumps(value)


def get_meta(model: onnx.ModelProto, key: str, default=None):
    for p in model.metadata_props:
        if p.key == key:
            return json.loads(p.value)
    return default


def _export_raw(model: torch.nn.Module, input_shape, out_raw: Path) -> None:
    from brevitas.export import export_qonnx

    x = torch.zeros((1, *input_shape), dtype=torch.float32)
    names = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch.onnx._internal.exporter._registration")
    quiet = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with atomic_path(out_raw) as tmp, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_qonnx(model, args=x, export_path=str(tmp))
    finally:
        for lg, lv in zip(quiet, levels, strict=True):
            lg.setLevel(lv)


def _check_supported(mw) -> None:
    """The flow's stages handle these ops of a cleaned graph of our models; anything else is a clear error."""
    unsupported = sorted({n.op_type for n in mw.graph.node} - {
        "Quant", "BipolarQuant", "MatMul", "Add", "Mul", "Relu", "Conv", "MaxPool", "Reshape", "Flatten", "Transpose",
        "BatchNormalization", "AveragePool", "GlobalAveragePool"})
    if unsupported:
        raise UnsupportedError(f"export: cleaned graph has op(s) {', '.join(unsupported)} the flow does not support")


def _layer_table(mw, layer_names: list[str], pot_layers: list[str]) -> list[dict]:
    """Match weight layers (in model order) to MatMul/Conv nodes (in graph order)."""
    ops = [n for n in mw.graph.node if n.op_type in ("MatMul", "Conv")]
    if len(ops) != len(layer_names):
        raise CodesignError(
            f"export: {len(ops)} MatMul/Conv nodes in the cleaned graph but {len(layer_names)} weight layers")
    table = []
    for name, node in zip(layer_names, ops, strict=True):
        prod = mw.find_producer(node.input[1])
        wq = prod.name if prod is not None and prod.op_type in ("Quant", "BipolarQuant") else None
        table.append({"layer": name, "op": node.op_type, "node": node.name, "weight_quant": wq,
                      "pot": name in pot_layers})
    return table


def _fix_weight_rounding(mw, model: torch.nn.Module, table: list[dict]) -> None:
    """Brevitas writes ``rounding_mode="ROUND"`` on weight Quant nodes and keeps the float weights; give
    each (non-po2) weight Quant node its quantizer's real rounding so the graph re-quantizes exactly."""
    for t in table:
        if t["pot"] or not t["weight_quant"]:
            continue
        proxy = getattr(getattr(model, t["layer"]), "weight_quant", None)
        mode = qonnx_rounding(str(getattr(proxy, "rounding_mode", None) or "ROUND"))
        node = mw.get_node_from_name(t["weight_quant"])
        for a in node.attribute:
            if a.name == "rounding_mode":
                a.s = mode.encode()


def export_qonnx_model(model: torch.nn.Module, input_shape, out_raw: str | Path, out_clean: str | Path) -> dict:
    """Export ``model`` (a :class:`codesign.quant.QuantNet`) to raw and cleaned QONNX.

    Po2 weights are first written back into the float weights (:func:`codesign.quant.snap_pot_weights`).
    Returns ``{"pot_layers", "layers", "input_shape" (cleaned graph, with batch), "channels_last"}``.
    """
    from codesign import quant

    out_raw, out_clean = Path(out_raw), Path(out_clean)
    model.eval()
    pot_layers = quant.snap_pot_weights(model)
    _export_raw(model, tuple(input_shape), out_raw)
    raw = onnx.load(str(out_raw))
    _set_meta(raw, META_POT_LAYERS, pot_layers)
    _set_meta(raw, META_POT_NODES, [])
    with atomic_path(out_raw) as tmp:
        onnx.save(raw, str(tmp))
    from qonnx.core.modelwrapper import ModelWrapper

    mw = ModelWrapper(clean_qonnx(out_raw, channels_last=None))
    _check_supported(mw)
    layer_names = model.weight_layers() if hasattr(model, "weight_layers") else []
    table = _layer_table(mw, layer_names, pot_layers)
    _fix_weight_rounding(mw, model, table)
    _set_meta(mw.model, META_POT_LAYERS, pot_layers)
    _set_meta(mw.model, META_POT_NODES, [t["weight_quant"] for t in table if t["pot"]])
    _set_meta(mw.model, META_LAYERS, table)
    out_clean.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_clean) as tmp:
        mw.save(str(tmp))
    in_shape = mw.get_tensor_shape(mw.graph.input[0].name)
    return {"pot_layers": pot_layers, "layers": table, "input_shape": list(in_shape),
            "channels_last": len(input_shape) > 1}


def to_graph_layout(x: np.ndarray) -> np.ndarray:
    """NC... (PyTorch) -> channels-last (cleaned graph) for conv inputs; flat inputs unchanged."""
    if x.ndim <= 2:
        return x
    return np.moveaxis(x, 1, -1)


def execute_qonnx(onnx_path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run the cleaned graph with qonnx ``execute_onnx`` on ``x`` (graph layout): the whole batch at once
    (``ChangeBatchSize``), or one sample at a time where that fails (it can on conv graphs)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    try:  # per-node onnxruntime sessions on the custom-domain graph warn about opset 1 on every call
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except Exception:  # pragma: no cover
        pass
    mw = ModelWrapper(str(onnx_path))
    iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, 0))
    if len(x) > 1:
        try:
            from qonnx.transformation.change_batchsize import ChangeBatchSize
            from qonnx.transformation.infer_shapes import InferShapes

            mb = mw.transform(ChangeBatchSize(len(x))).transform(InferShapes())
            r = execute_onnx(mb, {iname: x})[oname]
            return np.asarray(r, dtype=np.float64).reshape(len(x), -1)
        except Exception:
            pass
    outs = []
    for i in range(len(x)):
        r = execute_onnx(mw, {iname: x[i:i + 1]})
        outs.append(np.asarray(r[oname], dtype=np.float64).reshape(1, -1))
    return np.concatenate(outs, 0)


#: unit roundoff of float32
_U32 = 2.0 ** -24


def float_scaled(model: str | Path | onnx.ModelProto) -> bool:
    """Whether a quantizer of the graph has a float (non-power-of-two) scale."""
    from codesign.graph.analysis import is_po2

    mp = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    inits = {i.name: i for i in mp.graph.initializer}
    for n in mp.graph.node:
        if n.op_type in ("Quant", "BipolarQuant") and len(n.input) > 1 and n.input[1] in inits:
            if not is_po2(onnx.numpy_helper.to_array(inits[n.input[1]])):
                return True
    return False


def output_rounding_bound(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """(N, n_out): twice the float32 rounding-error bound of the output layer's dot products on ``x``,
    ``2 * gamma_n * (|x| @ |W|^T + |b|)`` with ``gamma_n = n*u / (1 - n*u)``, ``u = 2**-24``, ``n`` = fan-in + 1
    (the bias add) (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, eq. 3.5): the most two
    float32 evaluations of the same layer on the same quantized inputs can differ, in any summation order.
    ``model`` is a :class:`codesign.quant.QuantNet` whose last weight layer is a Linear."""
    last = model.weight_layers()[-1]
    layer = getattr(model, last)
    model.eval()
    with torch.no_grad():
        _, feats = model(torch.as_tensor(x, dtype=torch.float32), return_features=True)
        xin = feats[model.input_of(last)]
        xin = xin.value if hasattr(xin, "value") else xin
        w = layer.quant_weight().value
    a = np.abs(xin.double().numpy().reshape(len(x), -1))
    terms = a @ np.abs(w.double().numpy()).T
    if layer.bias is not None:
        terms = terms + np.abs(layer.bias.detach().double().numpy())
    n = a.shape[1] + 1
    return 2.0 * (n * _U32 / (1.0 - n * _U32)) * terms


def validate(model: torch.nn.Module, onnx_path: str | Path, x_grid: np.ndarray) -> dict:
    """Compare PyTorch and the cleaned QONNX graph on ``x_grid`` (PyTorch layout: the graph's input values).

    With power-of-two scales every product and partial sum is an exact float32, so both must agree bit for bit
    (``mismatches``: vectors with any output that differs). With a float (non-power-of-two) scale
    (:func:`float_scaled`) the real values ``code * scale`` have full float32 mantissas, their products and sums
    round, and PyTorch and onnxruntime add the terms in different orders: the outputs then differ in their last
    bits. There a vector is a mismatch when an output differs by more than :func:`output_rounding_bound` (the
    output layer's rounding on identical quantized inputs); a differing activation code upstream (a float
    difference that crossed a rounding boundary) shows as a larger difference and is counted.
    ``exact_mismatches`` counts bitwise differences either way; ``tolerance`` is ``"exact"`` or
    ``"float32 rounding bound"``."""
    model.eval()
    with torch.no_grad():
        t = model(torch.as_tensor(x_grid, dtype=torch.float32)).double().numpy().reshape(len(x_grid), -1)
    q = execute_qonnx(onnx_path, to_graph_layout(x_grid))
    exact = int(np.sum(np.any(t != q, axis=1)))
    mism, tolerance = exact, "exact"
    if float_scaled(onnx_path) and len(t):
        bound = output_rounding_bound(model, x_grid)
        mism, tolerance = int(np.sum(np.any(np.abs(t - q) > bound, axis=1))), "float32 rounding bound"
    return {"mismatches": mism, "exact_mismatches": exact, "tolerance": tolerance,
            "max_abs_diff": float(np.max(np.abs(t - q))) if len(t) else 0.0, "torch_out": t, "qonnx_out": q}


def run_stage(rd: RunDir, cfg: Config) -> dict:
    from codesign import data as data_mod
    from codesign import quant
    from codesign.train import load_model

    t0 = time.time()
    torch.set_num_threads(1)
    src = rd.path("prune", "model.pt")
    if not src.exists():
        src = rd.require("train/model.pt", "train")
    model = load_model(src)
    ds = data_mod.load(cfg.data, cfg.seed)
    d = rd.stage_dir("export")
    raw, clean = d / "model_raw.onnx", d / "model.onnx"
    info = export_qonnx_model(model, model.input_shape, raw, clean)
    x_grid = quant.graph_input(model, ds.x_test).double().numpy()
    v = validate(model, clean, x_grid)
    with atomic_path(d / "test_x.npy") as tmp:
        np.save(tmp, to_graph_layout(x_grid).astype(np.float64))
    with atomic_path(d / "test_y.npy") as tmp:
        np.save(tmp, ds.y_test.astype(np.int64))
    for p in (raw, clean, d / "test_x.npy", d / "test_y.npy"):
        rd.add(p, "export")
    acc = float(np.mean(v["qonnx_out"].argmax(1) == ds.y_test)) if len(ds.y_test) else 0.0
    figures = {
        "qonnx": os.path.relpath(clean, rd.root),
        "torch_vs_qonnx_mismatches": v["mismatches"],
        "torch_vs_qonnx_max_abs_diff": v["max_abs_diff"],
        "torch_vs_qonnx_tolerance": v["tolerance"],
        "torch_vs_qonnx_exact_mismatches": v["exact_mismatches"],
        "qonnx_accuracy": acc,
        "pot_layers": info["pot_layers"],
        "seconds": round(time.time() - t0, 2),
    }
    rd.record("export", figures)
    return figures
