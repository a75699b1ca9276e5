"""Plan of an ``io='stream'`` design: which leading layers stream over line buffers (their geometry,
the per-pixel compute unit of each), and a cycle model of the stream control for latency and II.

See :mod:`codesign.rtl.emit.stream` for the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesign.errors import UnsupportedError
from codesign.rtl import ir

STREAM_LIBS = ("cs_pad.v", "cs_window.v", "cs_collect.v")


@dataclass
class Geometry:
    """Spatial geometry of one streamed layer (1-D: ``h = 1``, ``kh = 1``)."""

    h: int
    w: int
    c: int  # input channels
    oh: int
    ow: int
    oc: int  # output channels
    kh: int = 1
    kw: int = 1
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0

    @property
    def hp(self) -> int:
        return self.pt + self.h + self.pb

    @property
    def wp(self) -> int:
        return self.pl + self.w + self.pr

    @property
    def padded(self) -> bool:
        return bool(self.pt or self.pb or self.pl or self.pr)


@dataclass
class StreamPlan:
    perm: np.ndarray | None  # the input transpose (graph input -> channels-last), absorbed into the beat order
    layers: list[ir.Layer]  # streamed layers, in graph order
    geoms: list[Geometry]
    rest: ir.Model | None  # the vector part after the collector (None: the collector output is the output)
    beat_fields: np.ndarray  # (beats, C): input-vector field carried by each beat's field
    sources: list[list[int]] | None = None  # per streamed layer: its producers (-1 = the input); None = a chain

    @property
    def beats(self) -> int:
        return int(self.beat_fields.shape[0])

    def preds(self, i: int) -> list[int]:
        return self.sources[i] if self.sources is not None else [i - 1]

    @property
    def is_chain(self) -> bool:
        return self.sources is None


def _geometry(ly: ir.Layer) -> Geometry:
    if isinstance(ly, ir.Requantize | ir.Add):
        sp = tuple(ly.in_shape[:-1]) or (1,)
        h, w = (1, sp[0]) if len(sp) == 1 else sp
        c = ly.in_shape[-1]
        return Geometry(h, w, c, h, w, c)
    if ly.layout != "NHWC":
        raise UnsupportedError(f"rtl.io='stream': layer {ly.name} ({ly.kind}) is channels-first ({ly.layout}); "
                               "streaming needs channels-last window layers (the codesign export's layout)")
    nd = ly.nd
    if len(ly.in_shape) != nd + 1:
        raise UnsupportedError(f"rtl.io='stream': layer {ly.name} input shape {ly.in_shape} is not (H, W, C) / (L, C)")
    pads = tuple(ly.pads) if ly.pads else (0,) * (2 * nd)
    if nd == 1:
        return Geometry(1, ly.in_shape[0], ly.in_shape[1], 1, ly.out_shape[0], ly.out_shape[1], 1, ly.kernel[0], 1,
                        ly.stride[0], 0, 0, pads[0], pads[1])
    return Geometry(ly.in_shape[0], ly.in_shape[1], ly.in_shape[2], ly.out_shape[0], ly.out_shape[1],
                    ly.out_shape[2], ly.kernel[0], ly.kernel[1], ly.stride[0], ly.stride[1],
                    pads[0], pads[2], pads[1], pads[3])


def _streamed_prefix(m: ir.Model, k0: int, src0: str) -> list[int]:
    """Indices of the streamed layers from ``k0``: window / pixel-wise requant layers and residual adds
    (forks and joins) whose producers all stream, as long as the rest of the network reads only the
    last of them (one exit into the collector)."""
    layers = m.layers
    names = {src0}
    idx: list[int] = []
    k = k0
    while k < len(layers):
        ly, srcs = layers[k], m.sources(k)
        if isinstance(ly, ir.Window | ir.Requantize):
            ok = len(srcs) == 1 and srcs[0] in names and not (isinstance(ly, ir.Requantize) and not idx)
        elif isinstance(ly, ir.Add):
            ok = bool(idx) and len(srcs) == 2 and srcs[0] != srcs[1] and all(s in names for s in srcs)
        else:
            ok = False
        if not ok:
            break
        idx.append(k)
        names.add(ly.name)
        k += 1
    while idx:  # cut back until only the last streamed layer is read by the rest (or is the output)
        inside = {layers[i].name for i in idx} | {src0}
        last = layers[idx[-1]].name
        outside = {s for j in range(idx[-1] + 1, len(layers)) for s in m.sources(j) if s in inside}
        if outside <= {last}:
            break
        idx.pop()
    return idx


def plan_stream(m: ir.Model) -> StreamPlan:
    """Split ``m`` into the streamed window layers and the vector rest (UnsupportedError when the
    network does not start with a window layer)."""
    layers = m.layers
    readers: dict[str, list[int]] = {}
    for k in range(len(layers)):
        for s in m.sources(k):
            readers.setdefault(s, []).append(k)
    k0, perm, src = 0, None, ""
    if layers and isinstance(layers[0], ir.Transpose) and m.sources(0) == [""] and readers.get("", []) == [0]:
        perm, k0, src = np.asarray(layers[0].perm, dtype=np.int64), 1, layers[0].name
    idx = _streamed_prefix(m, k0, src)
    chain = [layers[i] for i in idx]
    k = idx[-1] + 1 if idx else k0
    if not any(isinstance(ly, ir.Window) for ly in chain):
        first = layers[k0].kind if k0 < len(layers) else "nothing"
        raise UnsupportedError(f"rtl.io='stream' needs a network that starts with a window layer (Conv1D/Conv2D/"
                               f"MaxPool/AveragePool on the input pixels); {m.name} starts with {first}: use "
                               "rtl.io='vector' (one whole vector per beat)")
    pos = {ly.name: i for i, ly in enumerate(chain)}
    pos[src] = -1
    sources = [[pos[s] for s in m.sources(i)] for i in idx]
    geoms = [_geometry(ly) for ly in chain]
    for i, g in enumerate(geoms):
        for j in sources[i]:
            if j >= 0:
                a = geoms[j]
                assert (a.oh, a.ow, a.oc) == (g.h, g.w, g.c), (chain[j].name, chain[i].name)
    chain_only = all(s == [i - 1] for i, s in enumerate(sources))
    g0 = geoms[0]
    n_in = int(np.prod(m.input_shape))
    if g0.h * g0.w * g0.c != n_in:
        raise UnsupportedError(f"rtl.io='stream': the first window layer's input {chain[0].in_shape} is not the "
                               f"network input {m.input_shape}")
    idx_in = perm if perm is not None else np.arange(n_in, dtype=np.int64)
    beat_fields = idx_in.reshape(g0.h * g0.w, g0.c)
    rest_layers = layers[k:]
    rest = None
    if rest_layers:
        last = chain[-1]
        rl = tuple(ly if ly.inputs is None else ly.replace(inputs=tuple("" if s == last.name else s for s in ly.inputs))
                   for ly in rest_layers)
        rest = ir.Model(m.name, m.input_name, tuple(last.out_shape), last.out_fmt, rl, m.output_name)
    return StreamPlan(perm, chain, geoms, rest, beat_fields, None if chain_only else sources)


def pe_layer(ly: ir.Layer, g: Geometry) -> ir.Layer:
    """The layer restricted to one output pixel: input = the KH x KW x C window, no padding, stride 1."""
    if isinstance(ly, ir.Requantize):
        return ly.replace(name=f"{ly.name}_pe", in_shape=(g.c,), out_shape=(g.c,), inputs=None)
    if isinstance(ly, ir.Add):  # one pixel of each operand: fields [0, C) and [C, 2C)
        fs = None
        if ly.field_shift is not None:
            per_pixel = np.asarray(ly.field_shift).reshape(-1, g.c)
            if not (per_pixel == per_pixel[0]).all():
                raise UnsupportedError(f"rtl.io='stream': add {ly.name} has field shifts that differ between pixels; "
                                       "use rtl.io='vector'")
            fs = per_pixel[0].copy()
        return ly.replace(name=f"{ly.name}_pe", in_shape=(g.c,), out_shape=(g.c,), inputs=None, field_shift=fs)
    nd = ly.nd
    kw = {}
    if isinstance(ly, ir.AccLayer):  # position 0 = per channel
        kw["field_shift"] = None if ly.field_shift is None else np.asarray(ly.field_shift)[:g.oc].copy()
    return ly.replace(name=f"{ly.name}_pe", in_shape=(*ly.kernel, g.c), out_shape=(*(1,) * nd, g.oc),
                      stride=(1,) * nd, pads=(0,) * (2 * nd), inputs=None, **kw)


# ---- cycle model of the stream control (same counters and handshakes as hw/cs_*.v) -------------
class Pad:
    def __init__(self, g: Geometry):
        self.g, self.r, self.c = g, 0, 0

    def inside(self) -> bool:
        g = self.g
        return g.pt <= self.r < g.pt + g.h and g.pl <= self.c < g.pl + g.w

    def ready(self, out_ready: bool) -> bool:
        return self.inside() and out_ready

    def valid(self, in_valid: bool) -> bool:
        return in_valid if self.inside() else True

    def step(self, in_valid: bool, out_ready: bool) -> None:
        if self.valid(in_valid) and out_ready:
            if self.c == self.g.wp - 1:
                self.c = 0
                self.r = 0 if self.r == self.g.hp - 1 else self.r + 1
            else:
                self.c += 1


class WindowStage:
    def __init__(self, g: Geometry):
        self.g = g
        self.r = self.c = 0
        self.er, self.ec = g.kh - 1, g.kw - 1
        self.ov = False

    def ready(self, out_ready: bool) -> bool:
        return not self.ov or out_ready

    def valid(self, in_valid: bool) -> bool:
        return self.ov

    def step(self, in_valid: bool, out_ready: bool) -> None:
        g = self.g
        if in_valid and self.ready(out_ready):
            self.ov = self.r == self.er and self.c == self.ec
            if self.c == g.wp - 1:
                self.c, self.ec = 0, g.kw - 1
                if self.r == g.hp - 1:
                    self.r, self.er = 0, g.kh - 1
                else:
                    if self.r == self.er:
                        self.er += g.sh
                    self.r += 1
            else:
                if self.c == self.ec:
                    self.ec += g.sw
                self.c += 1
        elif out_ready:
            self.ov = False


class Pipe:  # a fully parallel module: `stages` valid bits, advances with en = !out_valid || out_ready
    def __init__(self, stages: int):
        self.vld = [False] * stages

    def ready(self, out_ready: bool) -> bool:
        return not self.vld[-1] or out_ready

    def valid(self, in_valid: bool) -> bool:
        return self.vld[-1]

    def step(self, in_valid: bool, out_ready: bool) -> None:
        if self.ready(out_ready):
            self.vld = [in_valid] + self.vld[:-1]


class Collect:
    def __init__(self, n: int):
        self.n, self.cnt, self.ov = n, 0, False

    def ready(self, out_ready: bool) -> bool:
        return not self.ov or out_ready

    def valid(self, in_valid: bool) -> bool:
        return self.ov

    def step(self, in_valid: bool, out_ready: bool) -> None:
        if in_valid and self.ready(out_ready):
            self.ov = self.cnt == self.n - 1
            self.cnt = 0 if self.cnt == self.n - 1 else self.cnt + 1
        elif out_ready:
            self.ov = False


class Fifo:  # hw/cs_fifo.v: registered full/empty, a full FIFO takes no word even when one leaves
    def __init__(self, depth: int):
        self.depth, self.n = depth, 0

    def ready(self, out_ready: bool) -> bool:
        return self.n < self.depth

    def valid(self, in_valid: bool) -> bool:
        return self.n > 0

    def step(self, in_valid: bool, out_ready: bool) -> None:
        push = in_valid and self.n < self.depth
        pop = out_ready and self.n > 0
        self.n += int(push) - int(pop)


def stream_timing(stages: list, beats: int, tail: int, images: int = 16, preds: list[list[int]] | None = None,
                  stall=None) -> tuple[int, int, list[int], list[int]]:
    """Simulate ``images`` vectors through the stream stages (input always valid, output always ready).
    ``tail``: cycles from the last stage's output to the top output. ``preds``: per stage its producer
    stages (-1 = the input; default: a chain). A stage read by several stages is a lazy fork (every reader
    takes the beat in the same cycle); a stage with two producers is a join whose producers are
    :class:`Fifo` stages (it takes a beat when both hold one). ``stall(cycle) -> (in_gap, out_stall)``
    adds input gaps and output backpressure (the checks of a FIFO sizing). Returns (latency, II,
    latencies, IIs)."""
    n = len(stages)
    preds = preds if preds is not None else [[i - 1] for i in range(n)]
    cons: dict[int, list[int]] = {j: [] for j in range(-1, n)}
    for i, ps in enumerate(preds):
        for p in ps:
            cons[p].append(i)
        if len(ps) > 1:
            assert all(isinstance(stages[p], Fifo) for p in ps), "a join reads FIFOs"
    n_beats = beats * images
    fed, first, outs, cycle = 0, [], [], 0
    limit = 1000 * (n_beats + 100)
    while len(outs) < images and cycle < limit:
        gap, hold = stall(cycle) if stall is not None else (False, False)
        out_ready = [False] * n
        eready: dict[tuple[int, int], bool] = {}
        for i in range(n - 1, -1, -1):
            out_ready[i] = not hold if i == n - 1 else all(eready[(i, c)] for c in cons[i])
            r = stages[i].ready(out_ready[i])
            ps = preds[i]
            for p in ps:
                eready[(p, i)] = r and all(stages[q].valid(False) for q in ps if q != p)
        src_valid = fed < n_beats and not gap
        vout: dict[int, bool] = {-1: src_valid}
        vin = [False] * n
        for i in range(n):
            ps = preds[i]
            if len(ps) == 1:
                p = ps[0]
                vin[i] = vout[p] and all(eready[(p, c)] for c in cons[p] if c != i)
            else:
                vin[i] = all(vout[p] for p in ps)
            vout[i] = stages[i].valid(vin[i])
        if src_valid and all(eready[(-1, c)] for c in cons[-1]):
            if fed % beats == 0:
                first.append(cycle)
            fed += 1
        if vout[n - 1] and out_ready[n - 1]:  # the last stage hands a vector on
            outs.append(cycle + tail)
        for i, st in enumerate(stages):
            st.step(vin[i], out_ready[i])
        cycle += 1
    if len(outs) < images:  # pragma: no cover - a model error, not a user error
        raise RuntimeError("stream timing model: no progress")
    lats = [o - f for o, f in zip(outs, first, strict=False)]
    iis = [b - a for a, b in zip(first, first[1:], strict=False)]
    return max(lats), max(iis) if iis else 1, lats, iis
