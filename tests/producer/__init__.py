"""The producer: the three modes (callback, values, automatic), Last-Event-ID, pacing and
backpressure, the producer's own writes, and failures after the first item."""
