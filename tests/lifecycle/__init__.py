"""A stream's end: ``close()`` and ``send()`` after it, ``on_close`` (reasons, its bound),
and ``Stream.value`` owning its producer."""
