"""Integer IR of a quantized network, the input of the Verilog emitter.

Every tensor is a vector of integer codes ``q`` with a power-of-two scale (real = ``q * 2**scale_exp``),
described by a :class:`FixedFormat`. A :class:`Model` is a list of :class:`Layer` objects in topological
order; a layer consumes the outputs of ``Layer.inputs`` (layer names, ``""`` = the network input; ``None``
= the previous layer in the list, or the network input for the first), each as a flat vector whose order
is the C-order flattening of the tensor as laid out in the ONNX graph (channels-last for convolutions).
Only ``add`` has two inputs; a layer output read by several layers is a fork (residual skip).

Layer kinds
-----------
``dense``    ``acc[j] = bias[j] + sum_i x[i] * weights[i, j]``; weights shaped ``(n_in, n_out)``.
``conv1d``/``conv2d``  channels-last (``layout='NHWC'``: input ``(H, W, C)``, weights ``(O, kh, kw, I)``)
             or channels-first (``layout='NCHW'``: input ``(C, H, W)``, weights ``(O, I, kh, kw)``), with
             ``stride`` and ``pads`` (begin..., end...), zero padding. conv1d drops the H axis.
``maxpool``  max over a window (channels-last or -first, no padding).
``avgpool``  sum over a window of ``2^k`` elements (zero padding counted, ``count_include_pad``):
             the accumulator of AveragePool / GlobalAveragePool at scale ``in scale - k``.
``add``      elementwise sum of two activations of the same shape (residual join):
             ``acc[j] = (a[j] << (a scale - acc scale)) + (b[j] << (b scale - acc scale))``, acc scale =
             the finer input scale (exact, like the golden model). The input vector is ``a`` then ``b``;
             ``in_fmt`` is a's format, ``in_fmt2`` b's.
``requant``  elementwise relu / requantization of the input (a Relu/Quant not fused into a linear layer).
``flatten``  a reshape: no data movement.
``transpose`` a permutation of the fields (``perm``: output field ``k`` is input field ``perm[k]``).

Linear layers (dense, conv) produce an accumulator at ``acc_fmt`` (scale = in scale + weight scale)
and, when ``requant`` is set, the requantized activation at ``out_fmt``; otherwise ``out_fmt == acc_fmt``.
``add`` and ``avgpool`` are accumulator layers too (``is_acc``): they take a fused requantization.

Per-channel weight scales (``2^e_c`` per output channel): the weight codes are stored *aligned* to the
finest channel scale (``code << (e_c - min e)``), so the accumulator has one scale and the IR arithmetic
is unchanged. ``field_shift[j]`` records that every term and the bias of output field ``j`` is a multiple of
``2^field_shift[j]``: the fully parallel emitter divides them out (the adder tree computes the channel's own
accumulator) and requantizes with ``shift - field_shift[j]``. ``field_out`` (the network output only,
without requantization or with a bare relu): field ``j`` is emitted at its own scale ``acc scale +
field_shift[j]``, i.e. the accumulator divided by ``2^field_shift[j]`` (exact) before the relu, like the
golden model's per-channel output codes.

Requantization (:class:`Requant`) of an accumulator ``a``: ``r = round(a / 2**shift)`` with the
rounding mode (a negative shift is an exact left shift), then ``max(r, 0)`` if ``relu``, then saturation
to the output format's range ``[out.lo, out.hi]`` (``narrow`` drops the most negative code).
Rounding modes (QONNX names): ``ROUND`` (= ``HALF_EVEN``), ``FLOOR``, ``CEIL``, ``ROUND_TO_ZERO``
(= ``DOWN``), ``UP`` (away from zero), ``HALF_UP`` (half away from zero), ``HALF_DOWN`` (half toward
zero). All integer: :func:`shift_round` is the exact reference the hardware implements.

``pot`` is *computed* from the weight codes (every non-zero ``|w|`` is a power of two), never trusted
from a tag. :meth:`Model.run` is the numpy integer reference of the IR (used by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROUNDING_MODES = ("ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO", "UP", "HALF_UP", "HALF_DOWN")
_ALIASES = {"HALF_EVEN": "ROUND", "DOWN": "ROUND_TO_ZERO"}
LINEAR_KINDS = ("dense", "conv1d", "conv2d")
ACC_KINDS = LINEAR_KINDS + ("add", "avgpool")  # layers producing an accumulator (fused requant)


def normalize_rounding(mode: str) -> str:
    m = mode.upper()
    m = _ALIASES.get(m, m)
    if m not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}")
    return m


def bits_for(lo: int, hi: int) -> int:
    """Width of the smallest two's-complement signed type holding ``[lo, hi]`` (at least 1)."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


@dataclass(frozen=True)
class FixedFormat:
    """Integer code format: ``bits`` wide, two's complement if ``signed``; real = q * 2**scale_exp."""

    bits: int
    signed: bool
    scale_exp: int
    narrow: bool = False

    @property
    def lo(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def hi(self) -> int:
        if self.signed:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - 1 - (1 if self.narrow else 0)

    def describe(self) -> str:
        s = "s" if self.signed else "u"
        return f"{s}{self.bits} x 2^{self.scale_exp}" + (" narrow" if self.narrow else "")


def shift_round(a: np.ndarray | int, shift: int, mode: str) -> np.ndarray:
    """Exact integer ``round(a / 2**shift)`` in the given rounding mode (object/int64 arrays)."""
    a = np.asarray(a, dtype=object) if np.asarray(a).dtype == object else np.asarray(a, dtype=np.int64)
    mode = normalize_rounding(mode)
    if shift <= 0:
        return a * (1 << (-shift))
    one = 1 << shift
    half = 1 << (shift - 1)
    fl = a >> shift  # floor (arithmetic)
    rem = a - fl * one  # 0 <= rem < 2^shift
    neg = a < 0
    if mode == "FLOOR":
        up = np.zeros_like(rem, dtype=bool)
    elif mode == "CEIL":
        up = rem != 0
    elif mode == "ROUND_TO_ZERO":
        up = neg & (rem != 0)
    elif mode == "UP":
        up = (~neg) & (rem != 0)
    elif mode == "ROUND":
        up = (rem > half) | ((rem == half) & ((fl & 1) == 1))
    elif mode == "HALF_UP":  # half away from zero
        up = (rem > half) | ((rem == half) & ~neg)
    else:  # HALF_DOWN: half toward zero
        up = (rem > half) | ((rem == half) & neg)
    return fl + up.astype(fl.dtype)


@dataclass
class Requant:
    """``out = sat(relu?(round(acc / 2**shift)))``; ``shift < 0`` is an exact left shift."""

    shift: int
    rounding: str
    relu: bool
    out: FixedFormat

    @property
    def lo(self) -> int:
        return max(self.out.lo, 0) if self.relu else self.out.lo

    @property
    def hi(self) -> int:
        return self.out.hi

    def apply(self, acc: np.ndarray) -> np.ndarray:
        r = shift_round(acc, self.shift, self.rounding)
        return np.clip(r, self.lo, self.hi)

    def bounds(self, lo: int, hi: int) -> tuple[int, int]:
        """Output range for accumulator inputs in ``[lo, hi]`` (rounding is monotonic)."""
        rl, rh = (int(v) for v in shift_round(np.array([lo, hi], dtype=object), self.shift, self.rounding))
        return min(max(rl, self.lo), self.hi), min(max(rh, self.lo), self.hi)


@dataclass
class Layer:
    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_fmt: FixedFormat
    out_fmt: FixedFormat
    onnx_output: str
    acc_fmt: FixedFormat | None = None
    weights: np.ndarray | None = None  # integer codes
    bias: np.ndarray | None = None  # integer codes at acc scale
    w_scale_exp: int = 0
    requant: Requant | None = None
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    layout: str = "NHWC"
    perm: np.ndarray | None = None
    onnx_nodes: list[str] = field(default_factory=list)
    inputs: list[str] | None = None  # producer layer names ("" = network input); None: previous layer
    in_fmt2: FixedFormat | None = None  # add: format of the second operand
    field_shift: np.ndarray | None = None  # per output field: power-of-two factor of terms and bias
    field_out: bool = False  # output field j at scale acc scale + field_shift[j] (network output only)

    # ---- derived --------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        """Input fields (``add``: both operands)."""
        return int(np.prod(self.in_shape)) * (2 if self.kind == "add" else 1)

    def in_field(self, i: int) -> tuple[int, FixedFormat]:
        """(bit offset in the packed input vector, format) of input field ``i``."""
        if self.kind == "add":
            n = int(np.prod(self.in_shape))
            if i >= n:
                return n * self.in_fmt.bits + (i - n) * self.in_fmt2.bits, self.in_fmt2
        return i * self.in_fmt.bits, self.in_fmt

    @property
    def in_bits(self) -> int:
        """Width of the packed input vector."""
        if self.kind == "add":
            return int(np.prod(self.in_shape)) * (self.in_fmt.bits + self.in_fmt2.bits)
        return self.n_in * self.in_fmt.bits

    @property
    def is_acc(self) -> bool:
        return self.kind in ACC_KINDS

    def add_shifts(self) -> tuple[int, int]:
        """add: left shifts of the two operands onto the accumulator scale."""
        e = self.acc_fmt.scale_exp
        return self.in_fmt.scale_exp - e, self.in_fmt2.scale_exp - e

    def out_exps(self) -> np.ndarray | None:
        """Per-field output scale exponents when ``field_out`` (else None: ``out_fmt.scale_exp``)."""
        if not self.field_out:
            return None
        return self.out_fmt.scale_exp + np.asarray(self.field_shift, dtype=np.int64)

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def is_linear(self) -> bool:
        return self.kind in LINEAR_KINDS

    @property
    def is_wiring(self) -> bool:
        return self.kind in ("flatten", "transpose")

    @property
    def pot(self) -> bool:
        """True when every non-zero weight code is +-2^k (checked on the values)."""
        if self.weights is None:
            return False
        a = np.abs(self.weights.astype(np.int64).ravel())
        a = a[a != 0]
        return bool(np.all((a & (a - 1)) == 0))

    @property
    def sparsity(self) -> float:
        if self.weights is None or self.weights.size == 0:
            return 0.0
        return float(np.mean(self.weights == 0))

    # ---- structure shared by the emitter ---------------------------------------------------
    def _spatial(self):
        """(in spatial dims, in channels, out spatial dims, out channels, index fns) for conv/pool."""
        nd = 1 if self.kind == "conv1d" or len(self.in_shape) == 2 else 2
        if self.layout == "NHWC":
            isp, ic = self.in_shape[:nd], self.in_shape[nd]
            osp, oc = self.out_shape[:nd], self.out_shape[nd]

            def iidx(pos, c):
                return int(np.ravel_multi_index((*pos, c), self.in_shape))

            def oidx(pos, c):
                return int(np.ravel_multi_index((*pos, c), self.out_shape))
        else:
            ic, isp = self.in_shape[0], self.in_shape[1:]
            oc, osp = self.out_shape[0], self.out_shape[1:]

            def iidx(pos, c):
                return int(np.ravel_multi_index((c, *pos), self.in_shape))

            def oidx(pos, c):
                return int(np.ravel_multi_index((c, *pos), self.out_shape))
        return nd, tuple(isp), ic, tuple(osp), oc, iidx, oidx

    def connections(self) -> list[list[tuple[int, int]]]:
        """For a linear layer: per output field, the non-zero terms ``(input field, weight code)``.
        For maxpool / avgpool: per output field, the input fields of its window (weight 1).
        For add: ``(j, 2^sa), (n + j, 2^sb)``."""
        if self.kind == "add":
            n = int(np.prod(self.in_shape))
            sa, sb = self.add_shifts()
            return [[(j, 1 << sa), (n + j, 1 << sb)] for j in range(n)]
        if self.kind == "dense":
            w = self.weights
            return [[(i, int(w[i, j])) for i in range(w.shape[0]) if w[i, j] != 0] for j in range(w.shape[1])]
        nd, isp, ic, osp, oc, iidx, oidx = self._spatial()
        conns: list[list[tuple[int, int]]] = [[] for _ in range(self.n_out)]
        for opos in np.ndindex(*osp):
            for o in range(oc):
                terms = []
                for kpos in np.ndindex(*self.kernel):
                    ipos = tuple(opos[d] * self.stride[d] + kpos[d] - (self.pads[d] if self.pads else 0) for d in range(nd))
                    if any(p < 0 or p >= isp[d] for d, p in enumerate(ipos)):
                        continue  # zero padding
                    if self.kind in ("maxpool", "avgpool"):
                        terms.append((iidx(ipos, o), 1))
                        continue
                    for c in range(ic):
                        wv = self._conv_w(o, kpos, c)
                        if wv != 0:
                            terms.append((iidx(ipos, c), wv))
                conns[oidx(opos, o)] = terms
        return conns

    def _conv_w(self, o: int, kpos: tuple[int, ...], c: int) -> int:
        w = self.weights
        if self.kind == "conv1d" and w.ndim == 4:  # (O, 1, k, I) / (O, I, 1, k)
            w = w[:, 0] if self.layout == "NHWC" else w[:, :, 0]
        if self.layout == "NHWC":
            return int(w[(o, *kpos, c)])
        return int(w[(o, c, *kpos)])

    def field_channels(self) -> np.ndarray:
        """Output channel of every output field (dense: the field itself)."""
        if self.kind in ("dense", "add", "requant", "flatten", "transpose"):
            return np.arange(self.n_out)
        nd, isp, ic, osp, oc, iidx, oidx = self._spatial()
        ch = np.zeros(self.n_out, dtype=np.int64)
        for opos in np.ndindex(*osp):
            for o in range(oc):
                ch[oidx(opos, o)] = o
        return ch

    def bias_vector(self) -> np.ndarray:
        """Bias per output field (conv: broadcast over positions)."""
        if self.bias is None:
            return np.zeros(self.n_out, dtype=np.int64)
        if self.kind == "dense":
            return self.bias.astype(np.int64)
        nd, isp, ic, osp, oc, iidx, oidx = self._spatial()
        out = np.zeros(self.n_out, dtype=np.int64)
        for opos in np.ndindex(*osp):
            for o in range(oc):
                out[oidx(opos, o)] = int(self.bias[o])
        return out

    def acc_bounds(self) -> list[tuple[int, int]]:
        """Exact accumulator range per output field for inputs anywhere in ``in_fmt``'s range."""
        lo_x, hi_x = self.in_fmt.lo, self.in_fmt.hi
        n_a = int(np.prod(self.in_shape))
        res = []
        for terms, b in zip(self.connections(), self.bias_vector(), strict=True):
            lo = hi = int(b)
            for i, wv in terms:
                if self.kind == "add" and i >= n_a:
                    a, c = wv * self.in_fmt2.lo, wv * self.in_fmt2.hi
                else:
                    a, c = wv * lo_x, wv * hi_x
                lo += min(a, c)
                hi += max(a, c)
            res.append((lo, hi))
        return res

    def describe(self) -> str:
        s = f"{self.kind} {self.in_shape}->{self.out_shape}, in {self.in_fmt.describe()}"
        if self.kind == "add":
            s += f" + {self.in_fmt2.describe()}"
        if self.is_linear:
            s += f", weights {'pot' if self.pot else 'fixed'} x 2^{self.w_scale_exp}, sparsity {self.sparsity:.2f}"
        if self.field_shift is not None:
            s += f", per-channel scales (field shifts {int(np.min(self.field_shift))}..{int(np.max(self.field_shift))})"
        if self.is_acc:
            s += f", acc {self.acc_fmt.describe()}"
        if self.requant is not None:
            rq = self.requant
            s += f", requant shift {rq.shift} {rq.rounding}{' relu' if rq.relu else ''}"
        return s + f", out {self.out_fmt.describe()}" + (" + field shift" if self.field_out else "")

    # ---- numpy integer reference -----------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Batch ``x`` of shape (N, n_in) int64 codes -> (N, n_out) codes. Computed from the
        weight tensors directly (not from :meth:`connections`), so it cross-checks the emitter."""
        x = np.asarray(x, dtype=np.int64)
        n = x.shape[0]
        if self.is_wiring:
            return x if self.kind == "flatten" else x[:, self.perm]
        if self.kind == "requant":
            return self.requant.apply(x)
        if self.kind == "dense":
            acc = x @ self.weights.astype(np.int64) + self.bias_vector()[None, :]
        elif self.kind in ("conv1d", "conv2d", "maxpool", "avgpool"):
            acc = self._forward_spatial(x.reshape(n, *self.in_shape)).reshape(n, -1)
        elif self.kind == "add":
            sa, sb = self.add_shifts()
            na = int(np.prod(self.in_shape))
            acc = (x[:, :na] << sa) + (x[:, na:] << sb)
        else:  # pragma: no cover
            raise NotImplementedError(self.kind)
        if self.field_out:  # exact: every field is a multiple of 2^field_shift
            acc = acc >> np.asarray(self.field_shift, dtype=np.int64)[None, :]
        return self.requant.apply(acc) if self.requant is not None else acc

    def _forward_spatial(self, x: np.ndarray) -> np.ndarray:
        nd = 1 if (self.kind == "conv1d" or len(self.in_shape) == 2) else 2
        if self.layout != "NHWC":  # to channels-last
            x = np.moveaxis(x, 1, -1)
        n = x.shape[0]
        pads = self.pads if self.pads else (0,) * (2 * nd)
        padw = [(0, 0)] + [(pads[d], pads[d + nd]) for d in range(nd)] + [(0, 0)]
        fill = np.iinfo(np.int64).min if self.kind == "maxpool" else 0
        xp = np.pad(x, padw, constant_values=fill)
        osp = [(xp.shape[1 + d] - self.kernel[d]) // self.stride[d] + 1 for d in range(nd)]
        if self.kind == "maxpool":
            out = np.full((n, *osp, x.shape[-1]), np.iinfo(np.int64).min, dtype=np.int64)
        elif self.kind == "avgpool":
            out = np.zeros((n, *osp, x.shape[-1]), dtype=np.int64)
        else:
            w = self.weights.astype(np.int64)
            if self.kind == "conv1d" and w.ndim == 4:
                w = w[:, 0] if self.layout == "NHWC" else w[:, :, 0]
            if self.layout != "NHWC":
                w = np.moveaxis(w, 1, -1)  # (O, I, k..) -> (O, k.., I)
            out = np.zeros((n, *osp, w.shape[0]), dtype=np.int64) + self.bias.astype(np.int64) if self.bias is not None \
                else np.zeros((n, *osp, w.shape[0]), dtype=np.int64)
        for kpos in np.ndindex(*self.kernel):
            sl = tuple(slice(kpos[d], kpos[d] + self.stride[d] * (osp[d] - 1) + 1, self.stride[d]) for d in range(nd))
            patch = xp[(slice(None), *sl, slice(None))]  # (n, *osp, I)
            if self.kind == "maxpool":
                out = np.maximum(out, patch)
            elif self.kind == "avgpool":
                out = out + patch
            else:
                out = out + np.tensordot(patch, w[(slice(None), *kpos, slice(None))], axes=([-1], [1]))
        if self.layout != "NHWC":
            out = np.moveaxis(out, -1, 1)
        return out


@dataclass
class Model:
    """Layers in topological order from ``input_fmt``/``input_shape`` (the graph input's layout); the
    last layer produces the output."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]
    input_fmt: FixedFormat
    layers: list[Layer]
    output_name: str = ""

    @property
    def output_fmt(self) -> FixedFormat:
        return self.layers[-1].out_fmt if self.layers else self.input_fmt

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].out_shape if self.layers else self.input_shape

    @property
    def output_exps(self) -> np.ndarray | None:
        """Per-field output scale exponents (per-channel scales at the output), else None."""
        return self.layers[-1].out_exps() if self.layers else None

    def sources(self, k: int) -> list[str]:
        """Producer names of layer ``k`` (``""`` = the network input)."""
        ly = self.layers[k]
        if ly.inputs is not None:
            return list(ly.inputs)
        return [self.layers[k - 1].name] if k > 0 else [""]

    @property
    def is_chain(self) -> bool:
        """Every layer reads exactly the previous one (no fork, no join)."""
        return all(self.sources(k) == ([self.layers[k - 1].name] if k else [""]) for k in range(len(self.layers)))

    def run(self, x: np.ndarray, trace: bool = False):
        """Integer reference: (N, n_in) input codes -> (N, n_out) output codes
        (``trace=True``: dict layer name -> output codes)."""
        x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
        if np.any(x < self.input_fmt.lo) or np.any(x > self.input_fmt.hi):
            raise ValueError(f"input codes outside {self.input_fmt.describe()}")
        outs = {"": x}
        for k, layer in enumerate(self.layers):
            srcs = [outs[s] for s in self.sources(k)]
            x = layer.forward(srcs[0] if len(srcs) == 1 else np.concatenate(srcs, axis=1))
            outs[layer.name] = x
        del outs[""]
        return outs if trace else x

    def quantize_input(self, real: np.ndarray) -> np.ndarray:
        """Real input values (already on the input grid) -> integer codes."""
        q = np.rint(np.asarray(real, dtype=np.float64) * 2.0 ** (-self.input_fmt.scale_exp)).astype(np.int64)
        return np.clip(q, self.input_fmt.lo, self.input_fmt.hi).reshape(len(q), -1)

    def summary(self) -> str:
        lines = [f"model {self.name}: input {self.input_shape} {self.input_fmt.describe()}"]
        lines += [f"  {ly.name}: {ly.describe()}" for ly in self.layers]
        return "\n".join(lines)
