"""The demo app (examples/demo.py) as the tests observe it; shared by tests/demo and
tests/browser/test_demo_page.py."""

from __future__ import annotations

from asgi_stream import CloseReason
from examples.demo import Demo, Settings
from tests.helpers import Record


class Observed(Demo):
    """The demo, recording each stream that ends as ``(path, reason)`` in ``closes``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.closes = Record()

    def _closed(self, path: str, reason: CloseReason) -> None:
        super()._closed(path, reason)
        self.closes((path, reason))
