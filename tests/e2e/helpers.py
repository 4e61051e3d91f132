"""Compatibility: the helpers moved to ``tests/helpers.py``. Kept only for test files written
before the move (tests/lifecycle, tests/threads); import from ``tests.helpers`` instead, and
delete this package once nothing imports it."""

from tests.helpers import TIMEOUT, Record, Served, read_raw, track

__all__ = ["TIMEOUT", "Record", "Served", "read_raw", "track"]
