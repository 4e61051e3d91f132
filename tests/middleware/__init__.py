"""StreamMiddleware: interception, pass-through, defaults, the registry of live streams,
the hand-over of frameworks that cannot return a Stream (forged markers refused)."""
