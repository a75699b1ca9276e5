"""codesign: FPGA/accelerator co-design toolkit."""
__version__ = "0.1.0"
