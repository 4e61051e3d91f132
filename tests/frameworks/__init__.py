"""The integrations: Starlette, FastAPI, Quart, Django."""
