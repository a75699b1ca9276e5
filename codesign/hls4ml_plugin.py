"""hls4ml backend plugin ``CodesignRTL``: hls4ml's front door, codesign's Verilog.

Registration (hls4ml 1.3 loads external backends when ``hls4ml.backends`` is first imported):

* environment variable ``HLS4ML_BACKEND_PLUGINS=codesign.hls4ml_plugin`` (set before importing
  hls4ml), or
* an entry point ``[project.entry-points."hls4ml.backends"] CodesignRTL = "codesign.hls4ml_plugin:register"``,
* or call :func:`ensure_registered` after hls4ml is imported.

Usage::

    model = hls4ml.converters.convert_from_onnx_model(qonnx_model, backend="CodesignRTL",
                                                      output_dir="prj", strategy="latency")
    model.write()        # prj/rtl/*.v + interface.json (codesign.rtl.generate)
    model.compile()      # Verilator build of a streaming testbench
    y = model.predict(x)  # real-valued outputs, bit-exact with the RTL

hls4ml's ``io_type='io_stream'`` selects ``codesign.rtl``'s ``io='stream'`` (one pixel per input beat, the
leading conv/pool layers on line buffers, :mod:`codesign.rtl.emit.stream`); ``io_parallel`` (the default) is
``io='vector'``.

The backend keeps hls4ml's conversion (parsing, ModelGraph) but lowers the *original* QONNX graph
(``config['OnnxModel']``) with :mod:`codesign.rtl.frontend`: hls4ml's own optimizer flows are
replaced by an empty flow, because its precision inference would re-derive what the QONNX graph
already states exactly. See docs/rtl-backend.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAME = "CodesignRTL"
FLOW = "codesignrtl:noop"
IO_TYPES = {"io_parallel": "vector", "io_stream": "stream"}


def io_from_hls4ml(io_type: str | None) -> str:
    """hls4ml's ``IOType`` -> ``codesign.rtl.generate(io=...)``."""
    if io_type is None:
        return "vector"
    if io_type not in IO_TYPES:
        from codesign.errors import UnsupportedError

        raise UnsupportedError(f"hls4ml io_type {io_type!r}: CodesignRTL supports {', '.join(IO_TYPES)}")
    return IO_TYPES[io_type]


def _backend_class():
    from hls4ml.backends.backend import Backend

    class CodesignRTLBackend(Backend):
        def __init__(self):
            super().__init__(NAME)
            from hls4ml.model.flow import register_flow

            try:
                register_flow("noop", [], requires=None, backend=self.name)
            except Exception:  # already registered (re-import)
                pass
            self.writer = None

        # ---- conversion -------------------------------------------------------------------------
        def create_initial_config(self, strategy="latency", reuse=1, multiplier="shiftadd", pipeline=1,
                                  debug_taps=False, simulator="verilator", io_type="io_parallel", share=True, **_):
            return {"Strategy": strategy, "ReuseFactor": reuse, "Multiplier": multiplier, "Pipeline": pipeline,
                    "DebugTaps": debug_taps, "Simulator": simulator, "IOType": io_type, "Share": share}

        def create_layer_class(self, layer_class):
            return layer_class

        def get_default_flow(self):
            return FLOW

        def convert_precision_string(self, precision):
            from hls4ml.backends.fpga.fpga_backend import FPGABackend

            return FPGABackend.convert_precision_string(precision)

        # ---- codesign stages --------------------------------------------------------------------
        def _cfg(self, model):
            c = model.config.config
            return c, Path(c["OutputDir"]) / "rtl"

        def write(self, model):
            from codesign.rtl import generate, lower

            c, out = self._cfg(model)
            ir = lower(c["OnnxModel"], name=c.get("ProjectName", "codesign"))
            model._codesign_ir = ir
            model._codesign_iface = generate(ir, out, strategy=c["Strategy"], reuse=int(c["ReuseFactor"]),
                                             multiplier=c["Multiplier"], pipeline=int(c["Pipeline"]),
                                             debug_taps=bool(c["DebugTaps"]), onnx_rel="(in memory)",
                                             io=io_from_hls4ml(c.get("IOType")), share=bool(c.get("Share", True)))
            return out

        def compile(self, model):
            """Writes the RTL; the simulator binary is built on the first predict (it embeds the
            input vectors through $readmemh, so it is rebuilt only when the RTL changes)."""
            self.write(model)
            model._codesign_compiled = True
            return None

        def predict(self, model, x, *args, **kwargs):
            from codesign.verify import run_codes

            if not getattr(model, "_codesign_compiled", False):
                self.compile(model)
            c, out = self._cfg(model)
            ir = model._codesign_ir
            x = np.asarray(x, dtype=np.float64)
            codes = ir.quantize_input(x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(1, -1))
            y, _ = run_codes(out, codes, simulator=c.get("Simulator", "verilator"), backpressure=False,
                             work=out.parent / f"{out.name}_sim")
            exps = ir.output_exps  # per-channel output scales: one exponent per field
            return y * 2.0 ** (ir.output_fmt.scale_exp if exps is None else exps[None, :])

        def build(self, model, **kwargs):
            from codesign.rtl.synth import cell_counts

            c, out = self._cfg(model)
            if not (out / "interface.json").exists():
                self.write(model)
            return cell_counts(out, kwargs.get("target", "ecp5"))

    return CodesignRTLBackend


def register(register_backend=None, register_writer=None, **_):
    """Entry point for hls4ml's plugin loader."""
    if register_backend is None:
        from hls4ml.backends.backend import register_backend
    register_backend(NAME, _backend_class())


def ensure_registered() -> None:
    from hls4ml.backends.backend import backend_map

    if NAME.lower() not in backend_map:
        register()
