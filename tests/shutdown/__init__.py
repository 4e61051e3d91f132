"""Shutdown: ``StreamMiddleware.shutdown(grace)`` ends every stream cleanly and refuses new
ones; SIGTERM under ``asgi_stream.hypercorn``; a stalled client cannot hold either up."""
