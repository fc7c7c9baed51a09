"""Real servers for the integration tests.

`unleash_server` is one real Unleash (unleash-server 8.2.0 on Node 22) per test session, on a
fresh PostgreSQL database and a free port. When it is not installed the tests fail (never
skip) with the command that installs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.errors import ConfigError
from service.flags.unleash_admin import UnleashAdmin
from service.harness.unleash_server import UnleashServer


@pytest.fixture(scope="session")
def unleash_server() -> Iterator[UnleashServer]:
    """A started Unleash server, shared by the session; stopped and its database dropped."""
    try:
        server = UnleashServer().start()
    except ConfigError as exc:  # not installed, or no PostgreSQL: say how to fix it
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unleash_admin(unleash_server: UnleashServer) -> Iterator[UnleashAdmin]:
    """An Admin API client on the session's server, with its admin token."""
    unleash_server.check_alive()  # a dead server: say why once, not as connection errors
    with UnleashAdmin(unleash_server.url, unleash_server.admin_token) as admin:
        yield admin
