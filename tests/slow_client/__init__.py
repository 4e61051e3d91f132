"""A client that stops reading: at most ``max_buffer`` bytes wait, then it is dropped
(``on_close("slow-client")``) and others are unaffected; HTTP/2 streams given up are reset."""
