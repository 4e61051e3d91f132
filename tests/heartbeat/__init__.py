"""The heartbeat: ``: ping`` on idle streams, never where it would corrupt the body."""
