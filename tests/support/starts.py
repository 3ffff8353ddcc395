"""What a test starts besides the in-process server, and so its markers.

A fixture that starts something says so with `@starts(kind, ...)` in place of `@pytest.fixture`;
a test that starts something itself carries the marker (`@pytest.mark.redis`). The root
conftest marks each test by the fixtures it uses (their whole closure) and its own markers, and
`slow` when it starts anything: `uv run pytest -m "not slow"` is the fast loop.

The helpers that start things (RedisServer, S3Server, ServeProcess, WorkerProcess, Envoy,
Chromium) call `expect_started(kind)`, which fails the test when it starts a kind it is not
marked for: a marker cannot silently go missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

#: The kinds, each a marker of the same name (registered in pyproject.toml).
KINDS = ("redis", "envoy", "browser", "s3", "processes")

F = TypeVar("F", bound=Callable[..., Any])

#: The kinds the running test is marked for; None outside a test (a bench, a script).
_current: frozenset[str] | None = None
_current_test = ""


def starts(*kinds: str, when_param: object = None, **fixture: Any) -> Callable[[F], Any]:
    """`pytest.fixture(**fixture)` for a fixture that starts `kinds`; with `when_param`, only the
    tests given that parameter of the fixture start them (the `redis` half of an
    embedded/redis pair)."""
    unknown = set(kinds) - set(KINDS)
    assert not unknown, f"unknown kinds {unknown}; known: {KINDS}"

    def declare(function: F) -> Any:
        function.starts = (frozenset(kinds), when_param)  # type: ignore[attr-defined]
        return pytest.fixture(**fixture)(function)

    return declare


def kinds_of(item: pytest.Item) -> frozenset[str]:
    """What `item` starts: its own markers, and those of the fixtures it uses."""
    found = {mark.name for mark in item.iter_markers() if mark.name in KINDS}
    params = getattr(getattr(item, "callspec", None), "params", {})
    fixture_info = getattr(item, "_fixtureinfo", None)
    definitions = fixture_info.name2fixturedefs if fixture_info is not None else {}
    for name in getattr(item, "fixturenames", ()):
        for definition in reversed(definitions.get(name, ())):  # the one in effect, and those it extends
            declared, when_param = getattr(definition.func, "starts", (frozenset(), None))
            if when_param is None or params.get(name) == when_param:
                found |= declared
            if name not in definition.argnames:  # it does not build on the definition it overrides
                break
    return frozenset(found)


def running(item: pytest.Item | None, kinds: Iterable[str] = ()) -> None:
    """Record the test being set up or run (None when it is over)."""
    global _current, _current_test
    _current = None if item is None else frozenset(kinds)
    _current_test = "" if item is None else item.nodeid


def expect_started(kind: str) -> None:
    """Fail the running test if it starts `kind` without being marked for it."""
    if _current is not None and kind not in _current:
        raise AssertionError(
            f"{_current_test} starts {kind} but is not marked {kind!r}: start it from a fixture "
            f"declared with tests.support.starts({kind!r}), or mark the test @pytest.mark.{kind}"
        )
