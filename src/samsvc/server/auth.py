"""API keys, checked by a server interceptor so gRPC, REST (through Envoy) and grpcurl callers
are treated alike.

Keys are presented as `authorization: Bearer <key>` or `x-api-key: <key>` and stored only as
SHA-256 digests (`name:hexdigest` lines in API_KEYS_FILE or the API_KEYS variable). With no key
configured, authentication is off. Health and reflection stay open unless AUTH_PROTECT_HEALTH.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status

from samsvc.errors import ConfigurationError, Unauthenticated
from samsvc.server.error_boundary import to_status

#: Methods that need no key while health stays open.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
KEY_PREFIX = "sk_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_keys(lines: Iterable[str]) -> dict[str, str]:
    """`name:sha256hex` entries (blank lines and # comments skipped) -> {digest: name}."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, hexdigest = line.rpartition(":")
        hexdigest = hexdigest.lower()
        if not name or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise ConfigurationError(f"API key entry {number} must be NAME:SHA256HEX (from `samsvc keys create`)")
        keys[hexdigest] = name
    return keys


def load_keys(file: Path | None, inline: list[str]) -> dict[str, str]:
    lines = list(inline)
    if file is not None:
        try:
            lines += file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigurationError(f"cannot read API_KEYS_FILE {file}: {exc.strerror}") from exc
    return parse_keys(lines)


def presented_key(metadata: Iterable[tuple[str, Any]]) -> str:
    for name, value in metadata:
        if name == "x-api-key":
            return str(value)
        if name == "authorization" and str(value).lower().startswith("bearer "):
            return str(value)[7:].strip()
    return ""


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, keys: dict[str, str], protect_health: bool = False) -> None:
        self.keys = keys
        self.protect_health = protect_health

    def _check(self, method: str, metadata: Iterable[tuple[str, Any]]) -> Unauthenticated | None:
        if not self.protect_health and method.startswith(OPEN_PREFIXES):
            return None
        key = presented_key(metadata)
        if not key:
            return Unauthenticated(
                "an API key is required: send `authorization: Bearer <key>` or `x-api-key: <key>`",
                reason="API_KEY_MISSING",
            )
        presented = digest(key)
        if not any(hmac.compare_digest(presented, known) for known in self.keys):
            return Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        error = self._check(details.method, details.invocation_metadata or ())
        if error is None or handler is None:
            return handler
        status = rpc_status.to_status(to_status(error))

        async def refuse_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort_with_status(status)

        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort_with_status(status)
            yield  # pragma: no cover (makes this an async generator)

        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(refuse_unary, **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(refuse_stream, **codec)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(refuse_unary, **codec)
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **codec)
