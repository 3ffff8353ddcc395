"""Both clients behind one blocking interface, so each client test runs over the sync `Client`
and the asyncio `AsyncClient` alike: `open_client("async", address)` drives an AsyncClient on its
own event loop, awaiting each call and stepping each async iterator lazily (a test can act
between two items of a stream, as the resume test does)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from samsvc.client import AsyncClient, Client

KINDS = ("sync", "async")


class BlockingAsyncClient:
    """An AsyncClient whose methods block: coroutines are run to completion, async iterators
    become iterators."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()

        async def create() -> AsyncClient:
            return AsyncClient(*args, **kwargs)

        self._client = self._loop.run_until_complete(create())

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def blocking(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._loop.run_until_complete(result)
            if inspect.isasyncgen(result):
                return self._iterate(result)
            return result

        return blocking

    def _iterate(self, items: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self._loop.run_until_complete(anext(items))
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def __enter__(self) -> BlockingAsyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_client(kind: str, *args: Any, **kwargs: Any) -> Any:
    """A Client, or an AsyncClient driven blockingly, with the same arguments."""
    factory: Callable[..., Any] = {"sync": Client, "async": BlockingAsyncClient}[kind]
    return factory(*args, **kwargs)
