"""A client that leaves: every kind of producer is stopped at once, nothing more is sent,
``on_close("disconnect")``, the middleware forgets the stream; HTTP/1.1 and HTTP/2."""
