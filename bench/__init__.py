"""Benchmarks of the gateway against the simulated estate; results go to docs/benchmarks.md."""
