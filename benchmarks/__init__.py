"""Benchmarks of the z4j brain and scheduler processes; run ``python -m benchmarks.run``."""
