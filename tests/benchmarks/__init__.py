"""The benchmark scripts still run (``--quick`` smoke runs; no speed asserted)."""
