"""The demo (examples/demo.py) under a real hypercorn and as a script (Ctrl-C)."""
