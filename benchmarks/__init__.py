"""Benchmarks of xr_methyl against side-by-side baselines: ``python -m benchmarks.run``."""
