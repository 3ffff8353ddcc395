"""Images given by address (`image_url`), fetched by the server for the caller who asked: after
the caller is authenticated, charged to its rate limits and allowed the model, never before.

The address is judged by samsvc.validation.image_url (public addresses, or Label Studio's media
paths, the only ones fetched with LABEL_STUDIO_API_KEY). Fetches are blocking I/O in the
server's I/O pool, bounded in time (DEFAULT_FETCH_TIMEOUT_S for the whole answer) and in bytes
(MAX_IMAGE_BYTES), and in number: at most MAX_IMAGE_FETCHES at once in all and
MAX_INFERENCES_PER_KEY per key; beyond, RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time

from samsvc.errors import FailedPrecondition, ResourceExhausted
from samsvc.infra.outbound_http import fetch_target
from samsvc.server.auth import Principal
from samsvc.server.calls import Calls, KeyedLimit
from samsvc.validation.image_url import ImageUrlPolicy
from samsvc.validation.webhook_url import WebhookPolicy

#: Seconds one image fetch may take in all (connect, headers, body).
DEFAULT_FETCH_TIMEOUT_S = 30.0
#: Seconds a refused caller is told to wait.
DEFAULT_FETCH_RETRY_AFTER_S = 2.0


#: Label Studio's endpoint that trades a personal access token for an access token.
TOKEN_REFRESH_PATH = "/api/token/refresh/"  # noqa: S105 (a path, not a secret)
#: Seconds before an access token's expiry when a new one is asked for.
DEFAULT_ACCESS_MARGIN_S = 30.0
#: Largest answer of the refresh endpoint read.
_REFRESH_ANSWER_BYTES = 64 * 1024


def _jwt_claims(token: str) -> dict[str, object] | None:
    """The claims of a JWT (read, not verified: Label Studio verifies it), or None if `token` is
    not one (a legacy token is 40 hex characters)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


class LabelStudioAccess:
    """Where Label Studio is and its token, sent only with its media paths. Both kinds of token
    of Label Studio 1.23 work: a legacy token goes as `Token <key>`; a personal access token (a
    JWT refresh token, from the Account page) is traded at TOKEN_REFRESH_PATH for a short-lived
    access token, sent as `Bearer <access>` and renewed shortly before it expires."""

    def __init__(self, url: str = "", token: str = "", *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._timeout_s = timeout_s
        self._personal = _jwt_claims(token) is not None
        self._access: tuple[str, float] = ("", 0.0)  # (token, monotonic time it is good until)
        self._lock = threading.Lock()

    def headers(self, policy: WebhookPolicy) -> dict[str, str]:
        """The Authorization header for Label Studio (blocking: may ask Label Studio for an
        access token)."""
        if not self.token:
            return {}
        if not self._personal:
            return {"Authorization": f"Token {self.token}"}
        with self._lock:
            access, until = self._access
            if not access or time.monotonic() >= until:
                access = self._refresh(policy)
            return {"Authorization": f"Bearer {access}"}

    def _refresh(self, policy: WebhookPolicy) -> str:
        target = policy.check(self.url + TOKEN_REFRESH_PATH, field="LABEL_STUDIO_API_KEY", subject="IMAGE_URL")
        answer = fetch_target(
            target,
            max_bytes=_REFRESH_ANSWER_BYTES,
            timeout=self._timeout_s,
            headers={"Content-Type": "application/json"},
            field="Label Studio's token refresh",
            method="POST",
            body=json.dumps({"refresh": self.token}).encode(),
        )
        try:
            access = str(json.loads(answer)["access"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedPrecondition(
                "Label Studio's token refresh gave no access token: check LABEL_STUDIO_API_KEY",
                reason="SOURCE_REFUSED",
            ) from exc
        claims = _jwt_claims(access) or {}
        expiry = claims.get("exp")
        lifetime = float(expiry) - time.time() if isinstance(expiry, int | float) else 60.0
        self._access = (access, time.monotonic() + max(lifetime - DEFAULT_ACCESS_MARGIN_S, 0.0))
        return access


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
        headers = self._studio.headers(self._policy.studio) if source.label_studio else {}
        return fetch_target(
            source.target, max_bytes=self._max_bytes, timeout=self._timeout_s, headers=headers, field=field
        )
