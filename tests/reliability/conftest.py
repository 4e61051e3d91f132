"""The reliability suite: real hypercorn workers (asyncio and trio), HTTP/1.1 and HTTP/2,
under load, faults and hostile input. Run it alone with ``python -m pytest tests/reliability``;
``python benchmarks/reliability.py`` reruns the measurable parts at full size.

Every async test runs once per anyio backend (``anyio_backend`` from tests/conftest.py): the
backend is both the client's and the server worker's (in-process servers run on the test's
loop; subprocess servers get ``--worker <backend>``).
"""

from __future__ import annotations

import pytest

from tests.reliability.clients import raise_nofile

# 1,000 concurrent connections in the test process (the server raises its own limit).
OPEN_FILES = 8_192


@pytest.fixture(autouse=True, scope="session")
def open_files() -> int:
    """The soft limit of open files, raised as far as the hard limit allows."""
    return raise_nofile(OPEN_FILES)
