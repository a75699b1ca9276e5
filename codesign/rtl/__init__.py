"""RTL stage: quantized QONNX graph -> integer IR -> synthesizable Verilog + ``interface.json``.

Public API::

    from codesign.rtl import generate, lower, run_stage
    iface = generate("runs/x/export/model.onnx", "runs/x/rtl", strategy="latency", reuse=1,
                     multiplier="shiftadd", pipeline=1, debug_taps=False)

See :mod:`codesign.rtl.ir` (the IR and its numpy reference), :mod:`codesign.rtl.frontend_qonnx`
(lowering) and :mod:`codesign.rtl.emit` (architectures, interface).
"""

from __future__ import annotations

from codesign.rtl.api import generate, run_stage
from codesign.rtl.frontend_qonnx import lower
from codesign.rtl.ir import FixedFormat, Layer, Model, Requant

__all__ = ["generate", "run_stage", "lower", "FixedFormat", "Layer", "Model", "Requant"]
