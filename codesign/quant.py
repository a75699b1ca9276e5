"""Brevitas quantizers and the model builders (mlp / cnn1d / cnn2d).

Every quantizer has a power-of-two scale and a zero zero-point, so every tensor of the exported
QONNX graph is ``integer code * 2**k``:

- input: ``QuantIdentity`` with a signed (``quant.input``) fixed-point quantizer whose scale is a
  constant ``2**-(bits-1)`` (signed) / ``2**-bits`` (unsigned): the datasets are scaled to [-1, 1].
- weights (``cfg.layer_weight(name)``):
  ``fixed``: n-bit signed (narrow range by default) integers times a po2 scale from the max |w|
  statistic (Brevitas ``Int8WeightPerTensorFixedPoint`` with the bit width and rounding changed);
  ``ternary``: the same with 2 bits, narrow range ({0, +-2^k});
  ``pot``: every weight is 0 or +-2^e (:class:`PotWeightQuant`, a straight-through quantizer that
  reports itself as an integer quantizer on a 2^emin grid, so it exports as a plain QONNX ``Quant``
  node with bit width :func:`pot_int_bits`); ``binary`` and ``float`` raise :class:`UnsupportedError`.
- bias: Brevitas ``IntBias`` with ``cfg.layer_bias_bits(name)`` bits and scale = input scale x weight
  scale (the accumulator scale).
- hidden activations: ``QuantReLU`` with an unsigned fixed-point quantizer (``cfg.layer_act(name)``),
  learned po2 scale initialised from runtime statistics.
- the last layer's output is not re-quantized: it stays at the accumulator scale.

Layer names are stable: ``inp`` (input quantizer), ``conv1, conv2, ...`` with ``relu<i>``/``pool<i>``,
``flatten``, ``fc1, fc2, ...`` with ``relu_fc<i>``; per-layer overrides in ``quant.layers`` use
``conv<i>``/``fc<i>``.

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

import torch
from brevitas.core.function_wrapper import TensorClamp
from brevitas.core.scaling import ScalingImplType
from brevitas.inject.enum import FloatToIntImplType
from brevitas.nn import QuantConv1d, QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from brevitas.quant.scaled_int import IntBias
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
def weight_quant(wq: WeightQuant, where: str = "quant.weight"):
    """Brevitas weight quantizer class for a :class:`WeightQuant` config."""
    if wq.scheme == "pot":
        ib = pot_int_bits(wq.bits)
        if ib > MAX_POT_INT_BITS:
            raise ConfigError(
                f"{where}.bits: a {wq.bits}-bit power-of-two code spans {pot_n_exp(wq.bits)} exponents, "
                f"an integer grid of {ib} bits (max {MAX_POT_INT_BITS}); use bits <= 5")
        return PotWeightQuant.let(pot_bits=wq.bits, bit_width=ib)
    if wq.scheme in ("fixed", "ternary"):
        bits = 2 if wq.scheme == "ternary" else wq.bits
        narrow = True if wq.scheme == "ternary" else wq.narrow
        if bits == 2 and not narrow:
            raise ConfigError(f"{where}: 2-bit fixed weights need narrow: true (codes -1, 0, 1)")
        return Int8WeightPerTensorFixedPoint.let(
            bit_width=bits, narrow_range=narrow, float_to_int_impl_type=_rounding(wq.rounding, where))
    if wq.scheme == "binary":
        raise UnsupportedError(
            f"{where}.scheme: 'binary' exports as a BipolarQuant node that the integer flow does not "
            "support; use 'ternary' (or fixed bits=2) or 'pot' bits=2 ({0, +-2^e})")
    raise UnsupportedError(f"{where}.scheme: {wq.scheme!r} weights cannot be exported to hardware; "
                           "use fixed, ternary or pot")


def act_quant(aq: ActQuant, where: str = "quant.act"):
    """Unsigned (ReLU) or signed fixed-point activation quantizer with a learned po2 scale."""
    base = Int8ActPerTensorFixedPoint if aq.signed else Uint8ActPerTensorFixedPoint
    if aq.bits < 2 and aq.signed:
        raise ConfigError(f"{where}.bits: signed activations need >= 2 bits")
    return base.let(bit_width=aq.bits, narrow_range=aq.narrow, collect_stats_steps=COLLECT_STATS_STEPS,
                    float_to_int_impl_type=_rounding(aq.rounding, where))


def input_quant(aq: ActQuant, where: str = "quant.input"):
    """Input quantizer: constant po2 scale covering [-1, 1) (signed) or [0, 1) (unsigned)."""
    base = Int8ActPerTensorFixedPoint if aq.signed else Uint8ActPerTensorFixedPoint
    if aq.bits < 2 and aq.signed:
        raise ConfigError(f"{where}.bits: signed inputs need >= 2 bits")
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

    def pot_layers(self) -> list[str]:
        out = []
        for n in self.weight_layers():
            proxy = getattr(getattr(self, n), "weight_quant", None)
            if isinstance(getattr(proxy, "tensor_quant", None), PotTensorQuant):
                out.append(n)
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
        raise ConfigError(f"model.builder: mlp needs flat inputs (data.layout: flat), got input shape {tuple(input_shape)}")
    if mc.builder == "cnn1d" and nd != 2:
        raise ConfigError(f"model.builder: cnn1d needs (channels, length) inputs (data.layout: signal), got {tuple(input_shape)}")
    if mc.builder == "cnn2d" and nd != 3:
        raise ConfigError(f"model.builder: cnn2d needs (channels, h, w) inputs (data.layout: image), got {tuple(input_shape)}")
    if mc.batchnorm:
        raise UnsupportedError("model.batchnorm: batch norm is not supported by the integer flow (po2 requant only)")
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
    """One layer of the network ``cfg.model`` describes: ``kind`` is conv/linear/relu/pool/flatten;
    ``args`` are the torch constructor's positional arguments; ``of`` names the conv/linear layer a
    ReLU belongs to (its activation quantizer is that layer's ``quant.layers.<of>.act``)."""

    name: str
    kind: str
    args: tuple[int, ...] = ()
    of: str = ""
    last: bool = False


def layer_plan(cfg: Config, input_shape, n_classes: int) -> list[LayerSpec]:
    """The layer sequence of ``cfg.model`` (shared by the quantized and the float builder)."""
    mc = cfg.model
    plan: list[LayerSpec] = []
    if mc.builder in ("cnn1d", "cnn2d"):
        c_in, *spatial = input_shape
        for i, c_out in enumerate(mc.channels):
            n = f"conv{i + 1}"
            plan += [LayerSpec(n, "conv", (c_in, c_out)), LayerSpec(f"relu{i + 1}", "relu", of=n)]
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
    dims = list(mc.hidden) + [n_classes]
    for i, d in enumerate(dims):
        n, last = f"fc{i + 1}", i == len(dims) - 1
        plan.append(LayerSpec(n, "linear", (feat, d), last=last))
        if not last:
            plan.append(LayerSpec(f"relu_fc{i + 1}", "relu", of=n))
        feat = d
    return plan


def build_model(cfg: Config, input_shape, n_classes: int) -> QuantNet:
    """The quantized Brevitas network described by ``cfg.model`` / ``cfg.quant``."""
    input_shape = tuple(int(v) for v in input_shape)
    check_config(cfg, input_shape, n_classes)
    mc = cfg.model
    conv_cls = QuantConv1d if mc.builder == "cnn1d" else QuantConv2d
    pool_cls = nn.MaxPool1d if mc.builder == "cnn1d" else nn.MaxPool2d
    layers: list[tuple[str, nn.Module]] = [
        ("inp", QuantIdentity(act_quant=input_quant(cfg.quant.input), return_quant_tensor=True))]
    for sp in layer_plan(cfg, input_shape, n_classes):
        n = sp.name
        if sp.kind == "conv":
            m: nn.Module = conv_cls(*sp.args, mc.kernel, stride=mc.stride, padding=mc.padding, bias=True,
                                    weight_quant=weight_quant(cfg.layer_weight(n)),
                                    bias_quant=bias_quant(cfg.layer_bias_bits(n)), return_quant_tensor=True)
        elif sp.kind == "linear":
            m = QuantLinear(*sp.args, bias=True, weight_quant=weight_quant(cfg.layer_weight(n)),
                            bias_quant=bias_quant(cfg.layer_bias_bits(n)), return_quant_tensor=not sp.last)
        elif sp.kind == "relu":
            m = QuantReLU(act_quant=act_quant(cfg.layer_act(sp.of)), return_quant_tensor=True)
        elif sp.kind == "pool":
            m = pool_cls(*sp.args)
        else:
            m = nn.Flatten()
        layers.append((n, m))
    return QuantNet(layers, input_shape, n_classes)


def build_float_model(cfg: Config, input_shape, n_classes: int) -> QuantNet:
    """Float twin of :func:`build_model` with the same layer and parameter names."""
    input_shape = tuple(int(v) for v in input_shape)
    mc = cfg.model
    conv_cls = nn.Conv1d if mc.builder == "cnn1d" else nn.Conv2d
    pool_cls = nn.MaxPool1d if mc.builder == "cnn1d" else nn.MaxPool2d
    layers: list[tuple[str, nn.Module]] = [("inp", nn.Identity())]
    for sp in layer_plan(cfg, input_shape, n_classes):
        if sp.kind == "conv":
            m: nn.Module = conv_cls(*sp.args, mc.kernel, stride=mc.stride, padding=mc.padding)
        elif sp.kind == "linear":
            m = nn.Linear(*sp.args)
        elif sp.kind == "relu":
            m = nn.ReLU()
        elif sp.kind == "pool":
            m = pool_cls(*sp.args)
        else:
            m = nn.Flatten()
        layers.append((sp.name, m))
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
    """``x`` snapped onto the model's input quantizer grid (real values)."""
    with torch.no_grad():
        return model.inp(torch.as_tensor(x, dtype=torch.float32)).value
