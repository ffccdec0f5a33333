"""SearchClient and AsyncSearchClient without a server: the same public methods, only the
public API in the public modules, and a wait for a server that is not there."""

from __future__ import annotations

import inspect
import time

import grpc
import pytest

from lookalike.client import AsyncSearchClient, LookalikeError, SearchClient
from tests.serving import KINDS, free_port, use


def test_both_clients_have_the_same_methods():
    def public(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")
        }

    assert public(SearchClient) == public(AsyncSearchClient)
    assert all(
        inspect.iscoroutinefunction(getattr(AsyncSearchClient, name))
        for name in public(AsyncSearchClient)
    )


def test_the_public_modules_define_only_the_public_api():
    """Wire plumbing lives in the private client/_wire.py, not beside the public names."""
    import lookalike.client
    from lookalike.client import _wire, aio, client, values

    def defined(module) -> set[str]:
        return {
            name
            for name, value in vars(module).items()
            if getattr(value, "__module__", None) == module.__name__ and name[0] != "_"
        }

    public = set(lookalike.client.__all__)
    assert defined(client) | defined(aio) | defined(values) == public
    assert not defined(_wire) & public


@pytest.mark.parametrize("kind", KINDS)
def test_wait_until_ready_gives_up_after_its_timeout(kind):
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LookalikeError) as waited:
        use(kind, target, lambda c: c.wait_until_ready(1.5))
    elapsed = time.monotonic() - started
    assert waited.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "not ready after 1.5 s" in waited.value.message
    assert 1.4 < elapsed < 10
