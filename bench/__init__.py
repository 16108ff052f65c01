"""Benchmarks of the switch: micro-benchmarks, load runs and baselines."""
