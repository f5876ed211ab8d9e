"""Benchmarks (``facepipe bench``): figures are measured, never assumed."""
