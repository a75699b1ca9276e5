"""Post-training quantization of an imported float model (``quant.method: ptq``, ``quant.ptq:``).

The steps, in the order :func:`run` applies them (each optional except the calibration):

1. ``data_free``: no training data. A batch of inputs is synthesized so that every BatchNorm layer of the float
   twin sees the mean and standard deviation of its running statistics (ZeroQ, Cai et al. 2020, "ZeroQ: A Novel
   Zero Shot Quantization Framework", CVPR; own code, :func:`synthesize`: Adam on the inputs, kept in the input
   quantizer's range [-1, 1]). These inputs replace the training batches in every later step. A model without
   BatchNorm has no statistics to match: a :class:`~codesign.errors.ConfigError`.
2. ``equalize``: cross-layer equalization of the float twin before its weights are copied into the quantized
   network (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV,
   DFQ): for each layer -> ReLU -> layer pair, output channel i of the first is divided by s_i and input channel
   i of the second multiplied by s_i (ReLU is positively homogeneous, so the float function is unchanged), with
   s_i balancing the two per-channel ranges. Brevitas ``brevitas.graph.equalize.EqualizeGraph`` does it on an
   fx trace of the twin's layers (:func:`equalize`); a BatchNorm before the ReLU is the source of the pair (its
   gamma and beta are scaled), ReLU6 and the flatten stop a region. The scales are float: only the float
   weights change, the quantizers then pick their power-of-two scales as always.
3. calibration of the activation scales (Brevitas ``calibration_mode``, :func:`codesign.importer.calibrate`).
4. ``rounding``: ``gptq`` (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
   Pre-trained Transformers", ICLR 2023; Brevitas ``brevitas.graph.gptq.gptq_mode``) or ``gpfq`` (Lybrand & Saab
   2021, "A Greedy Algorithm for Quantizing Neural Networks", JMLR; Brevitas ``brevitas.graph.gpfq.gpfq_mode``):
   layer by layer, the weights are quantized one input column at a time and the rounding error is pushed onto
   the columns not yet quantized so that the layer's output on the calibration data stays close. Brevitas calls
   the layer's own weight quantizer for every column (for GPTQ on the whole tensor, not Brevitas' one-column
   slice, whose per-tensor statistics scale would be the column's own: :func:`_whole_tensor_gptq`), so the
   result is on codesign's grid (integers times the power-of-two scale; ``pot``: 0 or +-2^e) by construction;
   :func:`grid_check` verifies it afterwards. The po2 scale stays Brevitas' statistic (max |w|) of the current
   float weights, so it follows the weights GPTQ updates and may end one power of two away from nearest
   rounding's.
5. ``bias_correction``: each layer's mean output error on the calibration data (float weights minus quantized
   weights, on the quantized network's own input to that layer, earlier corrections applied) is added to its
   bias, or, for a bias-less layer before a BatchNorm, subtracted from the BatchNorm's running mean (Nagel et al.
   2019, the empirical variant; own code, :func:`bias_correct`: Brevitas ``bias_correction_mode`` would register a
   new, unquantized bias on those layers, which the integer export does not have).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from codesign import quant
from codesign.config import Config
from codesign.errors import ConfigError, UnsupportedError

_WEIGHT = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _batches(x: np.ndarray | torch.Tensor, batch_size: int):
    xt = torch.as_tensor(x, dtype=torch.float32)
    for i in range(0, len(xt), batch_size):
        yield xt[i:i + batch_size]


# ---------------------------------------------------------------------------------------------
# data-free: ZeroQ input synthesis
# ---------------------------------------------------------------------------------------------
def synthesize(twin: nn.Module, input_shape: tuple[int, ...], n: int, seed: int = 0, steps: int = 500,
               lr: float = 0.05) -> np.ndarray:
    """``n`` inputs whose BatchNorm input statistics in ``twin`` match the running statistics (ZeroQ's loss:
    sum over BatchNorm layers of ||mean - running_mean||^2 + ||std - running_std||^2), clamped to [-1, 1]."""
    bns = [m for m in twin.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        raise ConfigError("quant.ptq.data_free: the model has no BatchNorm layer, so there are no statistics to "
                          "synthesize calibration data from (ZeroQ); calibrate on training data instead")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *input_shape), generator=g).clamp_(-1, 1).requires_grad_(True)
    seen: list[tuple[_BatchNorm, torch.Tensor]] = []
    hooks = [bn.register_forward_hook(lambda m, i, o: seen.append((m, i[0]))) for bn in bns]
    req = {p: p.requires_grad for p in twin.parameters()}
    for p in req:
        p.requires_grad_(False)
    twin.eval()
    opt = torch.optim.Adam([x], lr=lr)
    try:
        for _ in range(steps):
            seen.clear()
            opt.zero_grad()
            twin(x)
            loss = x.new_zeros(())
            for bn, a in seen:
                dims = [0, *range(2, a.dim())]
                mu, sd = a.mean(dims), torch.sqrt(a.var(dims, unbiased=False) + bn.eps)
                sd_ref = torch.sqrt(bn.running_var + bn.eps)
                loss = loss + ((mu - bn.running_mean) ** 2).sum() + ((sd - sd_ref) ** 2).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(-1, 1)
    finally:
        for h in hooks:
            h.remove()
        for p, r in req.items():
            p.requires_grad_(r)
    return x.detach().numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------
# cross-layer equalization
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def equalize(twin: quant.QuantNet, iterations: int = 20) -> int:
    """Cross-layer equalization of ``twin`` in place (Brevitas ``EqualizeGraph`` on an fx trace of an
    ``nn.Sequential`` that shares the twin's modules); returns the number of equalized regions."""
    from brevitas.graph.equalize import EqualizeGraph

    if isinstance(twin, quant.GraphNet):
        raise UnsupportedError("quant.ptq.equalize: cross-layer equalization of a residual model (forks and adds) is "
                               "not supported yet; GPTQ/GPFQ rounding and bias correction are")
    seq = nn.Sequential(*[getattr(twin, n) for n in twin.order])
    gm = torch.fx.symbolic_trace(seq)
    _, regions = EqualizeGraph(iterations=iterations, return_regions=True).apply(gm)
    return len(regions)


# ---------------------------------------------------------------------------------------------
# optimized rounding (GPTQ / GPFQ)
# ---------------------------------------------------------------------------------------------
def _whole_tensor_gptq():
    """Brevitas' ``GPTQ`` quantizing each column with the whole tensor's quantizer. Brevitas slices the weight for
    speed (``subtensor_slice_list``) and a per-tensor statistics scale then comes from the one column alone (a
    power of two per column, finer than the tensor's), while the exported tensor has one scale: this class asks for
    the whole quantized tensor (the current weights' per-tensor po2 scale) and takes the column from it, as Brevitas
    itself does for grouped quantizers."""
    from brevitas.graph.gptq import GPTQ
    from brevitas.quant_tensor import _unpack_quant_tensor

    class WholeTensorGPTQ(GPTQ):
        def get_quant_weights(self, i, i1, permutation_list, with_quant_history=False):
            assert not with_quant_history and self.groups == 1
            qw = _unpack_quant_tensor(self.layer.quant_weight(quant_input=self.quant_metadata)).flatten(1)
            return qw[:, permutation_list[0][i1 + i]].unsqueeze(0)  # [1, OC]

    return WholeTensorGPTQ


@torch.no_grad()
def optimized_rounding(model: quant.QuantNet, x: np.ndarray, method: str, batch_size: int) -> int:
    """Re-round the weights of ``model`` (calibrated) with Brevitas' ``gptq_mode`` or ``gpfq_mode`` on the inputs
    ``x``; the float weights are updated in place and the copies Brevitas keeps (``weight_orig``) dropped.
    Returns the number of layers processed."""
    if method == "gptq":
        from brevitas.graph.gptq import gptq_mode

        def mode(m):
            return gptq_mode(m, gptq_class=_whole_tensor_gptq())
    elif method == "gpfq":  # GPFQ quantizes the whole tensor for every column already (with_quant_history)
        from brevitas.graph.gpfq import gpfq_mode as mode
    else:  # pragma: no cover - config validation
        raise ValueError(method)
    model.eval()
    with mode(model) as g:
        n = g.num_layers
        for _ in range(n):
            for xb in _batches(x, batch_size):
                g.model(xb)
            g.update()
    for name in model.weight_layers():
        layer = getattr(model, name)
        if hasattr(layer, "weight_orig"):
            delattr(layer, "weight_orig")
    return n


# ---------------------------------------------------------------------------------------------
# bias correction
# ---------------------------------------------------------------------------------------------
def _float_op(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return nn.functional.linear(x, w)
    conv = nn.functional.conv1d if isinstance(layer, nn.Conv1d) else nn.functional.conv2d
    return conv(x, w, None, layer.stride, layer.padding)


@torch.no_grad()
def bias_correct(model: quant.QuantNet, reference: quant.QuantNet, x: np.ndarray, batch_size: int) -> dict[str, float]:
    """Empirical bias correction, layer by layer in network order: on the quantized network's input to the layer,
    E[W_float x - W_quant x] per output channel; added to the layer's bias, or subtracted from the running mean of
    the BatchNorm right after a bias-less layer. ``reference`` holds the float weights (the float twin, after
    equalization if any). Returns layer -> max |correction|."""
    out: dict[str, float] = {}
    order = model.order
    for name in model.weight_layers():
        layer = getattr(model, name)
        nxt = order[order.index(name) + 1] if order.index(name) + 1 < len(order) else None
        bn = getattr(model, nxt) if nxt is not None and isinstance(getattr(model, nxt), _BatchNorm) else None
        if layer.bias is None and bn is None:
            continue
        w_f = getattr(reference, name).weight
        inputs: list[torch.Tensor] = []
        h = layer.register_forward_pre_hook(lambda m, a, _in=inputs: _in.append(getattr(a[0], "value", a[0]).detach()))
        total: torch.Tensor | None = None
        count = 0
        model.eval()
        try:
            for xb in _batches(x, batch_size):
                inputs.clear()
                model(xb)
                xi = inputs[0]
                w_q = layer.quant_weight().value
                err = _float_op(layer, xi, w_f) - _float_op(layer, xi, w_q)
                dims = [0, *range(2, err.dim())]
                s = err.sum(dims)
                total = s if total is None else total + s
                count += int(np.prod([err.shape[d] for d in dims]))
        finally:
            h.remove()
        if total is None:
            continue
        delta = total / count
        if layer.bias is not None:
            layer.bias.add_(delta)
        else:
            bn.running_mean.sub_(delta)
        out[name] = float(delta.abs().max())
    return out


# ---------------------------------------------------------------------------------------------
# checks and the whole recipe
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def grid_check(model: quant.QuantNet) -> dict[str, dict[str, float]]:
    """For each weight layer, the quantized weights as (integer code, scale): every scale a power of two, every
    code an integer within the quantizer's bit width (``pot``: every value 0 or +-2^e). AssertionError otherwise;
    returns layer -> {scale (min), max |code|}."""
    out: dict[str, dict[str, float]] = {}
    for name in model.weight_layers():
        qw = getattr(model, name).quant_weight()
        v, s, bits = qw.value, qw.scale, float(qw.bit_width)
        code = v / s
        assert torch.equal(code, torch.round(code)), f"{name}: weights off the integer grid"
        ls = torch.log2(s)
        assert torch.equal(ls, torch.round(ls)), f"{name}: scale {s} is not a power of two"
        assert float(code.abs().max()) <= 2 ** (bits - 1), f"{name}: codes exceed {bits:.0f} bits"
        if name in model.pot_layers():
            nz = v[v != 0].abs()
            assert torch.equal(torch.log2(nz), torch.round(torch.log2(nz))), f"{name}: a pot weight is not +-2^e"
        out[name] = {"scale": float(s.min()), "max_abs_code": float(code.abs().max())}
    return out


def run(cfg: Config, model: quant.QuantNet, float_model: quant.QuantNet, ds, seed: int) -> dict[str, Any]:
    """Apply ``cfg.quant.ptq`` to ``model`` (freshly built, random weights) from ``float_model`` (the float twin
    holding the user's weights; equalized in place with ``equalize``). Returns the report entries."""
    from codesign.importer import calibrate

    pc, bs = cfg.quant.ptq, cfg.train.batch_size
    n_cal = cfg.quant.calibration_batches * bs
    info: dict[str, Any] = {"rounding": pc.rounding}
    if pc.data_free:
        x_cal = synthesize(float_model, tuple(ds.input_shape), n_cal, seed=seed, steps=pc.data_free_steps)
        info["calibration_data"] = "synthetic (ZeroQ, BatchNorm statistics)"
    else:
        x_cal = ds.x_train[:n_cal]
        info["calibration_data"] = "training set"
    if pc.equalize:
        info["equalized_regions"] = equalize(float_model)
    missing, _ = model.load_state_dict(float_model.state_dict(), strict=False)
    assert not any(k.endswith(("weight", "bias")) and "quant" not in k for k in missing), missing
    info["calibration_samples"] = calibrate(model, x_cal, cfg.quant.calibration_batches, bs)
    if pc.rounding != "nearest":
        info["rounded_layers"] = optimized_rounding(model, x_cal, pc.rounding, bs)
    if pc.bias_correction:
        info["bias_corrections"] = bias_correct(model, float_model, x_cal, bs)
    model.eval()
    info["weight_grid"] = grid_check(model)
    return info


def layer_output_error(model: quant.QuantNet, reference: nn.Module, name: str, x: np.ndarray) -> float:
    """Mean squared difference between layer ``name``'s output with quantized and with ``reference``'s float
    weights, on the quantized network's own input to that layer (the quantity GPTQ / GPFQ minimize)."""
    layer = getattr(model, name)
    inputs: list[torch.Tensor] = []
    h = layer.register_forward_pre_hook(lambda m, a: inputs.append(getattr(a[0], "value", a[0]).detach()))
    try:
        with torch.no_grad():
            model.eval()
            model(torch.as_tensor(x, dtype=torch.float32))
            xi = inputs[0]
            w_f = getattr(reference, name).weight
            return float(((_float_op(layer, xi, w_f) - _float_op(layer, xi, layer.quant_weight().value)) ** 2).mean())
    finally:
        h.remove()

