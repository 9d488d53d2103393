"""Benchmarks for tagrelay: every figure is a ratio of two things measured side by side in one run.

Run ``python -m bench.run`` (``make bench``) or ``python -m bench.run --quick`` (``make bench-quick``).
"""
