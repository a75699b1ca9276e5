"""QONNX -> the typed integer IR (:mod:`codesign.rtl.ir`), as a pipeline of small steps.

1. :func:`~codesign.rtl.frontend.graph.import_onnx`: one op per ONNX node (constants, reshapes and the
   input quantizer folded).
2. :data:`~codesign.rtl.frontend.passes.FUSION_PASSES`: named rewrites (``fuse_bias``, ``fold_trunc``,
   ``fuse_relu``, ``fuse_quant``, ...), each a ``match``/``apply`` class.
3. :func:`~codesign.rtl.frontend.lower.build_model`: formats for every op, the typed layers, then the IR
   passes (single output, per-channel scales at the output).

Supported (anything else raises :class:`~codesign.errors.UnsupportedError` naming the node and op):

* ``Quant`` on an initializer (weights/biases: quantized here with the node's rounding mode; power-of-two
  scales per tensor or per output channel), on the graph input (defines the input format;
  Transpose/Reshape/Flatten before it are allowed) and on an activation (requantization, fused into the
  producing accumulator layer when it is its only consumer); activation scales must be one power of two,
  zero points zero, bit widths integer.
* ``MatMul`` (activation x quantized constant), ``Gemm`` (alpha = beta = 1, transB), ``Add`` of a
  quantized (or exactly representable) constant bias, ``Add`` of two activations of the same shape
  (residual join, exact scale alignment), ``Conv`` (standard NCHW or qonnx channels-last domain; 1-D/2-D,
  stride, zero padding, group 1, no dilation), ``MaxPool`` (no padding), ``AveragePool`` /
  ``GlobalAveragePool`` over a power-of-two window (a sum; the following ``Trunc`` or ``Quant`` is its
  requantization), ``Relu``, ``Flatten``/``Reshape`` (no data movement), ``Transpose`` (a field
  permutation; one of a float tensor between an accumulator and its quantizer, as a channels-last export
  puts before a Flatten, moves behind the quantizer: pass ``commute_transpose``), ``Identity``.

The graph may fork and re-join (residual blocks): layers list their producers (``Layer.inputs``).
Per-channel weight scales are aligned to the finest channel scale (see :mod:`codesign.rtl.ir`).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from codesign.errors import UnsupportedError
from codesign.graph.analysis import parse_precision
from codesign.rtl.frontend.graph import import_onnx, load_model
from codesign.rtl.frontend.lower import build_model
from codesign.rtl.frontend.passes import FUSION_PASSES, run_passes
from codesign.rtl.ir import Model

__all__ = ["lower", "load_model", "import_onnx", "run_passes", "build_model", "FUSION_PASSES"]


def lower(model: str | Path | onnx.ModelProto, name: str = "codesign", input_precision: str | None = None) -> Model:
    """QONNX model (path, ModelProto or qonnx ModelWrapper) -> :class:`~codesign.rtl.ir.Model`.
    ``input_precision``: the grid of a graph input no quantizer or annotation defines (hls4ml syntax,
    e.g. ``ap_fixed<16,6>``)."""
    grid = None
    if input_precision:
        try:
            grid = parse_precision(input_precision)
        except ValueError as e:
            raise UnsupportedError(f"--input-precision: {e}") from None
    return build_model(run_passes(import_onnx(model, name, grid)))
