"""Brevitas quantizers and the model builders (mlp / cnn1d / cnn2d).

By default every quantizer has a power-of-two scale and a zero zero-point, so every tensor of the exported
QONNX graph is ``integer code * 2**k``; the ``float`` weight scheme, ``act.scale: float`` and BatchNorm
(``model.batchnorm``) add float scales and float epilogues, which the RTL realizes as integer thresholds.

- input: optional float pre-processing ``x * a + b`` (``model.input_affine``, module ``pre``: exported as
  ``Mul`` + ``Add``, run on the host), then ``QuantIdentity`` with a signed (``quant.input``) fixed-point
  quantizer whose scale is a constant ``2**-(bits-1)`` (signed) / ``2**-bits`` (unsigned): the datasets are
  scaled to [-1, 1]; ``bits: 1, signed: true`` is a bipolar (+-1) input.
- weights (``cfg.layer_weight(name)``):
  ``fixed``: n-bit signed (narrow range by default) integers times a po2 scale from the max |w|
  statistic (Brevitas ``Int8WeightPerTensorFixedPoint`` with the bit width and rounding changed);
  ``ternary``: the same with 2 bits, narrow range ({0, +-2^k});
  ``float``: the same with a float scale (Brevitas ``Int8WeightPerTensorFloat``); ``per_channel: true``
  gives one scale per output channel (``*PerChannelFixedPoint`` / ``*PerChannelFloat``);
  ``binary``: +-1 (Brevitas ``SignedBinaryWeightPerTensorConst`` with scale 1: sign with a
  straight-through estimator, latent weights clipped in place to [-1, 1] as in BNN; exported as
  ``BipolarQuant``);
  ``pot``: every weight is 0 or +-2^e (:class:`PotWeightQuant`, a straight-through quantizer that
  reports itself as an integer quantizer on a 2^emin grid, so it exports as a plain QONNX ``Quant``
  node with bit width :func:`pot_int_bits`).
- bias: Brevitas ``IntBias`` with ``cfg.layer_bias_bits(name)`` bits and scale = input scale x weight
  scale (the accumulator scale). With ``model.batchnorm`` the hidden layers have no bias (BatchNorm's
  beta is the bias) and a ``BatchNorm1d``/``BatchNorm2d`` (``bn<i>`` / ``bn_fc<i>``) sits between each
  hidden layer and its activation; it is exported as ``BatchNormalization``, not folded.
- hidden activations (``cfg.layer_act(name)``): unsigned: ``QuantReLU`` with an unsigned quantizer;
  signed: ``QuantIdentity`` with a signed quantizer (no ReLU: the clamp is the non-linearity); 1-bit
  signed: bipolar sign (Brevitas ``SignedBinaryActPerTensorConst``, exported as ``BipolarQuant``). The
  scale is a learned power of two (``act.scale: po2``) or a learned float (``float``), initialised from
  runtime statistics; the bipolar scale is the constant 1.
- the last layer's output is not re-quantized: it stays at the accumulator scale.

Layer names are stable: ``pre`` (pre-processing, if any), ``inp`` (input quantizer), ``conv1, conv2, ...``
with ``bn<i>``/``relu<i>``/``pool<i>``, ``flatten``, ``fc1, fc2, ...`` with ``bn_fc<i>``/``relu_fc<i>``
(``relu*`` names the activation quantizer even where it is not a ReLU); per-layer overrides in
``quant.layers`` use ``conv<i>``/``fc<i>``.

Power-of-two code (``pot``, ``bits = b``): one sign bit, and ``2**(b-1)`` magnitude codes: zero plus
``n_exp = 2**(b-1) - 1`` consecutive exponents ``emin .. emax``. Per tensor,
``emax = floor(log2(4/3 * max|w|))`` (nearest po2 of the max), ``emin = emax - n_exp + 1``. A weight
rounds to the nearest of {0, 2^emin, ..., 2^emax} in the linear domain (ties to the larger).
On the integer grid ``2**emin`` the codes reach ``2**(n_exp-1)``, i.e. a signed narrow integer of
``pot_int_bits(b) = n_exp + 1`` bits (b=2: 2, b=3: 4, b=4: 8, b=5: 16 bits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from brevitas.core.function_wrapper import TensorClamp
from brevitas.core.scaling import ScalingImplType
from brevitas.inject.enum import FloatToIntImplType
from brevitas.nn import QuantConv1d, QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from brevitas.quant.scaled_int import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    IntBias,
    Uint8ActPerTensorFloat,
)
from torch import nn

from codesign.config import ActQuant, Config, WeightQuant
from codesign.errors import ConfigError, UnsupportedError

#: Largest integer bit width of a po2 weight grid we accept (execute_onnx computes in float32).
MAX_POT_INT_BITS = 16
#: Steps of runtime statistics before an activation scale becomes a learned parameter.
COLLECT_STATS_STEPS = 50

_ROUNDING = {
    "ROUND": FloatToIntImplType.ROUND,
    "FLOOR": FloatToIntImplType.FLOOR,
    "CEIL": FloatToIntImplType.CEIL,
    "ROUND_TO_ZERO": FloatToIntImplType.ROUND_TO_ZERO,
}


def _rounding(mode: str, where: str) -> FloatToIntImplType:
    if mode not in _ROUNDING:
        raise UnsupportedError(
            f"{where}.rounding: {mode!r} is not implemented by Brevitas (use one of {', '.join(_ROUNDING)})")
    return _ROUNDING[mode]


# ---------------------------------------------------------------------------------------------
# power-of-two weights
# ---------------------------------------------------------------------------------------------
def pot_n_exp(bits: int) -> int:
    """Number of exponents of a ``bits``-wide po2 code (sign + magnitude code incl. zero)."""
    return 2 ** (bits - 1) - 1


def pot_int_bits(bits: int) -> int:
    """Signed integer width of the po2 grid on the scale ``2**emin``."""
    return pot_n_exp(bits) + 1


def pot_quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Round ``w`` onto {0, +-2^emin..2^emax}; return (quantized values, scale 2^emin). No gradient."""
    n_exp = pot_n_exp(bits)
    with torch.no_grad():
        wmax = w.abs().max()
        if not torch.isfinite(wmax) or wmax <= 0:
            emax = torch.tensor(0.0, dtype=w.dtype, device=w.device)
        else:
            # clamp so that 2^emin stays a normal float32 (tiny weight tensors would underflow to 0)
            emax = torch.clamp(torch.floor(torch.log2(wmax * (4.0 / 3.0))), min=-100.0)
        emin = emax - (n_exp - 1)
        a = w.abs()
        e = torch.floor(torch.log2(torch.clamp(a, min=torch.finfo(w.dtype).tiny) * (4.0 / 3.0)))
        e = torch.clamp(e, max=emax)
        mag = torch.where(e >= emin, torch.exp2(e), torch.zeros_like(a))
        # below 2^emin: nearest of {0, 2^emin}
        lo = torch.exp2(emin)
        mag = torch.where((e < emin) & (a >= lo / 2), lo, mag)
        q = torch.sign(w) * mag
    return q, torch.exp2(emin)


class _PotSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, q):  # noqa: D401
        return q

    @staticmethod
    def backward(ctx, g):
        return g, None


class PotTensorQuant(nn.Module):
    """Brevitas ``tensor_quant`` for po2 weights: returns ``(value, scale, zero_point, bit_width)``."""

    def __init__(self, pot_bits: int):
        super().__init__()
        self.pot_bits = int(pot_bits)
        self.int_quant = _IntQuantView()
        #: INQ (training only): boolean mask of the weights already quantized; the others stay float.
        self.inq_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor):
        q, scale = pot_quantize(x, self.pot_bits)
        if self.inq_mask is not None and self.inq_mask.shape == x.shape:
            q = torch.where(self.inq_mask, q, x.detach())
        y = _PotSTE.apply(x, q)
        return (y, scale.to(x.dtype), torch.zeros((), dtype=x.dtype, device=x.device),
                torch.tensor(float(pot_int_bits(self.pot_bits)), device=x.device))


class _IntQuantView(nn.Module):
    """Brevitas' weight proxy looks up ``tensor_quant.int_quant.input_view_impl``."""

    def __init__(self):
        super().__init__()
        self.input_view_impl = nn.Identity()


class PotWeightQuant(Int8WeightPerTensorFixedPoint):
    """Power-of-two weights (0 or +-2^e); exported as an integer ``Quant`` on the 2^emin grid."""

    tensor_quant = PotTensorQuant
    pot_bits = 4
    narrow_range = True
    signed = True


def is_pot_quantizer(q) -> bool:
    return isinstance(q, type) and issubclass(q, PotWeightQuant)


# ---------------------------------------------------------------------------------------------
# quantizer factories
# ---------------------------------------------------------------------------------------------
#: (float scale, per channel) -> Brevitas integer weight quantizer
_WEIGHT_BASE = {
    (False, False): Int8WeightPerTensorFixedPoint, (False, True): Int8WeightPerChannelFixedPoint,
    (True, False): Int8WeightPerTensorFloat, (True, True): Int8WeightPerChannelFloat,
}
#: (signed, float scale) -> Brevitas activation quantizer (scale from runtime statistics, then learned)
_ACT_BASE = {
    (False, False): Uint8ActPerTensorFixedPoint, (True, False): Int8ActPerTensorFixedPoint,
    (False, True): Uint8ActPerTensorFloat, (True, True): Int8ActPerTensorFloat,
}


def weight_quant(wq: WeightQuant, where: str = "quant.weight"):
    """Brevitas weight quantizer class for a :class:`WeightQuant` config."""
    if wq.scheme == "pot":
        ib = pot_int_bits(wq.bits)
        if ib > MAX_POT_INT_BITS:
            raise ConfigError(
                f"{where}.bits: a {wq.bits}-bit power-of-two code spans {pot_n_exp(wq.bits)} exponents, "
                f"an integer grid of {ib} bits (max {MAX_POT_INT_BITS}); use bits <= 5")
        return PotWeightQuant.let(pot_bits=wq.bits, bit_width=ib)
    if wq.scheme == "binary":
        return SignedBinaryWeightPerTensorConst.let(scaling_const=1.0)
    if wq.scheme in ("fixed", "ternary", "float"):
        bits = 2 if wq.scheme == "ternary" else wq.bits
        narrow = True if wq.scheme == "ternary" else wq.narrow
        if bits == 2 and not narrow:
            raise ConfigError(f"{where}: 2-bit {wq.scheme} weights need narrow: true (codes -1, 0, 1)")
        base = _WEIGHT_BASE[(wq.scheme == "float", wq.per_channel)]
        return base.let(bit_width=bits, narrow_range=narrow, float_to_int_impl_type=_rounding(wq.rounding, where))
    raise UnsupportedError(f"{where}.scheme: {wq.scheme!r} weights are not supported")  # pragma: no cover


def act_quant(aq: ActQuant, where: str = "quant.act"):
    """Activation quantizer: bipolar sign (1-bit signed), else unsigned (after a ReLU) or signed fixed point
    with a power-of-two (``scale: po2``) or float (``scale: float``) scale, learned (``learned``: Brevitas
    ``PARAMETER_FROM_STATS``) or following the running statistics (``STATS``)."""
    if aq.bipolar:
        return SignedBinaryActPerTensorConst
    base = _ACT_BASE[(aq.signed, aq.scale == "float")]
    q = base.let(bit_width=aq.bits, narrow_range=aq.narrow, collect_stats_steps=COLLECT_STATS_STEPS,
                 float_to_int_impl_type=_rounding(aq.rounding, where))
    return q if aq.learned else q.let(scaling_impl_type=ScalingImplType.STATS)


def input_quant(aq: ActQuant, where: str = "quant.input"):
    """Input quantizer: constant po2 scale covering [-1, 1) (signed) or [0, 1) (unsigned); 1-bit signed:
    bipolar sign (+-1)."""
    if aq.scale != "po2":
        raise ConfigError(f"{where}.scale: the input quantizer has a constant power-of-two scale (got {aq.scale!r})")
    if aq.bipolar:
        return SignedBinaryActPerTensorConst
    base = Int8ActPerTensorFixedPoint if aq.signed else Uint8ActPerTensorFixedPoint
    return base.let(bit_width=aq.bits, narrow_range=aq.narrow, scaling_impl_type=ScalingImplType.CONST,
                    scaling_const=1.0, max_val=1.0, min_val=-1.0,
                    float_to_int_impl_type=_rounding(aq.rounding, where))


def bias_quant(bits: int):
    return IntBias.let(bit_width=bits, tensor_clamp_impl=TensorClamp)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
class QuantNet(nn.Module):
    """A sequential quantized network with named layers (see module docstring)."""

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], input_shape, n_classes: int):
        super().__init__()
        self.order = [n for n, _ in layers]
        for n, m in layers:
            self.add_module(n, m)
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes

    def forward(self, x, return_features: bool = False):
        feats = {}
        for n in self.order:
            x = getattr(self, n)(x)
            if return_features:
                feats[n] = x
        if hasattr(x, "value"):
            x = x.value
        return (x, feats) if return_features else x

    def weight_layers(self) -> list[str]:
        return [n for n in self.order if n.startswith(("fc", "conv"))]

    def input_of(self, name: str) -> str:
        """The layer whose output ``name`` reads (a chain: the previous one)."""
        return self.order[self.order.index(name) - 1]

    def pot_layers(self) -> list[str]:
        out = []
        for n in self.weight_layers():
            proxy = getattr(getattr(self, n), "weight_quant", None)
            if isinstance(getattr(proxy, "tensor_quant", None), PotTensorQuant):
                out.append(n)
        return out


def _value(t):
    return t.value if hasattr(t, "value") else t


class ResidualAdd(nn.Module):
    """``a + b`` of two tensors (a quantized activation as its dequantized value): a residual join; the layer
    after it re-quantizes the sum."""

    def forward(self, a, b):
        return _value(a) + _value(b)


class AvgPool(nn.Module):
    """Average pooling of a quantized activation's values over ``window`` (stride = window); the layer after it
    re-quantizes. Exported as an ``AveragePool`` node."""

    def __init__(self, dims: int, window: Sequence[int]):
        super().__init__()
        self.dims, self.window = dims, tuple(int(v) for v in window)

    def forward(self, x):
        fn = torch.nn.functional.avg_pool2d if self.dims == 2 else torch.nn.functional.avg_pool1d
        return fn(_value(x), self.window)


class GraphNet(QuantNet):
    """A QuantNet that forks and re-joins (residual adds): ``inputs[name]`` lists the layers a layer reads (a
    layer not listed reads the previous one, as in a chain). Pruning sees its dataflow through
    :meth:`prune_consumers`, :attr:`coupled_groups` (layers whose outputs meet in an add keep the same units) and
    :meth:`prunable` (a layer coupled with the network input cannot shrink)."""

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], inputs: dict[str, Sequence[str]], input_shape,
                 n_classes: int):
        super().__init__(layers, input_shape, n_classes)
        self.inputs = {n: tuple(v) for n, v in inputs.items()}

    def forward(self, x, return_features: bool = False):
        vals: dict[str, Any] = {}
        prev = None
        for n in self.order:
            ins = self.inputs.get(n)
            args = [vals[i] for i in ins] if ins else [x if prev is None else vals[prev]]
            vals[n] = getattr(self, n)(*args)
            prev = n
        out = _value(vals[self.order[-1]])
        return (out, vals) if return_features else out

    def input_of(self, name: str) -> str:
        ins = self.inputs.get(name)
        return ins[0] if ins else super().input_of(name)

    def _readers(self) -> dict[str, list[str]]:
        readers: dict[str, list[str]] = {n: [] for n in self.order}
        for i, n in enumerate(self.order[1:], 1):
            for src in self.inputs.get(n) or (self.order[i - 1],):
                readers[src].append(n)
        return readers

    def _sources(self, name: str) -> set[str]:
        """Weight layers (and 'inp') whose units ``name``'s channels are: through BatchNorm/ReLU/pool/flatten/
        re-quantization, and both operands of an add."""
        if name in self.weight_layers() or name == "inp":
            return {name}
        ins = self.inputs.get(name) or (self.input_of(name),)
        return set().union(*(self._sources(i) for i in ins))

    @property
    def coupled_groups(self) -> list[list[str]]:
        groups: list[set[str]] = []
        for n in self.order:
            if isinstance(getattr(self, n), ResidualAdd):
                g = self._sources(n)
                for other in [o for o in groups if o & g]:
                    groups.remove(other)
                    g |= other
                groups.append(g)
        return [[n for n in self.weight_layers() if n in g] for g in groups if "inp" not in g]

    def prunable(self) -> list[str]:
        """Weight layers whose units can be removed: not the output layer, not one added to the network input."""
        fixed: set[str] = set()
        for n in self.order:
            if isinstance(getattr(self, n), ResidualAdd):
                g = self._sources(n)
                if "inp" in g:
                    fixed |= g
        return [n for n in self.weight_layers()[:-1] if n not in fixed]

    def prune_consumers(self) -> dict[str, list[str]]:
        """Weight layers that read each weight layer's output (through the layers between them)."""
        readers, wl = self._readers(), set(self.weight_layers())
        out: dict[str, list[str]] = {}
        for n in self.weight_layers():
            found: list[str] = []
            todo, seen = list(readers[n]), set()
            while todo:
                r = todo.pop(0)
                if r in seen:
                    continue
                seen.add(r)
                if r in wl:
                    found.append(r)
                else:
                    todo += readers[r]
            out[n] = [w for w in self.weight_layers() if w in found]
        return out


def _layer_names(cfg: Config, input_shape) -> list[str]:
    mc = cfg.model
    names = []
    if mc.builder in ("cnn1d", "cnn2d"):
        names += [f"conv{i + 1}" for i in range(len(mc.channels))]
    names += [f"fc{i + 1}" for i in range(len(mc.hidden) + 1)]
    return names


def check_config(cfg: Config, input_shape, n_classes: int) -> None:
    """Raise a CodesignError for anything :func:`build_model` cannot build (before training)."""
    names = _layer_names(cfg, input_shape)
    unknown = sorted(set(cfg.quant.layers) - set(names))
    if unknown:
        raise ConfigError(f"quant.layers: unknown layer(s) {', '.join(unknown)} (this model has {', '.join(names)})")
    mc = cfg.model
    nd = len(input_shape)
    if mc.builder == "mlp" and nd != 1:
        raise ConfigError("model.builder: mlp needs flat inputs (data.layout: flat), "
                          f"got input shape {tuple(input_shape)}")
    if mc.builder == "cnn1d" and nd != 2:
        raise ConfigError("model.builder: cnn1d needs (channels, length) inputs (data.layout: signal), "
                          f"got {tuple(input_shape)}")
    if mc.builder == "cnn2d" and nd != 3:
        raise ConfigError("model.builder: cnn2d needs (channels, h, w) inputs (data.layout: image), "
                          f"got {tuple(input_shape)}")
    last = names[-1]
    if last in cfg.quant.layers and cfg.quant.layers[last].act is not None:
        raise ConfigError(f"quant.layers.{last}.act: {last} is the output layer; its output is not re-quantized "
                          "(it stays at the accumulator scale)")
    for n in names:
        where = f"quant.layers.{n}" if n in cfg.quant.layers else "quant"
        weight_quant(cfg.layer_weight(n), f"{where}.weight")
        act_quant(cfg.layer_act(n), f"{where}.act")
    input_quant(cfg.quant.input)


def _conv_out(length: int, k: int, s: int, p: int) -> int:
    return (length + 2 * p - k) // s + 1


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network ``cfg.model`` describes: ``kind`` is conv/linear/bn/relu/pool/flatten;
    ``args`` are the torch constructor's positional arguments; ``of`` names the conv/linear layer a
    ReLU (activation) belongs to (its activation quantizer is that layer's ``quant.layers.<of>.act``);
    ``bias``: whether a conv/linear layer has a bias (not when a BatchNorm follows)."""

    name: str
    kind: str
    args: tuple[int, ...] = ()
    of: str = ""
    last: bool = False
    bias: bool = True


def _hidden(name: str, kind: str, args: tuple[int, int], act: str, bn: str | None) -> list[LayerSpec]:
    """A hidden conv/linear layer, its BatchNorm (``bn`` = its name, or None) and its activation."""
    out = [LayerSpec(name, kind, args, bias=bn is None)]
    if bn is not None:
        out.append(LayerSpec(bn, "bn", (args[1],)))
    return out + [LayerSpec(act, "relu", of=name)]


def layer_plan(cfg: Config, input_shape, n_classes: int) -> list[LayerSpec]:
    """The layer sequence of ``cfg.model`` (shared by the quantized and the float builder)."""
    mc = cfg.model
    plan: list[LayerSpec] = []
    if mc.builder in ("cnn1d", "cnn2d"):
        c_in, *spatial = input_shape
        for i, c_out in enumerate(mc.channels):
            n = f"conv{i + 1}"
            plan += _hidden(n, "conv", (c_in, c_out), f"relu{i + 1}", f"bn{i + 1}" if mc.batchnorm else None)
            spatial = [_conv_out(s, mc.kernel, mc.stride, mc.padding) for s in spatial]
            if mc.pool > 1:
                if min(spatial) < mc.pool:
                    raise ConfigError(f"model: feature map {spatial} of {n} is smaller than pool={mc.pool}; "
                                      "use fewer conv layers or a smaller pool")
                plan.append(LayerSpec(f"pool{i + 1}", "pool", (mc.pool,)))
                spatial = [s // mc.pool for s in spatial]
            if min(spatial) < 1:
                raise ConfigError(f"model: {n} output is empty (kernel/padding/stride too large)")
            c_in = c_out
        plan.append(LayerSpec("flatten", "flatten"))
        feat = c_in * math.prod(spatial)
    else:
        feat = input_shape[0]
    for i, d in enumerate(mc.hidden):
        plan += _hidden(f"fc{i + 1}", "linear", (feat, d), f"relu_fc{i + 1}", f"bn_fc{i + 1}" if mc.batchnorm else None)
        feat = d
    plan.append(LayerSpec(f"fc{len(mc.hidden) + 1}", "linear", (feat, n_classes), last=True))
    return plan


class InputAffine(nn.Module):
    """Float pre-processing ``x * a + b`` (``model.input_affine``), exported as ``Mul`` + ``Add``."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = float(a), float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.a + self.b


def _pre(cfg: Config) -> list[tuple[str, nn.Module]]:
    aff = cfg.model.input_affine
    return [("pre", InputAffine(*aff))] if aff is not None else []


def _quant_layer(cfg: Config, sp: LayerSpec) -> nn.Module:
    """The Brevitas module of one planned layer."""
    mc, n = cfg.model, sp.name
    if sp.kind in ("conv", "linear"):
        bias = bias_quant(cfg.layer_bias_bits(n)) if sp.bias else None
        kw = {"weight_quant": weight_quant(cfg.layer_weight(n)), "bias": sp.bias, "bias_quant": bias}
        if sp.kind == "linear":
            # a BatchNorm (float) after the layer takes a plain tensor
            return QuantLinear(*sp.args, **kw, return_quant_tensor=not sp.last and sp.bias)
        conv_cls = QuantConv1d if mc.builder == "cnn1d" else QuantConv2d
        return conv_cls(*sp.args, mc.kernel, stride=mc.stride, padding=mc.padding, **kw, return_quant_tensor=sp.bias)
    if sp.kind == "relu":
        aq = cfg.layer_act(sp.of)
        act_cls = QuantIdentity if aq.signed else QuantReLU
        return act_cls(act_quant=act_quant(aq), return_quant_tensor=True)
    return _plain_layer(cfg, sp)


def _plain_layer(cfg: Config, sp: LayerSpec) -> nn.Module:
    """BatchNorm / pool / flatten (the same module in the quantized and the float network)."""
    one_d = cfg.model.builder != "cnn2d"
    if sp.kind == "bn":
        return nn.BatchNorm1d(*sp.args) if one_d else nn.BatchNorm2d(*sp.args)
    if sp.kind == "pool":
        return nn.MaxPool1d(*sp.args) if one_d else nn.MaxPool2d(*sp.args)
    return nn.Flatten()


def build_model(cfg: Config, input_shape, n_classes: int) -> QuantNet:
    """The quantized Brevitas network described by ``cfg.model`` / ``cfg.quant``."""
    if cfg.model.module is not None:  # an imported float model (codesign.importer)
        from codesign.importer import build

        return build(cfg, input_shape, n_classes, quantized=True)
    input_shape = tuple(int(v) for v in input_shape)
    check_config(cfg, input_shape, n_classes)
    layers: list[tuple[str, nn.Module]] = [
        *_pre(cfg), ("inp", QuantIdentity(act_quant=input_quant(cfg.quant.input), return_quant_tensor=True))]
    layers += [(sp.name, _quant_layer(cfg, sp)) for sp in layer_plan(cfg, input_shape, n_classes)]
    return QuantNet(layers, input_shape, n_classes)


def _float_layer(cfg: Config, sp: LayerSpec) -> nn.Module:
    mc = cfg.model
    if sp.kind == "conv":
        conv_cls = nn.Conv1d if mc.builder == "cnn1d" else nn.Conv2d
        return conv_cls(*sp.args, mc.kernel, stride=mc.stride, padding=mc.padding, bias=sp.bias)
    if sp.kind == "linear":
        return nn.Linear(*sp.args, bias=sp.bias)
    if sp.kind == "relu":
        return nn.Hardtanh() if cfg.layer_act(sp.of).signed else nn.ReLU()
    return _plain_layer(cfg, sp)


def build_float_model(cfg: Config, input_shape, n_classes: int) -> QuantNet:
    """Float twin of :func:`build_model` with the same layer and parameter names (signed activations: a
    hardtanh, the float counterpart of a clamping quantizer)."""
    if cfg.model.module is not None:  # an imported float model (codesign.importer)
        from codesign.importer import build

        return build(cfg, input_shape, n_classes, quantized=False)
    input_shape = tuple(int(v) for v in input_shape)
    layers: list[tuple[str, nn.Module]] = [*_pre(cfg), ("inp", nn.Identity())]
    layers += [(sp.name, _float_layer(cfg, sp)) for sp in layer_plan(cfg, input_shape, n_classes)]
    return QuantNet(layers, input_shape, n_classes)


def snap_pot_weights(model: nn.Module) -> list[str]:
    """Write the po2-quantized values back into the float weights of every po2 layer (before export,
    so the exported ``Quant`` node reproduces them exactly). Returns the po2 layer names."""
    names = []
    for n, m in model.named_modules():
        proxy = getattr(m, "weight_quant", None)
        tq = getattr(proxy, "tensor_quant", None)
        if isinstance(tq, PotTensorQuant):
            with torch.no_grad():
                q, _ = pot_quantize(m.weight.data, tq.pot_bits)
                m.weight.data.copy_(q)
            names.append(n)
    return names


def input_grid(model: QuantNet, x) -> torch.Tensor:
    """``x`` after the model's pre-processing (if any), snapped onto the input quantizer grid (real values)."""
    with torch.no_grad():
        x = torch.as_tensor(x, dtype=torch.float32)
        if hasattr(model, "pre"):
            x = model.pre(x)
        return model.inp(x).value


def graph_input(model: QuantNet, x) -> torch.Tensor:
    """The exported graph's input for data ``x``: the input-quantizer grid values (:func:`input_grid`), or, when
    the model has float pre-processing (``pre``: run on the host before the first quantizer), ``x`` itself."""
    if hasattr(model, "pre"):
        return torch.as_tensor(x, dtype=torch.float32)
    return input_grid(model, x)
