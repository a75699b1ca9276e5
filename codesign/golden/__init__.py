"""Exact integer golden model of QONNX graphs.

Every tensor is integer codes (int64, or Python ints where the bound analysis says int64 could
overflow) times a power-of-two scale: ``real = codes * 2**scale_exp``. Quant nodes round and clip
exactly as QONNX defines them (integer shifts, no float rounding), so the hardware generated from
the same graph must match this model bit for bit.

    gm = GoldenModel("export/model.onnx")      # raw Brevitas QONNX or cleaned/channels-last
    gm.input_name, gm.output_names, gm.input_spec   # spec: bits, signed, narrow, scale_exp, rounding, shape
    x = gm.quantize_input(x_float)             # snap floats to the input grid (input Quant's rounding)
    y = gm.run(x)                              # float64 real outputs; off-grid input -> CodesignError
    codes, e = gm.run_codes(x_codes)           # integer codes in and out
    tr = gm.trace(x)                           # {tensor name: (codes, scale_exp)} for every tensor
    rg = gm.ranges()                           # {tensor name: (min_code, max_code, scale_exp)}
    info = gm.tensor_info()                    # + producing node/op, shape, register bits
    gm.constants                               # {tensor: (codes, scale_exp)} of quantized weights/biases

``scale_exp`` is an ``int``, or an int64 array broadcastable against the codes (leading batch axis
of size 1) where a Quant had per-channel scales.

Real QONNX models made elsewhere (float pre-processing such as FINN's ``2x - 1``, BatchNorm before the
activation quantizers, float-scale quantizers, TensorNorm / Softmax at the output, an unquantized input)
run in mixed mode (:mod:`codesign.golden.mixed`): integer core exact, float ops by the reference's own
kernels, so ``run`` equals qonnx ``execute_onnx`` on ``gm.model`` (the cleaned graph):

    gm = GoldenModel("jet.onnx", input_precision="ap_fixed<16,6>")   # or a finn_datatype annotation
    gm.partition                                # host pre-processing / core / host post-processing
    codes = gm.preprocess(x_float)             # host: float input -> core input codes
    y_codes, scale = gm.run_codes(codes)       # accelerator: core input codes -> core output codes
    y = gm.postprocess(y_codes)                # host: core output codes -> graph output (float32)
    gm.run(x_float) == gm.postprocess(gm.run_codes(gm.preprocess(x_float))[0])

A scale is an exponent (``int`` / int array: real = codes * 2**e) for power-of-two tensors and a
``float`` / float64 array (real = codes * scale) for float-scale ("fscale") tensors;
``gm.tensor_info()`` says which tensors are bipolar (codes -1/+1).
:func:`codesign.golden.explain.explain` says why an output differs from the reference's on one vector.
"""

from codesign.golden.graph import GoldenModel, InputSpec
from codesign.golden.stage import golden_cli, run_stage

__all__ = ["GoldenModel", "InputSpec", "golden_cli", "run_stage"]
