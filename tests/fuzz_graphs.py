"""Random small QONNX graphs for the whole-chain fuzz test (tests/test_fuzz.py).

A graph is described by a plain dict (a *spec*: JSON-like, so a failing one can be pasted into an
``@example``); :func:`graph_spec` is the hypothesis strategy that draws specs and :func:`build_graph`
turns a spec into an onnx.helper model. What is drawn is what both the golden model and the RTL
frontend support (codesign/rtl/frontend/__init__.py):

* the input: ``Quant`` with a power-of-two scale (2..8 bits, signed or not, narrow, any rounding mode) or
  a 1-bit signed ``Quant`` (the bipolar sign), of a flat vector or an NCHW feature map (<= 6x6, <= 3 ch);
* up to three blocks, window blocks first:

  - ``dense``: ``MatMul`` or ``Gemm`` (``transB`` either way) of quantized weights;
  - ``conv``: 2-D ``Conv`` (kernel 1..3, stride 1..2, zero padding 0..1), optionally followed by
    ``MaxPool`` or an ``AveragePool`` over a power-of-two window requantized by ``Trunc`` or ``Quant``;
  - ``residual``: a dense or same-shape conv branch, its quantizer, ``Add`` with the block input and a
    ``Quant`` after the join;

* weights: ``Quant`` (2..8 bits, narrow or not, any rounding mode) with a power-of-two scale per tensor
  or per output channel, or a float scale per tensor or per channel, or ``BipolarQuant`` (+-scale);
  pruned zeros: random entries, whole output channels and whole input columns set to 0;
* optional quantized bias (exact accumulators only), optional float epilogue (``Mul`` by a float
  per-channel constant, or ``BatchNormalization`` with negative and tiny gammas), optional ``Relu``, then
  the activation quantizer: ``Quant`` with a power-of-two or a float scale (1..8 bits, signed or not,
  narrow, any rounding mode) or ``BipolarQuant``; the float ones become threshold epilogues in RTL, kept
  to <= 4 bits (15 thresholds per channel: an 8-bit table made one Icarus simulation take minutes).

The strategy keeps to what the frontend documents as supported: a float-scaled accumulator (float input
or weight scale) has no integer bias and ends in a float epilogue, residual joins only add power-of-two,
non-bipolar codes, padded convolutions never read bipolar codes, the graph output is a quantizer's.
"""

from __future__ import annotations

import numpy as np
from golden_models import QDOMAIN, const, make_model, quant_node
from hypothesis import strategies as st
from onnx import helper

MODES = ["ROUND", "FLOOR", "CEIL", "DOWN", "HALF_UP", "HALF_DOWN", "UP", "HALF_EVEN", "floor"]  # qonnx names
TRUNC_MODES = ["ROUND", "FLOOR", "CEIL"]


# ------------------------------------------------------------------------------------------- strategy
def _quant(draw, bits=(1, 8), exp=(-5, 1), float_ok=True, bipolar_ok=True) -> dict:
    """An activation quantizer: kind quant (po2 or float scale) / bipolar."""
    kinds = ["po2", "po2"] + (["float"] if float_ok else []) + (["bipolar"] if bipolar_ok else [])
    kind = draw(st.sampled_from(kinds))
    q = {"kind": kind, "exp": draw(st.integers(*exp))}
    if kind == "bipolar":
        return q
    q.update(bits=draw(st.integers(*bits)), signed=draw(st.booleans()), narrow=draw(st.booleans()),
             mode=draw(st.sampled_from(MODES)))
    if q["bits"] == 1 and q["signed"] and not bipolar_ok:
        q["signed"] = False
    if q["bits"] == 1 and not q["signed"]:
        q["narrow"] = False  # a narrow unsigned 1-bit quantizer holds only 0
    if kind == "float":
        q["frac"] = draw(st.sampled_from([0.75, 0.6180339887, 0.5 + 2.0**-9, 0.9, 0.3]))
    return q


def _weights(draw) -> dict:
    return {"scale": draw(st.sampled_from(["po2", "po2", "po2_ch", "float", "float_ch", "bipolar"])),
            "bits": draw(st.integers(2, 8)), "narrow": draw(st.booleans()), "mode": draw(st.sampled_from(MODES)),
            "exp": draw(st.integers(-5, 0)),
            "prune": draw(st.sampled_from(["none", "random", "rows", "cols", "all_but_one"]))}


def _is_exact(q: dict) -> bool:
    return q["kind"] == "po2" and not (q["bits"] == 1 and q["signed"])


def _is_bipolar(q: dict) -> bool:
    return q["kind"] == "bipolar" or (q["kind"] != "bipolar" and q["bits"] == 1 and q["signed"])


@st.composite
def graph_spec(draw) -> dict:
    """A spec for :func:`build_graph` (see the module docstring)."""
    image = draw(st.booleans())
    bipolar_in = draw(st.integers(0, 7)) == 0
    qin = {"kind": "po2", "exp": draw(st.integers(-4, 1)), "bits": 1 if bipolar_in else draw(st.integers(2, 8)),
           "signed": True if bipolar_in else draw(st.booleans()), "narrow": draw(st.booleans()),
           "mode": draw(st.sampled_from(MODES))}
    if bipolar_in:
        qin["narrow"] = False
    if image:
        shape = [draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6))]
        while shape[0] * shape[1] * shape[2] > 36:  # small designs: one simulation stays seconds
            shape[2 if shape[2] >= shape[1] else 1] -= 1
    else:
        shape = [draw(st.integers(1, 12))]
    spec = {"seed": draw(st.integers(0, 2**16)), "input": qin, "shape": shape, "layers": []}
    n_layers = draw(st.integers(1, 3))
    cur_q, cur_shape = qin, list(shape)
    for _ in range(n_layers):
        kinds = ["dense", "residual"] + (["conv", "conv"] if len(cur_shape) == 3 else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "residual" and not _is_exact(cur_q):
            kind = "dense" if len(cur_shape) == 1 or draw(st.booleans()) else "conv"
        ly: dict = {"kind": kind}
        if kind == "residual":
            ly["branch"] = "conv" if len(cur_shape) == 3 and draw(st.booleans()) else "dense"
        w = _weights(draw)
        exact_in = cur_q["kind"] != "float"
        exact_acc = exact_in and w["scale"] in ("po2", "po2_ch", "bipolar")
        if kind == "residual":  # the branch must produce power-of-two codes
            w["scale"] = draw(st.sampled_from(["po2", "po2_ch", "bipolar"]))
            exact_acc = True
        ly["w"] = w
        ly["op"] = draw(st.sampled_from(["MatMul", "Gemm", "Gemm_t"]))
        ly["bias"] = exact_acc and draw(st.booleans())
        ly["bias_exp"] = draw(st.integers(-10, -2))
        ly["relu"] = draw(st.booleans())
        conv_like = kind == "conv" or (kind == "residual" and ly["branch"] == "conv")
        if conv_like:
            c, h, wd = cur_shape
            if kind == "residual":
                k = draw(st.sampled_from([1, 3]))
                ly.update(k=k, stride=1, pad=(k - 1) // 2, n_out=c)
            else:
                k = draw(st.integers(1, min(3, h, wd)))
                ly.update(k=k, stride=draw(st.integers(1, 2)), pad=draw(st.integers(0, 1)),
                          n_out=draw(st.integers(1, 4)))
            if _is_bipolar(cur_q):
                ly["pad"] = 0
                if kind == "residual":  # unreachable (residual needs exact codes), kept for clarity
                    ly["k"] = 1
        else:
            n_in = int(np.prod(cur_shape))
            ly["n_out"] = n_in if kind == "residual" else draw(st.integers(1, 12))
        # epilogue: float op before the quantizer
        ly["epi"] = draw(st.sampled_from(["none", "none", "mul", "bn"]))
        need_float = not exact_acc
        act = _quant(draw, float_ok=kind != "residual", bipolar_ok=kind != "residual")
        if kind == "residual":
            ly["epi"] = "none"
            ly["join"] = _quant(draw)
            if ly["join"]["kind"] == "float":
                ly["join"]["bits"] = min(ly["join"]["bits"], 4)
        if need_float and act["kind"] == "po2" and ly["epi"] == "none":
            ly["epi"] = draw(st.sampled_from(["mul", "bn"]))
        if not exact_acc or ly["epi"] != "none" or not _is_exact(act):  # a threshold epilogue: <= 15 levels
            if act["kind"] != "bipolar":
                act["bits"] = min(act["bits"], 4)
        ly["act"] = act
        ly["epi_seed"] = draw(st.integers(0, 2**16))
        out_q = ly["join"] if kind == "residual" else act
        # output shape
        if conv_like:
            c, h, wd = cur_shape
            k, s, p = ly["k"], ly["stride"], ly["pad"]
            oh, ow = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
            cur_shape = [ly["n_out"], oh, ow]
            pool = draw(st.sampled_from(["none", "none", "max", "avg", "avg12", "gap"])) if kind == "conv" else "none"
            if pool == "max" and (oh < 2 or ow < 2):
                pool = "none"
            if pool in ("avg", "avg12", "gap") and not _is_exact(act):
                pool = "none"
            if pool == "avg" and (oh < 2 or ow < 2):
                pool = "none"
            if pool == "avg12" and ow < 2:
                pool = "none"
            if pool == "gap" and (oh * ow) & (oh * ow - 1):
                pool = "none"
            ly["pool"] = pool
            if pool != "none":
                ly["pool_q"] = draw(st.sampled_from(["trunc", "quant"])) if pool != "max" else "none"
                ly["pool_mode"] = draw(st.sampled_from(TRUNC_MODES if ly["pool_q"] == "trunc" else MODES))
                ly["pool_bits"] = draw(st.integers(2, 8))
                ly["pool_shift"] = draw(st.integers(0, 2))
                if pool == "max":
                    cur_shape = [ly["n_out"], oh // 2, ow // 2]
                elif pool == "avg":
                    cur_shape = [ly["n_out"], oh // 2, ow // 2]
                elif pool == "avg12":
                    cur_shape = [ly["n_out"], oh, ow // 2]
                else:
                    cur_shape = [ly["n_out"], 1, 1]
                if pool != "max":
                    out_q = {"kind": "po2", "bits": ly["pool_bits"], "signed": act["signed"], "narrow": False,
                             "exp": act["exp"] + ly["pool_shift"], "mode": "ROUND"}
        else:
            cur_shape = [ly["n_out"]]
            ly["pool"] = "none"
        spec["layers"].append(ly)
        cur_q = out_q
    return spec


# ---------------------------------------------------------------------------------------------- build
class _B:
    """Graph builder: nodes, initializers, unique names."""

    def __init__(self, seed: int):
        self.nodes, self.inits = [], []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def quant(self, src: str, q: dict, stem: str = "q", scale=None, zp=0) -> str:
        out = self.name(stem)
        if q["kind"] == "bipolar":
            s = self.name("bs")
            self.inits.append(const(s, 2.0 ** q["exp"]))
            self.nodes.append(helper.make_node("BipolarQuant", [src, s], [out], domain=QDOMAIN, name=f"n_{out}"))
            return out
        if scale is None:
            scale = 2.0 ** q["exp"] * (q.get("frac", 0.5) * 2 if q["kind"] == "float" else 1.0)
        self.nodes.append(quant_node(src, out, scale, zp, q["bits"], int(q["signed"]), int(q["narrow"]), q["mode"],
                                     self.inits, name=f"n_{out}"))
        return out

    def node(self, op: str, ins: list[str], stem: str, **attrs) -> str:
        out = self.name(stem)
        self.nodes.append(helper.make_node(op, ins, [out], name=f"n_{out}", **attrs))
        return out

    def init(self, stem: str, value, dtype=np.float32) -> str:
        nm = self.name(stem)
        self.inits.append(const(nm, value, dtype))
        return nm


def _weight_values(b: _B, w: dict, shape: tuple[int, ...], ch_axis: int) -> tuple[np.ndarray, object]:
    """Float weights (with pruned zeros, ties and exact grid values) and their Quant scale."""
    n_ch = shape[ch_axis]
    bshape = [1] * len(shape)
    bshape[ch_axis] = n_ch
    if w["scale"] == "po2_ch":
        scale = (2.0 ** b.rng.integers(w["exp"] - 3, w["exp"] + 1, n_ch)).reshape(bshape)
    elif w["scale"] == "float_ch":
        scale = (2.0 ** w["exp"] * b.rng.uniform(0.55, 0.95, n_ch)).reshape(bshape).astype(np.float32)
    elif w["scale"] == "float":
        scale = np.float32(2.0 ** w["exp"] * 0.8125 + 2.0 ** (w["exp"] - 11))
    else:
        scale = 2.0 ** w["exp"]
    top = 2 ** (w["bits"] - 1)
    codes = b.rng.normal(scale=top / 2, size=shape)
    ties = b.rng.random(shape) < 0.25
    codes = np.where(ties, np.floor(codes) + 0.5, codes)  # exact ties for the rounding modes
    codes[b.rng.random(shape) < 0.1] = top * 1.5  # saturation
    vals = (codes * np.broadcast_to(scale, shape)).astype(np.float32)
    p = w["prune"]
    if p == "random":
        vals[b.rng.random(shape) < 0.5] = 0.0
    elif p in ("rows", "cols", "all_but_one"):
        other = 1 - ch_axis if len(shape) == 2 else 1
        axis = ch_axis if p == "rows" else other
        if p == "all_but_one":  # every weight but one is zero
            keep = np.zeros(vals.size, bool)
            keep[b.rng.integers(vals.size)] = True
            vals[~keep.reshape(shape)] = 0.0
        else:
            idx = b.rng.random(shape[axis]) < 0.5
            sl = [slice(None)] * len(shape)
            sl[axis] = idx
            vals[tuple(sl)] = 0.0
    return vals, scale


def _quant_weights(b: _B, w: dict, shape: tuple[int, ...], ch_axis: int) -> str:
    vals, scale = _weight_values(b, w, shape, ch_axis)
    src = b.init("W", vals)
    if w["scale"] == "bipolar":
        s = b.init("Ws", 2.0 ** w["exp"])
        out = b.name("Wq")
        b.nodes.append(helper.make_node("BipolarQuant", [src, s], [out], domain=QDOMAIN, name=f"n_{out}"))
        return out
    q = {"kind": "po2", "bits": w["bits"], "signed": True, "narrow": w["narrow"], "mode": w["mode"]}
    return b.quant(src, q, "Wq", scale=scale)


def _epilogue(b: _B, ly: dict, src: str, n_ch: int, conv: bool) -> str:
    rng = np.random.default_rng(ly["epi_seed"])
    shp = (n_ch, 1, 1) if conv else (n_ch,)
    if ly["epi"] == "mul":
        m = rng.uniform(0.1, 2.0, n_ch) * rng.choice([1.0, -1.0], n_ch)
        return b.node("Mul", [src, b.init("mul", m.reshape(shp))], "mul")
    if ly["epi"] == "bn":
        g = rng.normal(size=n_ch) * 1.5
        g[rng.random(n_ch) < 0.2] = 1e-3
        ins = [src, b.init("g", g), b.init("be", rng.normal(size=n_ch)), b.init("mu", rng.normal(size=n_ch)),
               b.init("var", rng.uniform(0.1, 3.0, n_ch))]
        return b.node("BatchNormalization", ins, "bn")
    return src


def _linear(b: _B, ly: dict, src: str, shape: list[int], n_out: int, conv: bool) -> str:
    """Dense / conv accumulator (+ bias) of ``src``."""
    if conv:
        c = shape[0]
        k = ly["k"]
        wq = _quant_weights(b, ly["w"], (n_out, c, k, k), 0)
        ins = [src, wq]
        if ly["bias"]:
            bv = b.rng.normal(scale=2.0, size=n_out).astype(np.float32)
            # scale and zero point of shape (1,): qonnx's ExtractBiasFromConv (run when the golden model cleans a
            # graph with float ops) reshapes any other shape to (1, C, 1, 1), which fails on a scalar
            ins.append(b.quant(b.init("B", bv), {"kind": "po2", "bits": 12, "signed": True, "narrow": False,
                                                 "mode": "ROUND", "exp": ly["bias_exp"]}, "Bq",
                               scale=np.full(1, 2.0 ** ly["bias_exp"], np.float32), zp=np.zeros(1, np.float32)))
        p = ly["pad"]
        return b.node("Conv", ins, "conv", kernel_shape=[k, k], strides=[ly["stride"]] * 2, pads=[p] * 4)
    n_in = int(np.prod(shape))
    if len(shape) > 1:
        src = b.node("Flatten", [src], "flat", axis=1)
    op = ly["op"]
    wshape = (n_out, n_in) if op == "Gemm_t" else (n_in, n_out)
    wq = _quant_weights(b, ly["w"], wshape, 0 if op == "Gemm_t" else 1)
    bq = None
    if ly["bias"]:
        bv = b.rng.normal(scale=2.0, size=n_out).astype(np.float32)
        bq = b.quant(b.init("B", bv), {"kind": "po2", "bits": 12, "signed": True, "narrow": False, "mode": "ROUND",
                                       "exp": ly["bias_exp"]}, "Bq")
    if op == "MatMul":
        acc = b.node("MatMul", [src, wq], "mm")
        return b.node("Add", [acc, bq], "bias") if bq else acc
    ins = [src, wq] + ([bq] if bq else [])
    return b.node("Gemm", ins, "gemm", transB=int(op == "Gemm_t"))


def _block_tail(b: _B, ly: dict, acc: str, n_ch: int, conv: bool) -> str:
    cur = _epilogue(b, ly, acc, n_ch, conv)
    if ly["relu"]:
        cur = b.node("Relu", [cur], "relu")
    return b.quant(cur, ly["act"], "a")


def build_graph(spec: dict):
    """The onnx.helper ModelProto of a spec; also returns the output shape (with the batch axis)."""
    b = _B(spec["seed"])
    shape = list(spec["shape"])
    cur = b.quant("x", spec["input"], "xq")
    for ly in spec["layers"]:
        kind = ly["kind"]
        conv = kind == "conv" or (kind == "residual" and ly.get("branch") == "conv")
        n_out = ly["n_out"]
        if kind == "residual" and not conv and len(shape) > 1:  # a dense branch joins the flat input
            cur = b.node("Flatten", [cur], "flat", axis=1)
            shape = [int(np.prod(shape))]
        acc = _linear(b, ly, cur, shape, n_out, conv)
        a = _block_tail(b, ly, acc, n_out, conv)
        if conv:
            k, s, p = ly["k"], ly["stride"], ly["pad"]
            shape = [n_out, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
        else:
            shape = [n_out]
        if kind == "residual":
            s_ = b.node("Add", [cur, a], "res")
            cur = b.quant(s_, ly["join"], "j")
            continue
        cur = a
        pool = ly.get("pool", "none")
        if pool == "max":
            cur = b.node("MaxPool", [cur], "mp", kernel_shape=[2, 2], strides=[2, 2])
            shape = [n_out, shape[1] // 2, shape[2] // 2]
        elif pool in ("avg", "avg12", "gap"):
            if pool == "gap":
                kk, kn = None, shape[1] * shape[2]
                ap = b.node("GlobalAveragePool", [cur], "gap")
                shape = [n_out, 1, 1]
            else:
                kk = [2, 2] if pool == "avg" else [1, 2]
                kn = 4 if pool == "avg" else 2
                ap = b.node("AveragePool", [cur], "ap", kernel_shape=kk, strides=kk)
                shape = [n_out, shape[1] // kk[0], shape[2] // kk[1]]
            ae = ly["act"]["exp"]
            oq = {"kind": "po2", "bits": ly["pool_bits"], "signed": ly["act"]["signed"], "narrow": False,
                  "mode": ly["pool_mode"], "exp": ae + ly["pool_shift"]}
            if ly["pool_q"] == "quant":
                cur = b.quant(ap, oq, "pq")
            else:
                ins = [ap, b.init("ts", 2.0**ae / kn), b.init("tz", 0.0), b.init("tib", 16.0),
                       b.init("tos", 2.0 ** oq["exp"]), b.init("tob", float(oq["bits"]))]
                cur = b.name("tr")
                b.nodes.append(helper.make_node("Trunc", ins, [cur], domain=QDOMAIN, name=f"n_{cur}",
                                                rounding_mode=ly["pool_mode"], signed=int(oq["signed"]), narrow=0))
    out_shape = [1, *shape]
    b.nodes.append(helper.make_node("Identity", [cur], ["y"], name="n_out"))
    return make_model(b.nodes, b.inits, [1, *spec["shape"]], out_shape), out_shape


def describe(spec: dict) -> str:
    """One line per block: what a spec builds (for failure reports)."""
    q = spec["input"]
    lines = [f"input {spec['shape']} {_qdesc(q)}"]
    for ly in spec["layers"]:
        parts = [ly["kind"] + (f"/{ly['branch']}" if "branch" in ly else ""), f"n_out={ly['n_out']}"]
        if "k" in ly:
            parts.append(f"k={ly['k']} s={ly['stride']} p={ly['pad']}")
        else:
            parts.append(ly["op"])
        w = ly["w"]
        parts.append(f"w={w['scale']}/{w['bits']}b/{w['mode']}/2^{w['exp']}/prune={w['prune']}")
        parts += [f"bias={ly['bias']}", f"epi={ly['epi']}", f"relu={ly['relu']}", f"act={_qdesc(ly['act'])}"]
        if ly.get("pool", "none") != "none":
            parts.append(f"pool={ly['pool']}/{ly.get('pool_q')}/{ly.get('pool_mode')}")
        if "join" in ly:
            parts.append(f"join={_qdesc(ly['join'])}")
        lines.append("  " + " ".join(parts))
    return "\n".join(lines)


def _qdesc(q: dict) -> str:
    if q["kind"] == "bipolar":
        return f"bipolar(2^{q['exp']})"
    s = f"{'s' if q['signed'] else 'u'}{q['bits']}{'n' if q['narrow'] else ''}/{q['mode']}/2^{q['exp']}"
    return s + (f"*{q['frac'] * 2:g}" if q["kind"] == "float" else "")


def float_accumulators(spec: dict) -> bool:
    """Whether some linear layer accumulates codes at a float (non-power-of-two) scale: a float-scale input
    (the previous quantizer's) or float weight scales. There qonnx sums float32 products, each rounded,
    while the golden model accumulates exact integers, so a quantizer after it may round a value that sits
    on a rounding boundary differently (see test_fuzz.py)."""
    q = spec["input"]
    for ly in spec["layers"]:
        if q["kind"] == "float" or ly["w"]["scale"] in ("float", "float_ch"):
            return True
        q = ly["join"] if ly["kind"] == "residual" else ly["act"]
        if ly.get("pool", "none") not in ("none", "max"):
            q = {"kind": "po2"}
    return False
