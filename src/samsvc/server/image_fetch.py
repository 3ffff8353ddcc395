"""Images given by address (`image_url`), fetched by the server for the caller who asked: after
the caller is authenticated, charged to its rate limits and allowed the model, never before.

The address is judged by samsvc.validation.image_url (public addresses, or Label Studio's media
paths, the only ones fetched with LABEL_STUDIO_API_KEY). Fetches are blocking I/O in the
server's I/O pool, bounded in time (DEFAULT_FETCH_TIMEOUT_S for the whole answer) and in bytes
(MAX_IMAGE_BYTES), and in number: at most MAX_IMAGE_FETCHES at once in all and
MAX_INFERENCES_PER_KEY per key; beyond, RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from samsvc.errors import ResourceExhausted
from samsvc.outbound_http import fetch_target
from samsvc.server.auth import Principal
from samsvc.server.calls import Calls, KeyedLimit
from samsvc.validation.image_url import ImageUrlPolicy

#: Seconds one image fetch may take in all (connect, headers, body).
DEFAULT_FETCH_TIMEOUT_S = 30.0
#: Seconds a refused caller is told to wait.
DEFAULT_FETCH_RETRY_AFTER_S = 2.0


@dataclass(frozen=True)
class LabelStudioAccess:
    """Where Label Studio is and its token (sent only with its media paths)."""

    url: str = ""
    token: str = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}


class ImageFetcher:
    def __init__(
        self,
        calls: Calls,
        policy: ImageUrlPolicy,
        studio: LabelStudioAccess,
        *,
        max_bytes: int,
        max_fetches: int,
        per_key: int,
        timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
    ) -> None:
        self._calls = calls
        self._policy = policy
        self._studio = studio
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._max_fetches = max_fetches
        self._running = 0
        self._per_key = KeyedLimit(per_key, "image fetches", "MAX_INFERENCES_PER_KEY", "KEY_FETCH_LIMIT")

    def check(self, url: str, field: str = "image_url") -> None:
        """Judge the address's form (no DNS, no connection): before anything is spent."""
        self._policy.check(url, field, resolve=False)

    async def fetch(self, caller: Principal, url: str, field: str = "image_url") -> bytes:
        """The image's bytes, fetched for `caller`."""
        self.check(url, field)
        if self._max_fetches and self._running >= self._max_fetches:
            raise ResourceExhausted(
                f"{self._running} image fetches are running (MAX_IMAGE_FETCHES); retry later",
                reason="SERVER_OVERLOADED",
                retry_after=DEFAULT_FETCH_RETRY_AFTER_S,
            )
        with self._per_key.hold(caller, retry_after=DEFAULT_FETCH_RETRY_AFTER_S):
            self._running += 1
            try:
                return await self._calls.run_blocking(self._fetch_now, url, field)
            finally:
                self._running -= 1

    def _fetch_now(self, url: str, field: str) -> bytes:
        source = self._policy.check(url, field)  # resolved now, connected to the vetted address
        headers = self._studio.headers() if source.label_studio else {}
        return fetch_target(
            source.target, max_bytes=self._max_bytes, timeout=self._timeout_s, headers=headers, field=field
        )
