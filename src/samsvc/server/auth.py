"""Who is calling: API keys for every RPC and admin tokens (JWT) for AdminService, checked by a
server interceptor so gRPC, REST (through Envoy) and grpcurl callers are treated alike.

Keys are presented as `authorization: Bearer <key>`, `x-api-key: <key>` or as the password of
HTTP basic authentication (`authorization: Basic`, any user name), and stored only as
SHA-256 digests (`name:hexdigest` lines in API_KEYS_FILE or the API_KEYS variable). With no key
configured, authentication is off and every caller is the anonymous principal (""). Health
(grpc.health.v1 and CheckHealth, so probes need no key) and reflection stay open unless
AUTH_PROTECT_HEALTH.

Admin tokens are JWTs in `authorization: Bearer <token>`, verified by PyJWT with ADMIN_JWT_KEY
(signature, expiry, and audience/issuer when configured) and carrying ADMIN_JWT_CLAIM = true.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
from grpc_status import rpc_status

from samsvc.errors import ConfigurationError, PermissionDenied, SamsvcError, Unauthenticated
from samsvc.infra import metrics
from samsvc.infra.logs import LogSampler
from samsvc.server.auth_options import AuthOptions
from samsvc.server.statuses import to_status

log = logging.getLogger(__name__)
#: Refusals of callers without valid credentials: every one is counted in the metrics
#: (samsvc_requests_total, code UNAUTHENTICATED or PERMISSION_DENIED), a few logged per reason
#: and window, so that nobody can flood the log by knocking.
REFUSALS = LogSampler()


def log_refusal(rpc: str, what: str, error: SamsvcError) -> None:
    """Count the refusal of `rpc` (a method's name from a fixed set, the metrics' label) and log
    it as `what`, sampled."""
    code = "UNAUTHENTICATED" if isinstance(error, Unauthenticated) else "PERMISSION_DENIED"
    metrics.REQUESTS.labels(rpc, code).inc()
    held = REFUSALS.admit(error.reason)
    if held is not None:
        more = f"; {held} more refusals of this kind were not logged" if held else ""
        log.warning("refused %s: %s (%s)%s", what[:200], error.message, error.reason, more)


#: Methods that need no key while health stays open (AUTH_PROTECT_HEALTH closes them).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/samsvc.v1.SegmentationService/CheckHealth")
#: The gateway's own check (samsvc.server.gateway_auth): Envoy calls it without credentials.
GATEWAY_CHECK_PREFIX = "/envoy.service.auth.v3.Authorization/"
#: Methods that need an admin token instead of an API key.
ADMIN_PREFIX = "/samsvc.v1.AdminService/"
#: Shortest HMAC secret accepted for admin tokens (RFC 7518: at least the hash's size).
MIN_HMAC_KEY_BYTES = 32
#: Seconds of clock difference tolerated on a token's exp/nbf/iat.
DEFAULT_JWT_LEEWAY_S = 30
KEY_PREFIX = "sk_"
#: What an API key's name may be (it names the key in logs, metrics and job owners).
KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """The caller: an API key's name ("" when authentication is off), whether it is an admin,
    and the models it may use (None: all)."""

    name: str
    admin: bool = False
    models: frozenset[str] | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def visible(self, names: Iterable[str]) -> list[str]:
        """The models among `names` this key may use: all it is shown of the server's models, in
        lists and in errors alike."""
        return [name for name in names if self.may_use(name)]

    def check_model(self, model: str, field: str = "model_type") -> None:
        """PERMISSION_DENIED (MODEL_NOT_ALLOWED) for a model this key may not use, before any load."""
        if self.models is not None and model not in self.models:
            raise PermissionDenied(
                f"{field}: this API key may use {', '.join(sorted(self.models)) or 'no model'}, not {model!r}",
                reason="MODEL_NOT_ALLOWED",
                metadata={"model": model},
            )


def check_key_name(name: str) -> str:
    """A key's name as it appears in logs, metrics and job owners: [A-Za-z0-9_.-]+."""
    if not KEY_NAME.fullmatch(name) or not name.strip("."):
        # Never only dots: a key's name is a folder or prefix of its exports.
        raise ConfigurationError(
            f"API key name {name!r} must be letters, digits, '_', '.' or '-' (1 to 64, not only dots)"
        )
    return name


def parse_keys(lines: Iterable[str]) -> dict[str, Principal]:
    """`name:sha256hex[:model+model...]` entries (blank lines and # comments skipped) -> {digest:
    the key's principal}; the models, when listed, are the only ones the key may use ('+' joins
    them, as ',' separates entries in API_KEYS)."""
    keys: dict[str, Principal] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        hexdigest, _, models = rest.partition(":")
        hexdigest = hexdigest.lower()
        if not name or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise ConfigurationError(
                f"API key entry {number} must be NAME:SHA256HEX[:MODEL+MODEL...] (from `samsvc keys create`)"
            )
        allowed = frozenset(m.strip() for m in models.split("+") if m.strip()) if models else None
        keys[hexdigest] = Principal(check_key_name(name), models=allowed)
    return keys


def load_keys(file: Path | None, inline: list[str]) -> dict[str, Principal]:
    lines = list(inline)
    if file is not None:
        try:
            lines += file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigurationError(f"cannot read API_KEYS_FILE {file}: {exc.strerror}") from exc
    return parse_keys(lines)


def _bearer(name: str, value: Any) -> str:
    """The token of an `authorization: Bearer <token>` entry, else ""."""
    text = str(value)
    return text[7:].strip() if name == "authorization" and text.lower().startswith("bearer ") else ""


def _basic_password(name: str, value: Any) -> str:
    """The password of an `authorization: Basic <base64 user:password>` entry, else "" (tools
    such as Label Studio can only send HTTP basic authentication: the key is the password)."""
    text = str(value)
    if name != "authorization" or not text.lower().startswith("basic "):
        return ""
    try:
        decoded = base64.b64decode(text[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def presented_key(metadata: Iterable[tuple[str, Any]]) -> str:
    """The API key of `x-api-key`, `authorization: Bearer` or the password of `authorization:
    Basic`, whichever comes first."""
    for name, value in metadata:
        key = str(value) if name == "x-api-key" else _bearer(name, value) or _basic_password(name, value)
        if key:
            return key
    return ""


def bearer_token(metadata: Iterable[tuple[str, Any]]) -> str:
    return next((token for name, value in metadata if (token := _bearer(name, value))), "")


ANONYMOUS = Principal("")


@dataclass(frozen=True)
class AdminTokenPolicy:
    """How admin JWTs are verified."""

    key: str
    algorithms: tuple[str, ...]
    claim: str
    audience: str = ""
    issuer: str = ""

    @classmethod
    def from_options(cls, options: AuthOptions) -> AdminTokenPolicy | None:
        key = options.admin_jwt_key
        if not key:
            return None
        algorithms = options.admin_jwt_algorithms
        known = jwt.algorithms.get_default_algorithms()
        unknown = set(algorithms) - known.keys()
        if unknown or not algorithms or "none" in algorithms:
            raise ConfigurationError(f"ADMIN_JWT_ALGORITHMS has unsupported entries: {', '.join(sorted(unknown))}")
        for algorithm in algorithms:
            # Checked now, not in every call: a PEM key with HS256 (or a secret with RS256) is a
            # configuration error, and a short HMAC secret can be guessed offline from one token.
            try:
                known[algorithm].prepare_key(key)
            except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise ConfigurationError(f"ADMIN_JWT_KEY does not suit {algorithm}: {exc}") from None
            if algorithm.startswith("HS") and len(key.encode()) < MIN_HMAC_KEY_BYTES:
                raise ConfigurationError(
                    f"ADMIN_JWT_KEY must be at least {MIN_HMAC_KEY_BYTES} bytes for {algorithm} "
                    f"(it has {len(key.encode())})"
                )
        return cls(key, algorithms, options.admin_jwt_claim, options.admin_jwt_audience, options.admin_jwt_issuer)

    def verify(self, token: str) -> Principal:
        """The admin principal of a valid token with the admin claim; raises otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=list(self.algorithms),
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=DEFAULT_JWT_LEEWAY_S,
                options={"require": ["exp"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the admin token has expired", reason="ADMIN_TOKEN_EXPIRED") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the admin token is not valid: {exc}", reason="ADMIN_TOKEN_INVALID") from exc
        if claims.get(self.claim) is not True:
            raise PermissionDenied(
                f"the token does not carry the admin claim {self.claim!r}", reason="ADMIN_CLAIM_MISSING"
            )
        return Principal(str(claims.get("sub", "admin")), admin=True)


class Authenticator:
    """Identifies callers from their metadata; raises Unauthenticated or PermissionDenied."""

    def __init__(
        self, keys: dict[str, Principal], admin: AdminTokenPolicy | None = None, protect_health: bool = False
    ) -> None:
        self.keys = keys
        self.admin_policy = admin
        self.protect_health = protect_health

    @classmethod
    def from_options(cls, options: AuthOptions) -> Authenticator:
        keys = load_keys(options.api_keys_file, list(options.api_keys))
        return cls(keys, AdminTokenPolicy.from_options(options), options.protect_health)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def caller(self, metadata: Iterable[tuple[str, Any]]) -> Principal:
        """The API key's principal; ANONYMOUS when authentication is off."""
        if not self.keys:
            return ANONYMOUS
        key = presented_key(metadata)
        if not key:
            raise Unauthenticated(
                "an API key is required: send `authorization: Bearer <key>` or `x-api-key: <key>`",
                reason="API_KEY_MISSING",
            )
        presented = digest(key)
        for known, principal in self.keys.items():
            if hmac.compare_digest(presented, known):
                return principal
        raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")

    def admin(self, metadata: Iterable[tuple[str, Any]]) -> Principal:
        """The admin principal of the caller's token."""
        if self.admin_policy is None:
            raise PermissionDenied(
                "admin operations are turned off on this server (set ADMIN_JWT_KEY)", reason="ADMIN_DISABLED"
            )
        pairs = list(metadata)
        token = bearer_token(pairs)
        if not token or token.startswith(KEY_PREFIX):
            if token or presented_key(pairs):
                raise PermissionDenied(
                    "admin operations need an admin token (a JWT), not an API key", reason="ADMIN_TOKEN_REQUIRED"
                )
            raise Unauthenticated(
                "an admin token is required: send `authorization: Bearer <JWT>`", reason="ADMIN_TOKEN_MISSING"
            )
        return self.admin_policy.verify(token)

    def check(self, method: str, metadata: Iterable[tuple[str, Any]]) -> SamsvcError | None:
        """Why `method` is refused to this caller, or None."""
        if method.startswith(GATEWAY_CHECK_PREFIX):
            return None
        try:
            if method.startswith(ADMIN_PREFIX):
                self.admin(metadata)
            elif self.protect_health or not method.startswith(OPEN_PREFIXES):
                self.caller(metadata)
        except (Unauthenticated, PermissionDenied) as exc:
            return exc
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(options: AuthOptions, authenticator: Authenticator, hosts: Iterable[str]) -> None:
    """Refuse to serve a non-loopback address without API keys unless ALLOW_UNAUTHENTICATED."""
    if authenticator.enabled:
        return
    exposed = [host for host in hosts if not is_loopback(host)]
    if not exposed:
        return
    if not options.allow_unauthenticated:
        raise ConfigurationError(
            f"refusing to serve {', '.join(exposed)} without API keys: set API_KEYS_FILE (see `samsvc keys create`) "
            "or, for a trusted network, ALLOW_UNAUTHENTICATED=true"
        )
    log.warning("serving %s without API keys (ALLOW_UNAUTHENTICATED)", ", ".join(exposed))


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls whose caller `Authenticator.check` rejects, before the handler runs."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        error = self.authenticator.check(details.method, details.invocation_metadata or ())
        if error is None or handler is None:
            return handler
        rpc = details.method.rsplit("/", 1)[-1]
        log_refusal(rpc, rpc, error)
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
