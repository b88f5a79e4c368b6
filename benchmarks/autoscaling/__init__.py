"""Autoscaling benchmark: trace replay against modelplane's policy and baselines."""
