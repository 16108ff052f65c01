"""Baselines of the load benchmark: the same workload against other systems."""
