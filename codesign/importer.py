"""Bring your own PyTorch model: a float ``nn.Module`` from the user's ``.py`` file, mapped onto codesign's layers.

``model: {module: "net.py:Net", weights: "net.pt", input_shape: [64], kwargs: {}}`` (paths relative to the
YAML's folder; :func:`codesign.config.load` makes them absolute). The module is traced with
``torch.fx.symbolic_trace``; the traced graph must be a chain (one input, every op reads the previous op's
output). Its ops are mapped, in order, onto the layers :class:`codesign.quant.QuantNet` builds for the zoo
models, with codesign's own quantizers (``quant:``): Linear / Conv1d / Conv2d -> ``QuantLinear`` /
``QuantConv*d`` (``fc<i>`` / ``conv<i>``), BatchNorm1d/2d kept as a layer (``bn<i>`` / ``bn_fc<i>``; the
bias of the conv/linear before it is folded into its running mean, exactly as ``model.batchnorm`` zoo models
have bias-less layers there), ReLU / ReLU6 -> ``QuantReLU`` (``relu<i>`` / ``relu_fc<i>``, the layer's
unsigned activation quantizer; a ReLU6's upper clamp becomes that quantizer's range, not 6),
MaxPool1d/2d (``pool<i>``), Flatten (module, ``torch.flatten(x, 1)``,
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

Not yet: residual adds / concatenations (refused: the graph is not a chain), grouped or dilated convs,
pools with stride != kernel or padding, AvgPool, activations other than ReLU/ReLU6, a ReLU-less hidden
layer, a last layer other than Linear.
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
             "nn.MaxPool2d, nn.Flatten (or torch.flatten / x.view(x.size(0), -1)), nn.Dropout, nn.Identity")
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
    """One op of the traced chain: ``kind`` linear/conv/bn/relu/maxpool/flatten; ``path`` the user's module
    path (or the function) for messages; ``module`` the user's module (None for functions)."""

    kind: str
    path: str
    module: nn.Module | None
    out_shape: tuple[int, ...]


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
    """The chain of ops of ``module`` (torch.fx), with output shapes from a batch-1 zero input."""
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
    cur: torch.fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if cur is not None:
                raise UnsupportedError(f"model: {name}.forward takes more than one input ({node.name})")
            cur = node
            continue
        if node.op == "output":
            if node.args[0] is not cur:
                raise UnsupportedError(f"model: {name}.forward must return the last layer's output (one tensor)")
            break
        where = node.target if node.op == "call_module" else f"forward ({node.name})"
        if node.op == "get_attr":
            raise UnsupportedError(f"model.{node.target} (a parameter or buffer used directly in forward): not "
                                   f"supported; supported: {SUPPORTED}")
        tensors = [a for a in node.all_input_nodes if _is_tensor(a)]
        if len(tensors) > 1:
            raise UnsupportedError(f"model: {where} combines {len(tensors)} tensors "
                                   f"({', '.join(a.name for a in tensors)}): the graph is not a chain (residual adds "
                                   "and concatenations are not supported yet)")
        if tensors and tensors[0] is not cur:
            raise UnsupportedError(f"model: {where} reads {tensors[0].name}, not the previous op's output "
                                   f"({cur.name if cur is not None else 'none'}): the graph is not a chain "
                                   "(branches and residual connections are not supported yet)")
        out_shape = tuple(node.meta["tensor_meta"].shape) if _is_tensor(node) else ()
        in_shape = tuple(cur.meta["tensor_meta"].shape) if cur is not None and _is_tensor(cur) else ()
        kind, mod, path = _node_kind(gm, node, in_shape, out_shape)
        if kind == "size":
            continue
        if not _is_tensor(node):
            raise UnsupportedError(f"model: {where} does not give a tensor: not supported")
        if kind is not None:
            ops.append(Op(kind, path, mod, out_shape))
        cur = node
    return ops


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
        elif op.kind == "flatten":
            if flattened:
                raise UnsupportedError(f"{_where(op)}: a second flatten is not supported")
            flattened = True
            layers.append(Layer("flatten", "flatten", op))
    return layers


@dataclass
class Imported:
    """The user's module (float, eval mode), its op chain and codesign's layer plan for it."""

    module: nn.Module
    layers: list[Layer]
    n_outputs: int

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
    layers = plan(trace(m, tuple(input_shape)), tuple(input_shape))
    names = [ly.name for ly in layers if ly.kind in ("conv", "linear")]
    unknown = sorted(set(cfg.quant.layers) - set(names))
    if unknown:
        raise ConfigError(f"quant.layers: unknown layer(s) {', '.join(unknown)} (this model has {', '.join(names)})")
    last = layers[-1]
    if last.name in cfg.quant.layers and cfg.quant.layers[last.name].act is not None:
        raise ConfigError(f"quant.layers.{last.name}.act: {last.name} is the output layer; its output is not "
                          "re-quantized")
    for ly in layers:
        if ly.kind == "relu" and cfg.layer_act(ly.of).signed:
            where = f"quant.layers.{ly.of}.act" if ly.of in cfg.quant.layers else "quant.act"
            raise ConfigError(f"{where}.signed: {_where(ly.src)} is a ReLU; its activation quantizer must be "
                              "unsigned")
    return Imported(m, layers, int(last.src.module.out_features))


# ---------------------------------------------------------------------------------------------
# QuantNet (quantized or float twin) and weight copy
# ---------------------------------------------------------------------------------------------
def _conv_args(c: nn.Module) -> dict[str, Any]:
    return {"in_channels": c.in_channels, "out_channels": c.out_channels, "kernel_size": c.kernel_size,
            "stride": c.stride, "padding": c.padding}


def _quant_layer(cfg: Config, ly: Layer) -> nn.Module:
    m, n = ly.src.module, ly.name
    if ly.kind in ("conv", "linear"):
        kw: dict[str, Any] = {"weight_quant": quant.weight_quant(cfg.layer_weight(n)), "bias": ly.bias,
                              "bias_quant": quant.bias_quant(cfg.layer_bias_bits(n)) if ly.bias else None}
        if ly.kind == "linear":
            return QuantLinear(m.in_features, m.out_features, **kw, return_quant_tensor=not ly.last and ly.bias)
        cls = QuantConv1d if isinstance(m, nn.Conv1d) else QuantConv2d
        return cls(**_conv_args(m), **kw, return_quant_tensor=ly.bias)
    if ly.kind == "relu":
        return QuantReLU(act_quant=quant.act_quant(cfg.layer_act(ly.of)), return_quant_tensor=True)
    return _plain_layer(ly)


def _float_layer(ly: Layer) -> nn.Module:
    m = ly.src.module
    if ly.kind == "linear":
        return nn.Linear(m.in_features, m.out_features, bias=ly.bias)
    if ly.kind == "conv":
        cls = nn.Conv1d if isinstance(m, nn.Conv1d) else nn.Conv2d
        return cls(**_conv_args(m), bias=ly.bias)
    if ly.kind == "relu":
        six = isinstance(m, nn.ReLU6) or (m is None and ly.src.path.endswith("relu6"))
        return nn.ReLU6() if six else nn.ReLU()
    return _plain_layer(ly)


def _plain_layer(ly: Layer) -> nn.Module:
    m = ly.src.module
    if ly.kind == "bn":
        return type(m)(m.num_features, eps=m.eps, momentum=m.momentum)
    if ly.kind == "maxpool":
        return type(m)(m.kernel_size, m.stride)
    return nn.Flatten()


def build(cfg: Config, input_shape: tuple[int, ...], n_classes: int, quantized: bool = True) -> quant.QuantNet:
    """codesign's QuantNet for ``cfg.model.module`` (random weights: see :func:`copy_weights`); ``quantized=False``
    gives the float twin with the same layer and parameter names."""
    input_shape = tuple(int(v) for v in input_shape)
    imp = import_module(cfg, input_shape, weights=False)
    if imp.n_outputs != n_classes:
        raise ConfigError(f"model.module: the last layer ({_where(imp.layers[-1].src)}) has {imp.n_outputs} outputs, "
                          f"the data has {n_classes} classes")
    if quantized:
        inp: nn.Module = QuantIdentity(act_quant=quant.input_quant(cfg.quant.input), return_quant_tensor=True)
        layers = [(ly.name, _quant_layer(cfg, ly)) for ly in imp.layers]
    else:
        inp = nn.Identity()
        layers = [(ly.name, _float_layer(ly)) for ly in imp.layers]
    return quant.QuantNet([*quant._pre(cfg), ("inp", inp), *layers], input_shape, n_classes)


@torch.no_grad()
def copy_weights(imp: Imported, net: nn.Module) -> None:
    """Copy the user's float parameters (and BatchNorm statistics) into ``net`` (quantized or float twin). A
    conv/linear bias before a BatchNorm is folded into the BatchNorm's running mean (exact in real arithmetic)."""
    pending_bias: torch.Tensor | None = None
    for ly in imp.layers:
        src, dst = ly.src.module, getattr(net, ly.name)
        if ly.kind in ("conv", "linear"):
            dst.weight.copy_(src.weight)
            pending_bias = None
            if src.bias is not None:
                if ly.bias:
                    dst.bias.copy_(src.bias)
                else:
                    pending_bias = src.bias.detach().clone()
            elif ly.bias:
                dst.bias.zero_()
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
