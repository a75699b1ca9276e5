"""RTL stage: quantized QONNX graph -> integer IR -> synthesizable Verilog + ``interface.json``.

Public API::

    from codesign.rtl import generate, lower, run_stage
    iface = generate("runs/x/export/model.onnx", "runs/x/rtl", strategy="latency", pipeline=1)
    iface = generate(path, out, cfg.rtl)          # the rtl: section of a run's config, whole

See :mod:`codesign.rtl.frontend` (QONNX -> IR as a pipeline of named passes), :mod:`codesign.rtl.ir` (the
typed IR and its numpy reference), :mod:`codesign.rtl.emit` (architectures) and
:mod:`codesign.rtl.interface` (``interface.json``).
"""

from __future__ import annotations

from codesign.rtl.api import generate, rtl_config, run_stage
from codesign.rtl.formats import FixedFormat, Requant
from codesign.rtl.frontend import lower
from codesign.rtl.interface import Interface, load_interface
from codesign.rtl.ir import Layer, Model, model_from_json

__all__ = ["generate", "rtl_config", "run_stage", "lower", "FixedFormat", "Layer", "Model", "Requant", "Interface",
           "load_interface", "model_from_json"]
