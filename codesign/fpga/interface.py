"""``rtl/interface.json``, the accelerator the FPGA stage wraps (docs/contracts.md).

One reader serves every stage: this module re-exports :mod:`codesign.rtl.interface`.
"""

from codesign.rtl.interface import Interface, Stream, load_interface

__all__ = ["Interface", "Stream", "load_interface"]
