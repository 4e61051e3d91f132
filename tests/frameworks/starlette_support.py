"""Constants shared by the Starlette and FastAPI tests (FastAPI is Starlette)."""

from __future__ import annotations

ORIGIN = "https://front.example"
MARKER = "x-asgi-stream-handoff"  # the middleware's hand-over header (asgi_stream.middleware)
