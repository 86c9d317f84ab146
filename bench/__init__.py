"""Benchmarks and the demo: scripts that print figures, run as ``python -m bench.<name>``."""
