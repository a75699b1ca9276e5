"""Bring your own PyTorch model: a float ``nn.Module`` from the user's ``.py`` file, mapped onto codesign's layers.

``model: {module: "net.py:Net", weights: "net.pt", input_shape: [64], kwargs: {}}`` (paths relative to the
YAML's folder; :func:`codesign.config.load` makes them absolute). The module is traced with
``torch.fx.symbolic_trace``: a chain (every op reads the previous op's output) or a residual graph (a tensor
read by several ops, joined again by ``a + b`` / ``torch.add`` / ``+=``). Its ops are mapped, in order, onto the
layers :class:`codesign.quant.QuantNet` builds for the zoo models (a residual graph: a
:class:`codesign.quant.GraphNet`, each layer naming the layers it reads), with codesign's own quantizers
(``quant:``): Linear / Conv1d / Conv2d -> ``QuantLinear`` /
``QuantConv*d`` (``fc<i>`` / ``conv<i>``), BatchNorm1d/2d kept as a layer (``bn<i>`` / ``bn_fc<i>``; the
bias of the conv/linear before it is folded into its running mean, exactly as ``model.batchnorm`` zoo models
have bias-less layers there), ReLU / ReLU6 -> ``QuantReLU`` (``relu<i>`` / ``relu_fc<i>``, the layer's
unsigned activation quantizer; a ReLU6's upper clamp becomes that quantizer's range, not 6),
MaxPool1d/2d (``pool<i>``), AvgPool1d/2d and AdaptiveAvgPool1d/2d(1) (``avgpool<i>``, a window average
re-quantized by ``requant_avgpool<i>``, unsigned after ReLUs), Flatten (module, ``torch.flatten(x, 1)``,
``x.flatten(1)``, ``x.view(x.size(0), -1)`` / ``reshape``); Dropout and Identity are dropped (no-ops in
eval). A MaxPool between a layer and its ReLU is moved after the ReLU (they commute exactly).

Why not ``brevitas.graph.quantize.quantize``: it rewrites the traced ``GraphModule`` in place with its own
quantizer choices (float-scaled input and output quantizers, re-quantization after every compute layer, its
own module names), while the exporter, the golden model and the RTL backend take codesign's ``QuantNet``
layout (one constant po2 input quantizer, an activation quantizer only where the float model has its ReLU,
the output layer left at the accumulator scale, stable ``fc<i>``/``conv<i>`` names that ``quant.layers``
overrides use). On a chain the hand mapping is a few lines, builds exactly that layout and reuses the
quantizer factories of :mod:`codesign.quant`, so an imported model quantizes exactly like a zoo model.

Methods (``quant.method``): ``qat`` fine-tunes the quantized network from the imported weights with the
training loop of :mod:`codesign.train`; ``ptq`` calibrates the activation scales on ``quant.calibration_batches``
training batches with Brevitas' ``calibration_mode`` (the statistics give the scale parameter; the po2
restriction of codesign's fixed-point quantizers still rounds it to a power of two) and trains nothing;
``quant.ptq`` adds cross-layer equalization, GPTQ / GPFQ rounding, bias correction and data-free (ZeroQ)
calibration (:mod:`codesign.ptq`).

Residual adds (:func:`plan_graph`): each operand is a quantized activation (a ReLU's, the input's, pooled or
flattened) or a Linear/Conv accumulator; a BatchNorm before an add is folded into its layer's weights and bias
(``Layer.fold_bn``: a sum is not a per-channel function of one accumulator, so no thresholds); the sum is
re-quantized by the ReLU after it (``relu_add<k>``) or a signed activation quantizer (``requant<k>``). With
power-of-two scales the RTL aligns the two operands exactly (:mod:`codesign.rtl.frontend`).

Pruning (``prune.enabled``): the GraphNet gives the pruner its dataflow (consumers through the add, channel
groups joined by an add pruned together, a layer added to the network input kept whole); BatchNorm channels go
with their layer's units; the smaller widths are ``model.units`` in the pruned config, from which :func:`build`
rebuilds the model.

Not yet: concatenations, grouped or dilated convs, pools with stride != kernel or padding, activations
other than ReLU/ReLU6, a ReLU-less hidden layer, a last layer other than Linear, cross-layer equalization of a
residual graph, ``bn_gamma`` pruning.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import operator
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv1d, QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from torch import nn

from codesign import quant
from codesign.config import Config, DataConfig, ModelConfig
from codesign.errors import ConfigError, UnsupportedError

SUPPORTED = ("nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool1d, "
             "nn.MaxPool2d, nn.AvgPool1d/2d, nn.AdaptiveAvgPool1d/2d(1), residual adds, nn.Flatten (or "
             "torch.flatten / x.view(x.size(0), -1)), nn.Dropout, nn.Identity")
_NOOP = (nn.Dropout, nn.Identity)
_RELU_FNS = (torch.relu, F.relu, F.relu6)


# ---------------------------------------------------------------------------------------------
# the user's module
# ---------------------------------------------------------------------------------------------
def user_class(spec: str) -> type:
    """The class named by ``"path/to/file.py:ClassName"`` (a ConfigError naming what is wrong)."""
    file, sep, cls_name = spec.rpartition(":")
    if not sep or not file or not cls_name:
        raise ConfigError(f"model.module: {spec!r} must look like path/to/file.py:ClassName")
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"model.module: file {file} not found")
    mod_name = f"codesign_user_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    if mod_name not in sys.modules:
        s = importlib.util.spec_from_file_location(mod_name, path)
        if s is None or s.loader is None:
            raise ConfigError(f"model.module: cannot import {file} (not a Python file?)")
        mod = importlib.util.module_from_spec(s)
        sys.modules[mod_name] = mod
        try:
            s.loader.exec_module(mod)
        except Exception as e:
            del sys.modules[mod_name]
            raise ConfigError(f"model.module: importing {file} failed: {type(e).__name__}: {e}") from None
    cls = getattr(sys.modules[mod_name], cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"model.module: {file} has no torch.nn.Module class {cls_name!r}")
    return cls


def user_module(mc: ModelConfig, weights: bool = True) -> nn.Module:
    """Instantiate ``model.module`` with ``model.kwargs``; with ``weights``, load ``model.weights`` if given."""
    assert mc.module is not None
    cls = user_class(mc.module)
    try:
        m = cls(**mc.kwargs)
    except Exception as e:
        raise ConfigError(f"model.kwargs: {cls.__name__}(**{mc.kwargs}) failed: {type(e).__name__}: {e}") from None
    if weights and mc.weights:
        if not Path(mc.weights).is_file():
            raise ConfigError(f"model.weights: file {mc.weights} not found")
        try:  # tensors only: a state_dict needs no unpickling of code
            sd = torch.load(mc.weights, map_location="cpu", weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ConfigError(f"model.weights: {mc.weights} is not a state_dict saved with torch.save "
                              f"({type(e).__name__}: {first[:200]})") from None
        if not isinstance(sd, dict):
            raise ConfigError(f"model.weights: {mc.weights} holds a {type(sd).__name__}, not a state_dict")
        try:
            m.load_state_dict(sd)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ConfigError(f"model.weights: {mc.weights} does not fit {cls.__name__}: "
                              f"{' '.join(x.strip() for x in first[:3])}") from None
    return m.eval()


def user_file_hashes(cfg: Config) -> dict[str, str | None]:
    """SHA-256 of the user's files a run reads (model.module's file, model.weights, data.path; None: missing), so
    that a resumed flow re-runs its stages when one of them changed."""
    files = [cfg.model.module.rpartition(":")[0] if cfg.model.module else None, cfg.model.weights, cfg.data.path]
    out: dict[str, str | None] = {}
    for f in files:
        if f:
            p = Path(f)
            out[f] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    return out


# ---------------------------------------------------------------------------------------------
# fx trace -> chain of ops
# ---------------------------------------------------------------------------------------------
@dataclass
class Op:
    """One op of the traced graph: ``kind`` linear/conv/bn/relu/maxpool/flatten/add; ``path`` the user's module
    path (or the function) for messages; ``module`` the user's module (None for functions); ``inputs`` the ops
    it reads (indices, -1 the graph input)."""

    kind: str
    path: str
    module: nn.Module | None
    out_shape: tuple[int, ...]
    inputs: tuple[int, ...] = ()
    window: tuple[int, ...] = ()  # avgpool: the pooling window


def _type_name(m: nn.Module) -> str:
    t = type(m)
    return f"nn.{t.__name__}" if t.__module__.startswith("torch.nn") else f"{t.__module__}.{t.__qualname__}"


def _unsupported(path: str, what: str, why: str = "not supported") -> UnsupportedError:
    return UnsupportedError(f"model.{path} ({what}): {why}; supported: {SUPPORTED}")


def _module_kind(path: str, m: nn.Module) -> str | None:
    """The op kind of a leaf module (None: a no-op), or an UnsupportedError."""
    if isinstance(m, _NOOP):
        return None
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if (m.groups != 1 or any(d != 1 for d in m.dilation) or m.padding_mode != "zeros"
                or isinstance(m.padding, str)):
            raise _unsupported(path, _type_name(m), "grouped, dilated, non-zero-padded or padding='same' "
                               "convolutions are not supported yet")
        return "conv"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not m.affine or not m.track_running_stats:
            raise _unsupported(path, _type_name(m), "BatchNorm needs affine=True and running statistics")
        return "bn"
    if isinstance(m, (nn.ReLU, nn.ReLU6)):
        return "relu"
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        k, s = m.kernel_size, m.stride
        if (s != k or m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode
                or m.return_indices):
            raise _unsupported(path, _type_name(m), "pools need stride == kernel_size, no padding, no dilation")
        return "maxpool"
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
        k, s = m.kernel_size, m.stride
        if s != k or m.padding not in (0, (0, 0)) or m.ceil_mode:
            raise _unsupported(path, _type_name(m), "pools need stride == kernel_size, no padding")
        return "avgpool"
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        if any(v != 1 for v in np.atleast_1d(np.asarray(m.output_size, dtype=object))):
            raise _unsupported(path, _type_name(m), "only global average pooling (output_size 1) is supported")
        return "avgpool"
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise _unsupported(path, _type_name(m), "only Flatten(start_dim=1) is supported")
        return "flatten"
    raise _unsupported(path, _type_name(m))


def _is_tensor(n: torch.fx.Node) -> bool:
    from torch.fx.passes.shape_prop import TensorMetadata

    return isinstance(n.meta.get("tensor_meta"), TensorMetadata)


def _flatten_call(node: torch.fx.Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    return len(out_shape) == 2 and out_shape[1] == math.prod(in_shape[1:])


def trace(module: nn.Module, input_shape: tuple[int, ...]) -> list[Op]:
    """The ops of ``module`` (torch.fx) in execution order, with output shapes from a batch-1 zero input and
    the ops they read (``Op.inputs``: indices into the list, -1 for the graph input). A chain reads the
    previous op everywhere; a residual graph forks a tensor and joins two with an ``add``."""
    from torch.fx.passes.shape_prop import ShapeProp

    name = type(module).__name__
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"model: torch.fx cannot trace {name} ({msg})") from None
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception as e:
        raise ConfigError(f"model.input_shape: {name} fails on an input of shape {list(input_shape)} "
                          f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    ops: list[Op] = []
    index: dict[torch.fx.Node, int] = {}  # fx node -> the op giving its value (-1: the graph input)
    seen_input = False
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if seen_input:
                raise UnsupportedError(f"model: {name}.forward takes more than one input ({node.name})")
            seen_input = True
            index[node] = -1
            continue
        if node.op == "output":
            res = node.args[0]
            if not isinstance(res, torch.fx.Node) or res not in index or not ops or index[res] != len(ops) - 1:
                raise UnsupportedError(f"model: {name}.forward must return the last layer's output (one tensor)")
            break
        where = node.target if node.op == "call_module" else f"forward ({node.name})"
        if node.op == "get_attr":
            raise UnsupportedError(f"model.{node.target} (a parameter or buffer used directly in forward): not "
                                   f"supported; supported: {SUPPORTED}")
        tensors = [a for a in node.all_input_nodes if _is_tensor(a)]
        if _is_add(node):
            if len(tensors) != 2 or len(node.all_input_nodes) != 2:
                raise UnsupportedError(f"model: {where} adds a constant or a non-tensor: only the sum of two "
                                       "tensors (a residual join) is supported")
            a, b = (index[t] for t in tensors)
            shapes = [tuple(t.meta["tensor_meta"].shape) for t in tensors]
            if shapes[0] != shapes[1]:
                raise UnsupportedError(f"model: {where} adds tensors of shapes {list(shapes[0])} and "
                                       f"{list(shapes[1])}: broadcasting is not supported")
            ops.append(Op("add", f"{where}", None, tuple(node.meta["tensor_meta"].shape), (a, b)))
            index[node] = len(ops) - 1
            continue
        if len(tensors) > 1:
            raise UnsupportedError(f"model: {where} combines {len(tensors)} tensors "
                                   f"({', '.join(a.name for a in tensors)}): only residual adds of two tensors "
                                   "are supported (no concatenations, no products)")
        src = tensors[0] if tensors else None
        out_shape = tuple(node.meta["tensor_meta"].shape) if _is_tensor(node) else ()
        in_shape = tuple(src.meta["tensor_meta"].shape) if src is not None else ()
        kind, mod, path = _node_kind(gm, node, in_shape, out_shape)
        if kind == "size":
            continue
        if not _is_tensor(node):
            raise UnsupportedError(f"model: {where} does not give a tensor: not supported")
        if src is None:
            raise UnsupportedError(f"model: {where} reads no tensor: not supported")
        if kind is None:  # a no-op: its value is its input's
            index[node] = index[src]
            continue
        window = tuple(int(v) for v in in_shape[2:]) if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)) \
            else tuple(int(v) for v in np.broadcast_to(mod.kernel_size, (len(in_shape) - 2,))) if kind == "avgpool" \
            else ()
        ops.append(Op(kind, path, mod, out_shape, (index[src],), window))
        index[node] = len(ops) - 1
    return ops


def is_chain(ops: list[Op]) -> bool:
    """Every op reads the previous op's output (the first reads the graph input)."""
    return all(op.inputs == (i - 1,) for i, op in enumerate(ops))


def _is_add(node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in (operator.add, operator.iadd, torch.add)
    return node.op == "call_method" and node.target in ("add", "add_")


def _node_kind(gm: torch.fx.GraphModule, node: torch.fx.Node, in_shape: tuple[int, ...],
               out_shape: tuple[int, ...]) -> tuple[str | None, nn.Module | None, str]:
    """(kind or None for a no-op or 'size', the module, the path for messages) of one fx node."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return _module_kind(node.target, m), m, str(node.target)
    if node.op == "call_function":
        fn = node.target
        fname = f"{getattr(fn, '__module__', '') or ''}.{getattr(fn, '__name__', str(fn))}".lstrip(".")
        if fn in _RELU_FNS:
            return "relu", None, fname
        if fn is torch.flatten and _flatten_call(node, in_shape, out_shape):
            return "flatten", None, fname
        if fn is operator.getitem or fn is getattr:
            if node.args and not _is_tensor(node.args[0]):  # x.shape[0], x.size()[0]
                return "size", None, fname
        if fn in (F.dropout,):
            return None, None, fname
        raise UnsupportedError(f"model: {fname} (function, in forward, node {node.name}): not supported; "
                               f"supported: {SUPPORTED}")
    if node.op == "call_method":
        meth = str(node.target)
        if meth == "size" or (meth == "dim"):
            return "size", None, f"Tensor.{meth}"
        if meth in ("view", "reshape", "flatten") and _flatten_call(node, in_shape, out_shape):
            return "flatten", None, f"Tensor.{meth}"
        if meth == "relu":
            return "relu", None, "Tensor.relu"
        if meth == "contiguous":
            return None, None, "Tensor.contiguous"
        raise UnsupportedError(f"model: Tensor.{meth} (method, in forward, node {node.name}): not supported; "
                               f"supported: {SUPPORTED}")
    raise UnsupportedError(f"model: fx node {node.name} ({node.op}): not supported")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# chain of ops -> codesign's named layers
# ---------------------------------------------------------------------------------------------
@dataclass
class Layer:
    """One layer of the imported QuantNet: codesign ``name``, ``kind``, the user's op behind it (``src``:
    None for a functional op) and, for conv/linear, whether it keeps its bias (not when a BatchNorm follows)."""

    name: str
    kind: str
    src: Op
    of: str = ""
    bias: bool = True
    last: bool = False
    inputs: tuple[str, ...] = ()  # the layers it reads ("inp": the input quantizer)
    fold_bn: Op | None = None  # conv/linear: a BatchNorm folded into it (it feeds a residual add)
    raw: bool = False  # conv/linear: its accumulator goes to a residual add (not re-quantized by itself)
    signed: bool = True  # requant: a signed quantizer (an unsigned one after an average of ReLU outputs)


def _where(op: Op) -> str:
    return f"model.{op.path} ({_type_name(op.module)})" if op.module is not None else f"model: {op.path}"


def plan(ops: list[Op], input_shape: tuple[int, ...]) -> list[Layer]:
    """Name the chain's ops as codesign layers; refuse what :class:`QuantNet` cannot express."""
    ops = list(ops)
    # a flatten of an already flat tensor is a no-op
    shape = (1, *input_shape)
    kept = []
    for op in ops:
        if op.kind == "flatten" and len(shape) == 2:
            continue
        kept.append(op)
        shape = op.out_shape
    ops = kept
    # MaxPool then ReLU == ReLU then MaxPool (both monotone, elementwise vs. window max): bring the ReLU forward
    for i in range(len(ops) - 1):
        if ops[i].kind == "maxpool" and ops[i + 1].kind == "relu" and i > 0 and ops[i - 1].kind in ("conv", "bn"):
            ops[i], ops[i + 1] = ops[i + 1], ops[i]
    weights = [i for i, op in enumerate(ops) if op.kind in ("linear", "conv")]
    if not weights or ops[weights[-1]].kind != "linear" or weights[-1] != len(ops) - 1:
        tail = ops[-1] if ops else None
        raise UnsupportedError(
            "model: the last op must be an nn.Linear (the output layer; its output is not re-quantized)"
            + (f", got {_where(tail)}" if tail is not None else ", the model has no layers"))
    layers: list[Layer] = []
    n_conv = n_fc = 0
    owner = ""  # the conv/linear whose BatchNorm/ReLU may come next
    stage = ""  # what came after it: "", "bn", "relu"
    flattened = False
    for i, op in enumerate(ops):
        if op.kind in ("conv", "linear"):
            if owner and stage != "relu":
                raise UnsupportedError(f"{_where(ops[weights[weights.index(i) - 1]])}: a hidden layer needs a ReLU "
                                       "(after its BatchNorm, if any) before the next layer")
            if op.kind == "conv":
                if flattened:
                    raise UnsupportedError(f"{_where(op)}: a convolution after the flatten is not supported")
                n_conv += 1
                owner = f"conv{n_conv}"
            else:
                if len(layers) and not flattened and any(x.kind == "conv" for x in layers):
                    raise UnsupportedError(f"{_where(op)}: a Linear on a feature map needs a Flatten before it")
                n_fc += 1
                owner = f"fc{n_fc}"
            if op.kind == "linear" and len(op.out_shape) != 2:
                raise UnsupportedError(f"{_where(op)}: a Linear needs a flat (batch, features) input")
            layers.append(Layer(owner, op.kind, op, last=i == len(ops) - 1))
            stage = ""
        elif op.kind == "bn":
            if not owner or stage != "" or layers[-1].kind not in ("conv", "linear"):
                raise UnsupportedError(f"{_where(op)}: a BatchNorm must come right after a Linear/Conv")
            layers[-1].bias = False
            layers.append(Layer(f"bn{owner[4:]}" if owner.startswith("conv") else f"bn_fc{owner[2:]}", "bn", op,
                                of=owner))
            stage = "bn"
        elif op.kind == "relu":
            if not owner or stage == "relu":
                raise UnsupportedError(f"{_where(op)}: a ReLU must follow a Linear/Conv (or its BatchNorm)")
            layers.append(Layer(f"relu{owner[4:]}" if owner.startswith("conv") else f"relu_fc{owner[2:]}", "relu",
                                op, of=owner))
            stage = "relu"
        elif op.kind == "maxpool":
            if owner and stage != "relu":
                raise UnsupportedError(f"{_where(op)}: a pool between a layer and its ReLU is supported only as "
                                       "MaxPool directly before the ReLU")
            base = f"pool{n_conv}"
            name, k = base, 1
            while any(x.name == name for x in layers):
                k += 1
                name = f"{base}_{k}"
            layers.append(Layer(name, "maxpool", op))
        elif op.kind == "avgpool":
            if owner and stage != "relu":
                raise UnsupportedError(f"{_where(op)}: an average pool must read a quantized activation (after the "
                                       "ReLU)")
            name = f"avgpool{n_conv}"
            layers.append(Layer(name, "avgpool", op))
            layers.append(Layer(f"requant_{name}", "requant", op, of=name, signed=not owner))
        elif op.kind == "flatten":
            if flattened:
                raise UnsupportedError(f"{_where(op)}: a second flatten is not supported")
            flattened = True
            layers.append(Layer("flatten", "flatten", op))
    for i, ly in enumerate(layers):
        ly.inputs = (layers[i - 1].name if i else "inp",)
    return layers


def plan_graph(ops: list[Op], input_shape: tuple[int, ...]) -> list[Layer]:
    """Name the ops of a residual graph as codesign layers. Each residual ``add`` sums two tensors, each either a
    quantized activation (a ReLU's, the input's, a pooled or flattened one) or a Linear/Conv accumulator (whose
    BatchNorm, if any, is folded into its weights and bias: a sum of a BatchNorm output and another tensor is
    not a per-channel function of one accumulator, so it cannot become thresholds); the sum is re-quantized by
    the ReLU after it (``relu_add<k>``) or, without one, by a signed activation quantizer (``requant<k>``)."""
    cons: dict[int, list[int]] = {i: [] for i in range(-1, len(ops))}
    for j, op in enumerate(ops):
        for i in op.inputs:
            cons[i].append(j)
    if ops[-1].kind != "linear":
        raise UnsupportedError("model: the last op must be an nn.Linear (the output layer; its output is not "
                               f"re-quantized), got {_where(ops[-1])}")
    name: dict[int, str] = {-1: "inp"}  # op -> the layer holding its value
    quantized: dict[str, bool] = {"inp": True}
    unsigned: dict[str, bool] = {}  # quantized activations known to be >= 0 (ReLU outputs)
    layers: list[Layer] = []
    by_name: dict[str, Layer] = {}
    n_conv = n_fc = n_add = 0
    flattened = False

    def add_layer(ly: Layer, j: int, q: bool) -> None:
        layers.append(ly)
        by_name[ly.name] = ly
        name[j] = ly.name
        quantized[ly.name] = q

    def only(j: int, kind: str) -> int | None:
        return cons[j][0] if len(cons[j]) == 1 and ops[cons[j][0]].kind == kind else None

    for j, op in enumerate(ops):
        ins = tuple(name[i] for i in op.inputs)
        last = j == len(ops) - 1
        if op.kind in ("conv", "linear"):
            if not quantized[ins[0]]:
                raise UnsupportedError(f"{_where(op)}: reads an un-quantized tensor ({ins[0]}); a layer needs a ReLU "
                                       "or a residual add (re-quantized) before it")
            if op.kind == "conv" and flattened:
                raise UnsupportedError(f"{_where(op)}: a convolution after the flatten is not supported")
            if op.kind == "linear" and len(op.out_shape) != 2:
                raise UnsupportedError(f"{_where(op)}: a Linear needs a flat (batch, features) input")
            if op.kind == "conv":
                n_conv += 1
                lname = f"conv{n_conv}"
            else:
                n_fc += 1
                lname = f"fc{n_fc}"
            ly = Layer(lname, op.kind, op, last=last, inputs=ins)
            if not last:
                bn = only(j, "bn")
                after = bn if bn is not None else j
                if bn is not None and only(bn, "relu") is not None:
                    ly.bias = False  # BatchNorm kept, then thresholds
                elif only(after, "add") is not None:
                    ly.raw = True
                    if bn is not None:
                        ly.fold_bn = ops[bn]
                elif only(j, "relu") is None:
                    raise UnsupportedError(f"{_where(op)}: a hidden layer's output must go to one ReLU (after its "
                                           "BatchNorm, if any) or to one residual add")
            add_layer(ly, j, False)
        elif op.kind == "bn":
            src = ops[op.inputs[0]] if op.inputs[0] >= 0 else None
            owner = by_name.get(ins[0])
            if src is None or src.kind not in ("conv", "linear") or owner is None or len(cons[op.inputs[0]]) != 1:
                raise UnsupportedError(f"{_where(op)}: a BatchNorm must come right after a Linear/Conv (its only "
                                       "reader)")
            if owner.fold_bn is op:
                name[j] = owner.name  # folded: its value is the layer's
                continue
            add_layer(Layer(f"bn{owner.name[4:]}" if owner.kind == "conv" else f"bn_fc{owner.name[2:]}", "bn", op,
                            of=owner.name, inputs=ins), j, False)
        elif op.kind == "relu":
            prod = by_name.get(ins[0])
            if prod is None or quantized[ins[0]] or prod.kind not in ("conv", "linear", "bn", "add"):
                raise UnsupportedError(f"{_where(op)}: a ReLU must follow a Linear/Conv, its BatchNorm or a residual "
                                       "add")
            of = prod.of if prod.kind == "bn" else prod.name
            if prod.kind == "add":
                lname = f"relu_{prod.name}"
            else:
                lname = f"relu{of[4:]}" if of.startswith("conv") else f"relu_fc{of[2:]}"
            add_layer(Layer(lname, "relu", op, of=of, inputs=ins), j, True)
            unsigned[lname] = True
        elif op.kind == "add":
            for i, n in zip(op.inputs, ins, strict=True):
                ly = by_name.get(n)
                if not quantized[n] and not (ly is not None and ly.kind in ("conv", "linear") and ly.raw):
                    raise UnsupportedError(f"model: {op.path}: an add operand ({n}) must be a quantized activation "
                                           "or a Linear/Conv output (with its BatchNorm)")
                if i >= 0 and ly is not None and ly.raw and len(cons[i]) != 1:
                    raise UnsupportedError(f"model: {op.path}: {n}'s output is also read elsewhere")
            n_add += 1
            add = Layer(f"add{n_add}", "add", op, inputs=ins)
            add_layer(add, j, False)
            if only(j, "relu") is None:  # re-quantize the sum (signed) for everything that reads it
                add_layer(Layer(f"requant{n_add}", "requant", op, of=add.name, inputs=(add.name,)), j, True)
        elif op.kind == "maxpool":
            if not quantized[ins[0]]:
                raise UnsupportedError(f"{_where(op)}: in a residual graph a pool must read a quantized activation "
                                       "(after the ReLU)")
            base = f"pool{n_conv}"
            lname, k = base, 1
            while lname in by_name:
                k += 1
                lname = f"{base}_{k}"
            add_layer(Layer(lname, "maxpool", op, inputs=ins), j, True)
            unsigned[lname] = unsigned.get(ins[0], False)
        elif op.kind == "avgpool":
            if not quantized[ins[0]]:
                raise UnsupportedError(f"{_where(op)}: an average pool must read a quantized activation (after the "
                                       "ReLU)")
            lname = f"avgpool{n_conv}" if f"avgpool{n_conv}" not in by_name else f"avgpool{n_conv}_{j}"
            add_layer(Layer(lname, "avgpool", op, inputs=ins), j, False)
            add_layer(Layer(f"requant_{lname}", "requant", op, of=lname, inputs=(lname,),
                            signed=not unsigned.get(ins[0], False)), j, True)
        elif op.kind == "flatten":
            in_shape = ops[op.inputs[0]].out_shape if op.inputs[0] >= 0 else (1, *input_shape)
            if len(in_shape) == 2:  # already flat: a no-op
                name[j] = ins[0]
                continue
            if not quantized[ins[0]]:
                raise UnsupportedError(f"{_where(op)}: in a residual graph a flatten must read a quantized "
                                       "activation")
            flattened = True
            add_layer(Layer("flatten" if "flatten" not in by_name else f"flatten{j}", "flatten", op, inputs=ins),
                      j, True)
            unsigned[name[j]] = unsigned.get(ins[0], False)
    return layers


@dataclass
class Imported:
    """The user's module (float, eval mode), its op graph and codesign's layer plan for it."""

    module: nn.Module
    layers: list[Layer]
    n_outputs: int
    residual: bool = False  # not a chain: forks and residual adds

    def mapping(self) -> dict[str, str]:
        """codesign layer name -> the user's module path (or function)."""
        return {ly.name: ly.src.path for ly in self.layers}


def import_module(cfg: Config, input_shape: tuple[int, ...], weights: bool = True) -> Imported:
    """Instantiate, (with ``weights``) load, trace and plan ``cfg.model.module``."""
    mc = cfg.model
    if mc.input_shape is not None and tuple(mc.input_shape) != tuple(input_shape):
        raise ConfigError(f"model.input_shape: {list(mc.input_shape)} does not match the data's sample shape "
                          f"{list(input_shape)}")
    m = user_module(mc, weights=weights)
    ops = trace(m, tuple(input_shape))
    residual = not is_chain(ops)
    layers = (plan_graph if residual else plan)(ops, tuple(input_shape))
    names = [ly.name for ly in layers if ly.kind in ("conv", "linear")]
    for key, what in ((cfg.quant.layers, "quant.layers"), (mc.units, "model.units")):
        unknown = sorted(set(key) - set(names))
        if unknown:
            raise ConfigError(f"{what}: unknown layer(s) {', '.join(unknown)} (this model has {', '.join(names)})")
    last = layers[-1]
    if last.name in cfg.quant.layers and cfg.quant.layers[last.name].act is not None:
        raise ConfigError(f"quant.layers.{last.name}.act: {last.name} is the output layer; its output is not "
                          "re-quantized")
    if last.name in mc.units:
        raise ConfigError(f"model.units.{last.name}: {last.name} is the output layer (one unit per class)")
    for ly in layers:
        if ly.kind == "relu" and cfg.layer_act(ly.of).signed:
            where = f"quant.layers.{ly.of}.act" if ly.of in cfg.quant.layers else "quant.act"
            raise ConfigError(f"{where}.signed: {_where(ly.src)} is a ReLU; its activation quantizer must be "
                              "unsigned")
    return Imported(m, layers, int(last.src.module.out_features), residual)


# ---------------------------------------------------------------------------------------------
# QuantNet / GraphNet (quantized or float twin) and weight copy
# ---------------------------------------------------------------------------------------------
def widths(imp: Imported, input_shape: tuple[int, ...], units: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(input width, output width) of every layer: channels (or features) after ``model.units`` shrank some
    layers (pruning); a flatten multiplies its input channels by the original spatial size."""
    out: dict[str, int] = {"inp": int(input_shape[0])}
    res: dict[str, tuple[int, int]] = {}
    for ly in imp.layers:
        cin = out[ly.inputs[0]]
        if ly.kind == "conv":
            cout = units.get(ly.name, ly.src.module.out_channels)
        elif ly.kind == "linear":
            cout = units.get(ly.name, ly.src.module.out_features)
        elif ly.kind == "flatten":
            src = next((x for x in imp.layers if x.name == ly.inputs[0]), None)
            shape = src.src.out_shape if src is not None else (1, *input_shape)
            cout = cin * math.prod(shape[2:])
        else:
            cout = cin
        if ly.kind == "add" and out[ly.inputs[1]] != cin:
            raise ConfigError(f"model.units: {ly.name} adds {ly.inputs[0]} ({cin} units) and {ly.inputs[1]} "
                              f"({out[ly.inputs[1]]} units): layers joined by an add must keep the same units")
        out[ly.name] = cout
        res[ly.name] = (cin, cout)
    return res


def _conv_args(c: nn.Module, cin: int, cout: int) -> dict[str, Any]:
    return {"in_channels": cin, "out_channels": cout, "kernel_size": c.kernel_size, "stride": c.stride,
            "padding": c.padding}


def _quant_layer(cfg: Config, ly: Layer, cin: int, cout: int) -> nn.Module:
    m, n = ly.src.module, ly.name
    if ly.kind in ("conv", "linear"):
        bias = ly.bias or ly.fold_bn is not None
        kw: dict[str, Any] = {"weight_quant": quant.weight_quant(cfg.layer_weight(n)), "bias": bias,
                              "bias_quant": quant.bias_quant(cfg.layer_bias_bits(n)) if bias else None}
        rqt = bias and not ly.last and not ly.raw
        if ly.kind == "linear":
            return QuantLinear(cin, cout, **kw, return_quant_tensor=rqt)
        cls = QuantConv1d if isinstance(m, nn.Conv1d) else QuantConv2d
        return cls(**_conv_args(m, cin, cout), **kw, return_quant_tensor=rqt)
    if ly.kind == "relu":
        return QuantReLU(act_quant=quant.act_quant(cfg.layer_act(ly.of)), return_quant_tensor=True)
    if ly.kind == "requant":
        aq = cfg.quant.act.model_copy(update={"signed": ly.signed})
        return QuantIdentity(act_quant=quant.act_quant(aq, "quant.act"), return_quant_tensor=True)
    return _plain_layer(ly, cout)


def _float_layer(ly: Layer, cin: int, cout: int) -> nn.Module:
    m = ly.src.module
    bias = ly.bias or ly.fold_bn is not None
    if ly.kind == "linear":
        return nn.Linear(cin, cout, bias=bias)
    if ly.kind == "conv":
        cls = nn.Conv1d if isinstance(m, nn.Conv1d) else nn.Conv2d
        return cls(**_conv_args(m, cin, cout), bias=bias)
    if ly.kind == "relu":
        six = isinstance(m, nn.ReLU6) or (m is None and ly.src.path.endswith("relu6"))
        return nn.ReLU6() if six else nn.ReLU()
    if ly.kind == "requant":
        return nn.Identity()
    return _plain_layer(ly, cout)


def _plain_layer(ly: Layer, width: int) -> nn.Module:
    m = ly.src.module
    if ly.kind == "bn":
        return type(m)(width, eps=m.eps, momentum=m.momentum)
    if ly.kind == "maxpool":
        return type(m)(m.kernel_size, m.stride)
    if ly.kind == "add":
        return quant.ResidualAdd()
    if ly.kind == "avgpool":  # a global pool's window is its input's whole map (Op.window)
        return quant.AvgPool(len(ly.src.out_shape) - 2, ly.src.window)
    return nn.Flatten()


def build(cfg: Config, input_shape: tuple[int, ...], n_classes: int, quantized: bool = True) -> quant.QuantNet:
    """codesign's QuantNet (a chain) or GraphNet (residual) for ``cfg.model.module`` (random weights: see
    :func:`copy_weights`), with the layer widths of ``model.units``; ``quantized=False`` gives the float twin with
    the same layer and parameter names."""
    input_shape = tuple(int(v) for v in input_shape)
    imp = import_module(cfg, input_shape, weights=False)
    if imp.n_outputs != n_classes:
        raise ConfigError(f"model.module: the last layer ({_where(imp.layers[-1].src)}) has {imp.n_outputs} outputs, "
                          f"the data has {n_classes} classes")
    w = widths(imp, input_shape, dict(cfg.model.units))
    if quantized:
        inp: nn.Module = QuantIdentity(act_quant=quant.input_quant(cfg.quant.input), return_quant_tensor=True)
        layers = [(ly.name, _quant_layer(cfg, ly, *w[ly.name])) for ly in imp.layers]
    else:
        inp = nn.Identity()
        layers = [(ly.name, _float_layer(ly, *w[ly.name])) for ly in imp.layers]
    all_layers = [*quant._pre(cfg), ("inp", inp), *layers]
    if imp.residual:
        return quant.GraphNet(all_layers, {ly.name: ly.inputs for ly in imp.layers}, input_shape, n_classes)
    return quant.QuantNet(all_layers, input_shape, n_classes)


@torch.no_grad()
def copy_weights(imp: Imported, net: nn.Module) -> None:
    """Copy the user's float parameters (and BatchNorm statistics) into ``net`` (quantized or float twin). A
    conv/linear bias before a BatchNorm is folded into the BatchNorm's running mean (exact in real arithmetic); a
    BatchNorm before a residual add is folded into the layer's weights and bias (``Layer.fold_bn``)."""
    pending_bias: torch.Tensor | None = None
    for ly in imp.layers:
        src, dst = ly.src.module, getattr(net, ly.name)
        if ly.kind in ("conv", "linear"):
            weight = src.weight.detach().clone()
            bias = src.bias.detach().clone() if src.bias is not None else torch.zeros(weight.shape[0])
            if ly.fold_bn is not None:
                bn = ly.fold_bn.module
                k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                weight = weight * k.view(-1, *([1] * (weight.dim() - 1)))
                bias = bn.bias + (bias - bn.running_mean) * k
            dst.weight.copy_(weight)
            pending_bias = None
            if dst.bias is not None:
                dst.bias.copy_(bias)
            elif src.bias is not None:
                pending_bias = bias
        elif ly.kind == "bn":
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
            mean = src.running_mean.clone()
            if pending_bias is not None:
                mean -= pending_bias
            dst.running_mean.copy_(mean)
            dst.running_var.copy_(src.running_var)
            dst.num_batches_tracked.copy_(src.num_batches_tracked)
            pending_bias = None


def float_twin(cfg: Config, input_shape: tuple[int, ...], n_classes: int) -> tuple[Imported, quant.QuantNet]:
    """The user's module with its weights, and codesign's float twin of it holding the same weights."""
    imp = import_module(cfg, tuple(input_shape), weights=True)
    twin = build(cfg, input_shape, n_classes, quantized=False)
    copy_weights(imp, twin)
    return imp, twin.eval()


# ---------------------------------------------------------------------------------------------
# train stage for imported models (qat / ptq)
# ---------------------------------------------------------------------------------------------
def _bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def calibrate(model: quant.QuantNet, x: np.ndarray, batches: int, batch_size: int) -> int:
    """Post-training calibration of the activation scales (Brevitas ``calibration_mode``: quantization off, the
    scale statistics averaged over the batches, then turned into the scale parameter). BatchNorm keeps the
    imported running statistics. Returns the number of samples seen."""
    from brevitas.graph.calibrate import calibration_mode

    xt = torch.as_tensor(x, dtype=torch.float32)
    seen = 0
    model.eval()
    with calibration_mode(model):
        _bn_eval(model)
        for i in range(batches):
            xb = xt[i * batch_size:(i + 1) * batch_size]
            if len(xb) == 0:
                break
            model(xb)
            seen += len(xb)
    model.eval()
    return seen


def train_imported(cfg: Config, ds, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The train stage for ``model.module``: same return as :func:`codesign.train.train_model`."""
    from codesign import train

    tc = cfg.train
    train.seed_everything(cfg.seed)
    model = build(cfg, ds.input_shape, ds.n_classes, quantized=True)  # validates before anything runs
    imp, float_model = float_twin(cfg, ds.input_shape, ds.n_classes)
    history: dict[str, Any] = {"float": [], "qat": [], "float_source": "imported", "method": cfg.quant.method,
                               "imported_layers": imp.mapping()}
    history["accuracy_float"] = train.accuracy(imp.module, ds.x_test, ds.y_test)
    twin_out, user_out = train.predict(float_model, ds.x_test), train.predict(imp.module, ds.x_test)
    history["float_twin_max_abs_diff"] = float(np.max(np.abs(twin_out - user_out))) if len(ds.x_test) else 0.0
    if tc.float_epochs > 0:
        history["float"] = train._fit(float_model, ds, cfg, tc.float_epochs, cfg.seed, "float", progress)
        history["accuracy_float_finetuned"] = train.accuracy(float_model, ds.x_test, ds.y_test)
    train.seed_everything(cfg.seed + 1)
    if cfg.quant.method == "ptq":
        from codesign import ptq

        info = ptq.run(cfg, model, float_model, ds, cfg.seed)
        history["calibration_samples"] = info.pop("calibration_samples")
        history["ptq"] = info
    else:
        missing, _ = model.load_state_dict(float_model.state_dict(), strict=False)
        assert not any(k.endswith(("weight", "bias")) and "quant" not in k for k in missing), missing
        history["qat"] = train._fit(model, ds, cfg, tc.epochs, cfg.seed + 1, "QAT", progress)
    model.eval()
    history["accuracy_quantized"] = train.accuracy(model, ds.x_test, ds.y_test)
    object.__setattr__(model, "float_model", float_model)
    return model, history


# ---------------------------------------------------------------------------------------------
# data: npz
# ---------------------------------------------------------------------------------------------
def load_npz(cfg: DataConfig, seed: int = 0):
    """``data: {dataset: npz, path: d.npz}``: x_train/y_train/x_test/y_test; ``val_fraction`` of the training
    set (a seeded permutation, as for the other datasets) is the validation split."""
    from codesign.data import Dataset

    assert cfg.path is not None
    p = Path(cfg.path)
    if not p.is_file():
        raise ConfigError(f"data.path: file {cfg.path} not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in z.files}
    except Exception as e:
        raise ConfigError(f"data.path: {cfg.path} is not a readable .npz ({e})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ConfigError(f"data.path: {cfg.path} lacks array(s) {', '.join(missing)}")
    x_tr, y_tr = arrays["x_train"].astype(np.float32), arrays["y_train"]
    x_te, y_te = arrays["x_test"].astype(np.float32), arrays["y_test"]
    for xn, yn, x, y in (("x_train", "y_train", x_tr, y_tr), ("x_test", "y_test", x_te, y_te)):
        if len(x) != len(y):
            raise ConfigError(f"data.path: {xn} has {len(x)} samples, {yn} {len(y)}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise ConfigError(f"data.path: {yn} must be a 1-D array of class indices >= 0")
        if not np.all(np.isfinite(x)):
            raise ConfigError(f"data.path: {xn} has NaN or inf values")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ConfigError(f"data.path: x_train samples are {x_tr.shape[1:]}, x_test samples {x_te.shape[1:]}")
    n_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0)) + 1)
    idx = np.random.default_rng(seed).permutation(len(x_tr))
    n_val = int(round(len(x_tr) * cfg.val_fraction))
    va, tr = idx[:n_val], idx[n_val:]
    y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
    return Dataset("npz", x_tr[tr], y_tr[tr], x_tr[va], y_tr[va], x_te, y_te, n_classes=n_classes)
