"""Benchmarks: ``python -m bench.preprocess``."""
