"""What goes on the wire: SSE encoding and framing, fields, JSON and pydantic values, the
ndjson and text formats, and the checks on options and fields (refused by name)."""
