"""Threads: ``iterate_in_thread`` (loop kept free, one thread per iterator, the limiter) and
sends from other threads."""
