"""Servers: HTTP/2 (h2c) streaming and multiplexing under hypercorn, and uvicorn."""
