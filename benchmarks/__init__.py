"""Benchmarks (run on demand; results are committed under docs/)."""
