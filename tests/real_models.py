"""Models like those users bring from elsewhere, for tests/test_golden_real.py: the two real files in
models/qonnx and Brevitas BNN-PYNQ nets (random weights, non-trivial BatchNorm) from
:mod:`codesign.real_models` (shared with ``python -m bench real``), Brevitas MLPs with the default
float-scale quantizers, and onnx.helper graphs whose input grid is a ``finn_datatype`` annotation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from golden_models import const, make_model, quant_node
from onnx import helper

from codesign.real_models import JET_FILE, QONNX, TFC_FILE, bnn_pynq, mnist_like, on_grid

__all__ = ["JET_FILE", "QONNX", "TFC_FILE", "annotated", "bnn_pynq", "float_cnn", "float_mlp", "mnist_like", "on_grid",
           "reference_contexts", "threshold_graph"]



def reference_contexts(model: onnx.ModelProto, x: np.ndarray):
    """qonnx ``execute_onnx`` one vector at a time (as the reference runs a batch-1 graph): yields each
    vector's full execution context (every tensor, float32)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    mw = ModelWrapper(model)
    iname = mw.graph.input[0].name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(x)):
            yield execute_onnx(mw, {iname: np.asarray(x[i:i + 1], dtype=np.float32)}, return_full_exec_context=True)


def float_mlp(variant: str, folder: Path, seed: int = 0) -> Path:
    """A small MLP with Brevitas' default float-scale quantizers (calibrated on random data):
    ``tensor`` (per-tensor float weight scales, a power-of-two input quantizer), ``channel`` (per-channel
    float weight scales), ``input`` (a float-scale input quantizer: host pre-processing)."""
    import brevitas.nn as qnn
    import torch
    from brevitas import quant as bq

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    wq = bq.Int8WeightPerChannelFloat if variant == "channel" else bq.Int8WeightPerTensorFloat
    iq = bq.Int8ActPerTensorFloat if variant == "input" else bq.Int8ActPerTensorFixedPoint

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qi = qnn.QuantIdentity(act_quant=iq, return_quant_tensor=True)
            self.l1 = qnn.QuantLinear(16, 24, bias=True, weight_quant=wq)
            self.r1 = qnn.QuantReLU(act_quant=bq.Uint8ActPerTensorFloat, return_quant_tensor=True)
            self.l2 = qnn.QuantLinear(24, 12, bias=True, weight_quant=wq)
            self.a2 = qnn.QuantIdentity(act_quant=bq.Int8ActPerTensorFloat, return_quant_tensor=True)
            self.l3 = qnn.QuantLinear(12, 5, bias=True, weight_quant=wq)

        def forward(self, x):
            return self.l3(self.a2(self.l2(self.r1(self.l1(self.qi(x))))))

    return _calibrate_export(Net(), (16,), folder / f"float_mlp_{variant}.onnx")


def _calibrate_export(net, shape: tuple[int, ...], path: Path) -> Path:
    """Collect activation statistics on random data (non-trivial float scales), export raw QONNX."""
    import torch
    from brevitas.export import export_qonnx

    net.train()
    with torch.no_grad():
        for _ in range(40):
            net(torch.randn(32, *shape) * 2)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, args=torch.randn(1, *shape), export_path=str(path))
    return path


def annotated(datatype: str, seed: int = 0) -> onnx.ModelProto:
    """A graph whose input grid is only a ``finn_datatype`` annotation (INT8 or BIPOLAR): MatMul with
    quantized weights; INT8: bias, Relu, Quant, MatMul (all exact); BIPOLAR: BatchNorm, BipolarQuant
    (bipolar activations), MatMul."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    inits.append(const("W1", rng.normal(size=(16, 12))))
    nodes.append(quant_node("W1", "W1q", 2.0**-3, 0, 5, 1, 1, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["x", "W1q"], ["mm1"], name="mm1"))
    if datatype == "INT8":
        inits.append(const("b1", rng.normal(size=(12,)) * 8))
        nodes.append(quant_node("b1", "b1q", 2.0**-3, 0, 16, 1, 0, "ROUND", inits))
        nodes.append(helper.make_node("Add", ["mm1", "b1q"], ["acc1"], name="add1"))
        nodes.append(helper.make_node("Relu", ["acc1"], ["r1"], name="relu1"))
        nodes.append(quant_node("r1", "a1", 2.0**-1, 0, 6, 0, 0, "FLOOR", inits))
    else:
        for nm, v in (("g", rng.normal(size=12)), ("bb", rng.normal(size=12)), ("mu", rng.normal(size=12)),
                      ("var", rng.random(12) * 4 + 0.1)):
            inits.append(const(nm, v))
        nodes.append(helper.make_node("BatchNormalization", ["mm1", "g", "bb", "mu", "var"], ["bn1"], name="bn1"))
        nodes.append(helper.make_node("BipolarQuant", ["bn1", "one"], ["a1"], name="bq1",
                                      domain="qonnx.custom_op.general"))
        inits.append(const("one", 1.0))
    inits.append(const("W2", rng.normal(size=(12, 4))))
    nodes.append(quant_node("W2", "W2q", 2.0**-2, 0, 4, 1, 1, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["a1", "W2q"], ["y"], name="mm2"))
    m = make_model(nodes, inits, (1, 16), (1, 4))
    a = m.graph.quantization_annotation.add()
    a.tensor_name = "x"
    kv = a.quant_parameter_tensor_names.add()
    kv.key, kv.value = "finn_datatype", datatype
    return m


def float_cnn(folder: Path, seed: int = 0) -> Path:
    """A small CNN with float scales: per-channel float conv weights with a float bias (a separate Add
    after cleaning), ReLU, MaxPool, a float-scale dense layer."""
    import brevitas.nn as qnn
    import torch
    from brevitas import quant as bq

    torch.set_num_threads(1)
    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qi = qnn.QuantIdentity(act_quant=bq.Int8ActPerTensorFloat, return_quant_tensor=True)
            self.c1 = qnn.QuantConv2d(1, 4, 3, bias=True, weight_quant=bq.Int8WeightPerChannelFloat)
            self.r1 = qnn.QuantReLU(act_quant=bq.Uint8ActPerTensorFloat, return_quant_tensor=True)
            self.p = torch.nn.MaxPool2d(2)
            self.l2 = qnn.QuantLinear(4 * 3 * 3, 5, bias=True, weight_quant=bq.Int8WeightPerTensorFloat)

        def forward(self, x):
            return self.l2(self.p(self.r1(self.c1(self.qi(x)))).flatten(1))

    return _calibrate_export(Net(), (1, 8, 8), folder / "float_cnn.onnx")


def threshold_graph(seed: int = 0) -> onnx.ModelProto:
    """FINN-style: MatMul, ``MultiThreshold`` (out_scale 2, out_bias -3: codes -3, -1, 1, 3), MatMul, and an
    ``AveragePool`` over 3 values (no exact dyadic mean: a float op) at the end."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    nodes.append(quant_node("x", "xq", 2.0**-2, 0, 6, 1, 0, "ROUND", inits))
    inits.append(const("W", rng.normal(size=(8, 6))))
    nodes.append(quant_node("W", "Wq", 2.0**-3, 0, 4, 1, 1, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["acc"], name="mm"))
    inits.append(const("thr", np.sort(rng.normal(size=(6, 3)), axis=1)))
    nodes.append(helper.make_node("MultiThreshold", ["acc", "thr"], ["mt"], name="mt",
                                  domain="qonnx.custom_op.general", out_scale=2.0, out_bias=-3.0))
    inits.append(const("W2", rng.normal(size=(6, 6))))
    nodes.append(quant_node("W2", "W2q", 2.0**-2, 0, 4, 1, 1, "ROUND", inits))
    nodes.append(helper.make_node("MatMul", ["mt", "W2q"], ["h"], name="mm2"))
    inits.append(const("shp", [1, 2, 3], np.int64))
    nodes.append(helper.make_node("Reshape", ["h", "shp"], ["h3"], name="rs"))
    nodes.append(helper.make_node("AveragePool", ["h3"], ["y"], name="ap", kernel_shape=[3]))
    return make_model(nodes, inits, (1, 8), (1, 2, 1))
