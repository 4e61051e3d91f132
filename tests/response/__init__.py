"""The response a client gets: status (bodiless ones refused), headers (checked, defaults,
overrides), HEAD (no producer run), a 500 for a source failing before its first item, and
proxy mode (bytes passed through; a 502 for an upstream outside 2xx)."""
