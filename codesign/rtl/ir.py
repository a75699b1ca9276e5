"""Integer IR of a quantized network, the input of the Verilog emitter.

A :class:`Model` is a tuple of layers in topological order; a layer consumes the outputs of
``Layer.inputs`` (layer names, ``""`` = the network input; ``None`` = the previous layer in the list, or
the network input for the first), each as a flat vector whose order is the C-order flattening of the
tensor as laid out in the ONNX graph (channels-last for convolutions). Only :class:`Add` has two inputs;
a layer output read by several layers is a fork (residual skip). Codes and formats: :mod:`codesign.rtl.formats`.

One frozen dataclass per layer kind (dispatch with ``isinstance``; ``kind`` is the name used in
headers, reports and ``interface.json``):

:class:`Dense`      ``acc[j] = bias[j] + sum_i x[i] * weights[i, j]``; weights shaped ``(n_in, n_out)``.
:class:`Conv`       ``conv1d``/``conv2d``, channels-last (``layout='NHWC'``: input ``(H, W, C)``, weights
                    ``(O, kh, kw, I)``) or channels-first (``layout='NCHW'``: input ``(C, H, W)``, weights
                    ``(O, I, kh, kw)``), with ``stride`` and ``pads`` (begin..., end...), zero padding.
                    conv1d drops the H axis.
:class:`MaxPool`    max over a window (channels-last or -first, no padding).
:class:`AvgPool`    sum over a window of ``2^k`` elements (zero padding counted, ``count_include_pad``):
                    the accumulator of AveragePool / GlobalAveragePool at scale ``in scale - k``.
:class:`Add`        elementwise sum of two activations of the same shape (residual join):
                    ``acc[j] = (a[j] << (a scale - acc scale)) + (b[j] << (b scale - acc scale))``, acc scale
                    = the finer input scale (exact, like the golden model). The input vector is ``a`` then
                    ``b``; ``in_fmt`` is a's format, ``in_fmt2`` b's.
:class:`Requantize` elementwise relu / requantization of the input (a Relu/Quant not fused into a layer).
:class:`Flatten`    a reshape: no data movement.
:class:`Transpose`  a permutation of the fields (``perm``: output field ``k`` is input field ``perm[k]``).

Accumulator layers (:class:`AccLayer`: Dense, Conv, AvgPool, Add) produce an accumulator at ``acc_fmt``
(linear layers: scale = in scale + weight scale) and, when ``requant`` is set, the requantized
activation at ``out_fmt``; otherwise ``out_fmt == acc_fmt``.

Per-channel weight scales (``2^e_c`` per output channel): the weight codes are stored *aligned* to the
finest channel scale (``code << (e_c - min e)``), so the accumulator has one scale and the IR arithmetic
is unchanged. ``field_shift[j]`` records that every term and the bias of output field ``j`` is a multiple of
``2^field_shift[j]``: the fully parallel emitter divides them out (the adder tree computes the channel's own
accumulator) and requantizes with ``shift - field_shift[j]``. ``field_out`` (the network output only,
without requantization or with a bare relu): field ``j`` is emitted at its own scale ``acc scale +
field_shift[j]``, i.e. the accumulator divided by ``2^field_shift[j]`` (exact) before the relu, like the
golden model's per-channel output codes.

``pot`` is *computed* from the weight codes (every non-zero ``|w|`` is a power of two), never trusted
from a tag. :meth:`Model.run` is the numpy integer reference of the IR (used by the tests);
:meth:`Model.to_json` / :func:`model_from_json` save and load it (``rtl/ir.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from codesign.rtl.formats import (  # noqa: F401  (re-exported: the IR's vocabulary)
    ROUNDING_MODES,
    FixedFormat,
    MulShift,
    Requant,
    Thresholds,
    bits_for,
    normalize_rounding,
    requant_from_json,
    shift_round,
)


@dataclass(frozen=True, eq=False, kw_only=True)
class Layer:
    """Fields every layer has."""

    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_fmt: FixedFormat
    out_fmt: FixedFormat
    onnx_output: str
    onnx_nodes: tuple[str, ...] = ()
    inputs: tuple[str, ...] | None = None  # producer layer names ("" = network input); None: previous layer

    kind: ClassVar[str] = ""
    is_wiring: ClassVar[bool] = False  # flatten / transpose: no logic, wires in the top level

    def replace(self, **changes: Any) -> Layer:
        return dataclasses.replace(self, **changes)

    @property
    def n_in(self) -> int:
        """Input fields."""
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    def in_field(self, i: int) -> tuple[int, FixedFormat]:
        """(bit offset in the packed input vector, format) of input field ``i``."""
        return i * self.in_fmt.bits, self.in_fmt

    @property
    def in_bits(self) -> int:
        """Width of the packed input vector."""
        return self.n_in * self.in_fmt.bits

    @property
    def pot(self) -> bool:
        return False

    @property
    def sparsity(self) -> float:
        return 0.0

    def out_exps(self) -> np.ndarray | None:
        """Per-field output scale exponents (else None: ``out_fmt.scale_exp``)."""
        return None

    def field_channels(self) -> np.ndarray:
        """Output channel of every output field (elementwise layers: the field itself)."""
        return np.arange(self.n_out)

    def describe(self) -> str:
        return (f"{self.kind} {self.in_shape}->{self.out_shape}, "
                f"in {self.in_fmt.describe()}, out {self.out_fmt.describe()}")

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - every kind overrides it
        raise NotImplementedError(self.kind)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, FixedFormat | Requant | Thresholds | MulShift):
                v = v.to_json()
            elif isinstance(v, np.ndarray):
                v = {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()}
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d


# ---- window geometry (conv / pools) --------------------------------------------------------------
@dataclass(frozen=True, eq=False, kw_only=True)
class Window(Layer):
    """A layer sliding a ``kernel`` over a 1-D/2-D feature map."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[int, ...] = ()
    layout: str = "NHWC"

    @property
    def nd(self) -> int:
        return len(self.kernel) if isinstance(self, Conv) else (1 if len(self.in_shape) == 2 else 2)

    def _spatial(self):
        """(in spatial dims, in channels, out spatial dims, out channels, index fns)."""
        nd = self.nd
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

    def _window_terms(self, term) -> list[list[tuple[int, int]]]:
        """Per output field, ``term(input index fn, input position, kernel position, out channel)`` lists
        over the window, padding positions skipped."""
        nd, isp, ic, osp, oc, iidx, oidx = self._spatial()
        conns: list[list[tuple[int, int]]] = [[] for _ in range(self.n_out)]
        for opos in np.ndindex(*osp):
            for o in range(oc):
                terms = []
                for kpos in np.ndindex(*self.kernel):
                    ipos = tuple(opos[d] * self.stride[d] + kpos[d] - (self.pads[d] if self.pads else 0)
                                 for d in range(nd))
                    if any(p < 0 or p >= isp[d] for d, p in enumerate(ipos)):
                        continue  # zero padding
                    terms += term(iidx, ipos, kpos, o, ic)
                conns[oidx(opos, o)] = terms
        return conns

    def connections(self) -> list[list[tuple[int, int]]]:
        """Pools: per output field, the input fields of its window (weight 1)."""
        return self._window_terms(lambda iidx, ipos, kpos, o, ic: [(iidx(ipos, o), 1)])

    def field_channels(self) -> np.ndarray:
        nd, isp, ic, osp, oc, iidx, oidx = self._spatial()
        ch = np.zeros(self.n_out, dtype=np.int64)
        for opos in np.ndindex(*osp):
            for o in range(oc):
                ch[oidx(opos, o)] = o
        return ch

    def _forward_window(self, x: np.ndarray) -> np.ndarray:
        """Batch (N, *in_shape) -> (N, *out_shape) int64 (conv: without bias)."""
        nd = self.nd
        if self.layout != "NHWC":  # to channels-last
            x = np.moveaxis(x, 1, -1)
        n = x.shape[0]
        pads = self.pads if self.pads else (0,) * (2 * nd)
        padw = [(0, 0)] + [(pads[d], pads[d + nd]) for d in range(nd)] + [(0, 0)]
        fill = np.iinfo(np.int64).min if isinstance(self, MaxPool) else 0
        xp = np.pad(x, padw, constant_values=fill)
        osp = [(xp.shape[1 + d] - self.kernel[d]) // self.stride[d] + 1 for d in range(nd)]
        out = self._window_init(n, osp, x.shape[-1])
        for kpos in np.ndindex(*self.kernel):
            sl = tuple(slice(kpos[d], kpos[d] + self.stride[d] * (osp[d] - 1) + 1, self.stride[d]) for d in range(nd))
            out = self._window_step(out, xp[(slice(None), *sl, slice(None))], kpos)  # patch (n, *osp, I)
        if self.layout != "NHWC":
            out = np.moveaxis(out, -1, 1)
        return out

    def _window_init(self, n: int, osp: list[int], ch: int) -> np.ndarray:
        return np.zeros((n, *osp, ch), dtype=np.int64)

    def _window_step(self, out: np.ndarray, patch: np.ndarray, kpos: tuple[int, ...]) -> np.ndarray:
        return out + patch

    def describe_window(self) -> str:
        return f"kernel {self.kernel}, stride {self.stride}, pads {self.pads}, layout {self.layout}"


# ---- accumulator layers -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, kw_only=True)
class AccLayer(Layer):
    """A layer producing an accumulator at ``acc_fmt`` with an optional fused requantization."""

    acc_fmt: FixedFormat
    requant: Requant | Thresholds | MulShift | None = None
    field_shift: np.ndarray | None = None  # per output field: power-of-two factor of terms and bias
    field_out: bool = False  # output field j at scale acc scale + field_shift[j] (network output only)

    def bias_vector(self) -> np.ndarray:
        """Bias per output field."""
        return np.zeros(self.n_out, dtype=np.int64)

    def acc_bounds(self) -> list[tuple[int, int]]:
        """Exact accumulator range per output field for inputs anywhere in their formats' ranges."""
        lo_x, hi_x = self.in_fmt.lo, self.in_fmt.hi
        n_a = int(np.prod(self.in_shape))
        f2 = getattr(self, "in_fmt2", None)  # Add: the second operand's fields come after the first's
        res = []
        for terms, b in zip(self.connections(), self.bias_vector(), strict=True):
            lo = hi = int(b)
            for i, wv in terms:
                if f2 is not None and i >= n_a:
                    a, c = wv * f2.lo, wv * f2.hi
                else:
                    a, c = wv * lo_x, wv * hi_x
                lo += min(a, c)
                hi += max(a, c)
            res.append((lo, hi))
        return res

    def out_exps(self) -> np.ndarray | None:
        if not self.field_out:
            return None
        return self.out_fmt.scale_exp + np.asarray(self.field_shift, dtype=np.int64)

    def describe(self) -> str:
        s = f"{self.kind} {self.in_shape}->{self.out_shape}, in {self.in_fmt.describe()}" + self._describe_terms()
        if self.field_shift is not None:
            s += f", per-channel scales (field shifts {int(np.min(self.field_shift))}..{int(np.max(self.field_shift))})"
        s += f", acc {self.acc_fmt.describe()}"
        if self.requant is not None:
            s += f", {self.requant.describe()}"
        return s + f", out {self.out_fmt.describe()}" + (" + field shift" if self.field_out else "")

    def _describe_terms(self) -> str:
        """What the accumulator sums (a second operand, the weights)."""
        return ""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Batch ``x`` of shape (N, n_in) int64 codes -> (N, n_out) codes. Computed from the weight
        tensors directly (not from :meth:`connections`), so it cross-checks the emitter."""
        acc = self._accumulate(np.asarray(x, dtype=np.int64))
        if self.field_out:  # exact: every field is a multiple of 2^field_shift
            acc = acc >> np.asarray(self.field_shift, dtype=np.int64)[None, :]
        if isinstance(self.requant, Thresholds | MulShift):
            return self.requant.apply(acc, self.field_channels())
        return self.requant.apply(acc) if self.requant is not None else acc

    def _accumulate(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - every kind overrides it
        raise NotImplementedError(self.kind)


@dataclass(frozen=True, eq=False, kw_only=True)
class Linear(AccLayer):
    """Dense / Conv: integer weight codes (at ``2^w_scale_exp``) and an optional bias at acc scale."""

    weights: np.ndarray
    bias: np.ndarray | None = None  # integer codes at acc scale
    w_scale_exp: int = 0

    @property
    def pot(self) -> bool:
        """True when every non-zero weight code is +-2^k (checked on the values)."""
        a = np.abs(self.weights.astype(np.int64).ravel())
        a = a[a != 0]
        return bool(np.all((a & (a - 1)) == 0))

    @property
    def sparsity(self) -> float:
        if self.weights.size == 0:
            return 0.0
        return float(np.mean(self.weights == 0))

    @property
    def n_channels(self) -> int:
        """Output channels (rows of the bias)."""
        raise NotImplementedError  # pragma: no cover

    def acc_bounds(self) -> list[tuple[int, int]]:
        """As :meth:`AccLayer.acc_bounds` (each term at the end of the input range its weight's sign picks,
        padding contributing nothing), computed as two passes of the layer over constant inputs, split by
        weight sign: a CNV conv layer has ~10^7 terms."""
        w = self.weights.astype(np.int64)
        pos = self.replace(weights=np.maximum(w, 0), bias=None)
        neg = self.replace(weights=np.minimum(w, 0), bias=None)

        def const(v: int) -> np.ndarray:
            return np.full((1, int(np.prod(self.in_shape))), int(v), dtype=np.int64)

        lo_x, hi_x = const(self.in_fmt.lo), const(self.in_fmt.hi)
        b = self.bias_vector()
        lo = b + pos._accumulate(lo_x)[0] + neg._accumulate(hi_x)[0]
        hi = b + pos._accumulate(hi_x)[0] + neg._accumulate(lo_x)[0]
        return list(zip(lo.tolist(), hi.tolist(), strict=True))

    def _describe_terms(self) -> str:
        return f", weights {'pot' if self.pot else 'fixed'} x 2^{self.w_scale_exp}, sparsity {self.sparsity:.2f}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(Linear):
    kind: ClassVar[str] = "dense"

    @property
    def n_channels(self) -> int:
        return int(self.weights.shape[1])

    def connections(self) -> list[list[tuple[int, int]]]:
        """Per output field, the non-zero terms ``(input field, weight code)``."""
        w = self.weights
        return [[(i, int(w[i, j])) for i in range(w.shape[0]) if w[i, j] != 0] for j in range(w.shape[1])]

    def bias_vector(self) -> np.ndarray:
        if self.bias is None:
            return np.zeros(self.n_out, dtype=np.int64)
        return self.bias.astype(np.int64)

    def _accumulate(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weights.astype(np.int64) + self.bias_vector()[None, :]


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv(Linear, Window):
    @property
    def kind(self) -> str:  # type: ignore[override]
        return "conv1d" if len(self.kernel) == 1 else "conv2d"

    @property
    def n_channels(self) -> int:
        return int(self.weights.shape[0])

    def _w(self) -> np.ndarray:
        """Weights as (O, k..., I) for NHWC or (O, I, k...) for NCHW, conv1d without the unit H axis."""
        w = self.weights
        if len(self.kernel) == 1 and w.ndim == 4:  # (O, 1, k, I) / (O, I, 1, k)
            w = w[:, 0] if self.layout == "NHWC" else w[:, :, 0]
        return w

    def _conv_w(self, o: int, kpos: tuple[int, ...], c: int) -> int:
        w = self._w()
        if self.layout == "NHWC":
            return int(w[(o, *kpos, c)])
        return int(w[(o, c, *kpos)])

    def connections(self) -> list[list[tuple[int, int]]]:
        def term(iidx, ipos, kpos, o, ic):
            return [(iidx(ipos, c), wv) for c in range(ic) if (wv := self._conv_w(o, kpos, c)) != 0]
        return self._window_terms(term)

    def bias_vector(self) -> np.ndarray:
        if self.bias is None:
            return np.zeros(self.n_out, dtype=np.int64)
        return self.bias.astype(np.int64)[self.field_channels()]

    def _accumulate(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        return self._forward_window(x.reshape(n, *self.in_shape)).reshape(n, -1)

    def _window_init(self, n: int, osp: list[int], ch: int) -> np.ndarray:
        o = self._w().shape[0]
        out = np.zeros((n, *osp, o), dtype=np.int64)
        return out + self.bias.astype(np.int64) if self.bias is not None else out

    def _window_step(self, out: np.ndarray, patch: np.ndarray, kpos: tuple[int, ...]) -> np.ndarray:
        w = self._w().astype(np.int64)
        if self.layout != "NHWC":
            w = np.moveaxis(w, 1, -1)  # (O, I, k..) -> (O, k.., I)
        return out + np.tensordot(patch, w[(slice(None), *kpos, slice(None))], axes=([-1], [1]))


@dataclass(frozen=True, eq=False, kw_only=True)
class AvgPool(AccLayer, Window):
    kind: ClassVar[str] = "avgpool"

    def _accumulate(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        return self._forward_window(x.reshape(n, *self.in_shape)).reshape(n, -1)


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(AccLayer):
    kind: ClassVar[str] = "add"
    in_fmt2: FixedFormat  # format of the second operand

    @property
    def n_in(self) -> int:
        return 2 * int(np.prod(self.in_shape))

    def in_field(self, i: int) -> tuple[int, FixedFormat]:
        n = int(np.prod(self.in_shape))
        if i >= n:
            return n * self.in_fmt.bits + (i - n) * self.in_fmt2.bits, self.in_fmt2
        return i * self.in_fmt.bits, self.in_fmt

    @property
    def in_bits(self) -> int:
        return int(np.prod(self.in_shape)) * (self.in_fmt.bits + self.in_fmt2.bits)

    def add_shifts(self) -> tuple[int, int]:
        """Left shifts of the two operands onto the accumulator scale."""
        e = self.acc_fmt.scale_exp
        return self.in_fmt.scale_exp - e, self.in_fmt2.scale_exp - e

    def connections(self) -> list[list[tuple[int, int]]]:
        """``(j, 2^sa), (n + j, 2^sb)``."""
        n = int(np.prod(self.in_shape))
        sa, sb = self.add_shifts()
        return [[(j, 1 << sa), (n + j, 1 << sb)] for j in range(n)]

    def _describe_terms(self) -> str:
        return f" + {self.in_fmt2.describe()}"

    def _accumulate(self, x: np.ndarray) -> np.ndarray:
        sa, sb = self.add_shifts()
        na = int(np.prod(self.in_shape))
        return (x[:, :na] << sa) + (x[:, na:] << sb)


# ---- other layers -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, kw_only=True)
class MaxPool(Window):
    kind: ClassVar[str] = "maxpool"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        n = x.shape[0]
        return self._forward_window(x.reshape(n, *self.in_shape)).reshape(n, -1)

    def _window_init(self, n: int, osp: list[int], ch: int) -> np.ndarray:
        return np.full((n, *osp, ch), np.iinfo(np.int64).min, dtype=np.int64)

    def _window_step(self, out: np.ndarray, patch: np.ndarray, kpos: tuple[int, ...]) -> np.ndarray:
        return np.maximum(out, patch)


@dataclass(frozen=True, eq=False, kw_only=True)
class Requantize(Layer):
    """Elementwise relu / requantization of the input codes."""

    kind: ClassVar[str] = "requant"
    requant: Requant | Thresholds | MulShift
    field_ch: np.ndarray | None = None  # thresholds: the channel of every field (None: field = channel)

    def field_channels(self) -> np.ndarray:
        return np.arange(self.n_out) if self.field_ch is None else np.asarray(self.field_ch, np.int64)

    def describe(self) -> str:
        return (f"{self.kind} {self.in_shape}->{self.out_shape}, in {self.in_fmt.describe()}, "
                f"{self.requant.describe()}, out {self.out_fmt.describe()}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        if isinstance(self.requant, Thresholds | MulShift):
            return self.requant.apply(np.asarray(x, dtype=np.int64), self.field_channels())
        return self.requant.apply(np.asarray(x, dtype=np.int64))


@dataclass(frozen=True, eq=False, kw_only=True)
class Flatten(Layer):
    kind: ClassVar[str] = "flatten"
    is_wiring: ClassVar[bool] = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)


@dataclass(frozen=True, eq=False, kw_only=True)
class Transpose(Layer):
    kind: ClassVar[str] = "transpose"
    is_wiring: ClassVar[bool] = True
    perm: np.ndarray  # output field k is input field perm[k]

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)[:, self.perm]


LAYER_TYPES: dict[str, type[Layer]] = {"dense": Dense, "conv1d": Conv, "conv2d": Conv, "avgpool": AvgPool,
                                       "add": Add, "maxpool": MaxPool, "requant": Requantize, "flatten": Flatten,
                                       "transpose": Transpose}


def layer_from_json(d: dict[str, Any]) -> Layer:
    cls = LAYER_TYPES[d["kind"]]
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if isinstance(v, dict) and "dtype" in v:
            v = np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"])
        elif isinstance(v, dict) and "type" in v:
            v = requant_from_json(v)
        elif isinstance(v, dict) and "bits" in v:
            v = FixedFormat.from_json(v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[f.name] = v
    return cls(**kw)


@dataclass(frozen=True, eq=False)
class Model:
    """Layers in topological order from ``input_fmt``/``input_shape`` (the graph input's layout); the
    last layer produces the output."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]
    input_fmt: FixedFormat
    layers: tuple[Layer, ...]
    output_name: str = ""
    host_pre: bool = False  # float pre-processing on the host computes the input codes (see codesign.graph)
    host_post: bool = False  # float post-processing on the host after the output codes
    output_scales: tuple[float, ...] | None = None  # output codes with float scales: the real scale per field

    def replace(self, **changes: Any) -> Model:
        return dataclasses.replace(self, **changes)

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

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "input_name": self.input_name, "input_shape": list(self.input_shape),
                "input_fmt": self.input_fmt.to_json(), "output_name": self.output_name, "host_pre": self.host_pre,
                "host_post": self.host_post,
                "output_scales": None if self.output_scales is None else list(self.output_scales),
                "layers": [ly.to_json() for ly in self.layers]}


def model_from_json(d: dict[str, Any]) -> Model:
    os_ = d.get("output_scales")
    return Model(d["name"], d["input_name"], tuple(d["input_shape"]), FixedFormat.from_json(d["input_fmt"]),
                 tuple(layer_from_json(x) for x in d["layers"]), d.get("output_name", ""),
                 bool(d.get("host_pre", False)), bool(d.get("host_post", False)),
                 None if os_ is None else tuple(float(v) for v in os_))
