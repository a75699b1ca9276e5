"""Benchmark suite of codesign: ``python -m bench all [--quick]`` (see docs/benchmarks.md)."""
