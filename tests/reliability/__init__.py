"""At scale, in subprocess hypercorn workers (asyncio and trio, HTTP/1.1 and HTTP/2): load,
disconnect storms, stalled clients, producer faults, hostile input, SIGTERM. Its harness
(server.py, clients.py, scenarios.py) is shared with benchmarks/reliability.py."""
