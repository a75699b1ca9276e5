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
"""

from codesign.golden.graph import GoldenModel, InputSpec
from codesign.golden.stage import golden_cli, run_stage

__all__ = ["GoldenModel", "InputSpec", "golden_cli", "run_stage"]
