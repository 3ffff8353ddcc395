"""Domain errors: raised where a problem is found, translated once at the server's boundary.

Every error has an UPPER_SNAKE `reason` (sent as google.rpc.ErrorInfo.reason), a message for
humans and optional string metadata, all of which reach the caller; what only the operator may
read (a file's path, a digest, an address, a peer's answer) goes in `detail`, which is logged
and never sent. The class says which kind of failure it is; the server's
error boundary (samsvc.server.error_boundary) maps each kind to one gRPC status code.
Nothing here imports gRPC, so the engine and the workers raise these freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The ErrorInfo domain of every error this service sends.
ERROR_DOMAIN = "samsvc"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (for example `points_per_side`) and what is wrong."""

    field: str
    description: str


class SamsvcError(Exception):
    """Base of every error the service reports to its callers."""

    #: Reason used when the raiser gives none.
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        #: For the operator's log only: never in a status, a job record or a webhook.
        self.detail = detail

    def for_log(self) -> str:
        """The message with the operator's detail, for a log line or the operator's terminal."""
        return f"{self.message} ({self.detail})" if self.detail else self.message


class InvalidArgument(SamsvcError):
    """The request is malformed or out of range; retrying it unchanged cannot succeed."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[FieldViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, detail=detail)
        self.violations = list(violations)

    @classmethod
    def for_field(cls, field: str, description: str, *, reason: str) -> InvalidArgument:
        """One bad field, with the message naming it."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)], reason=reason)


class NotFound(SamsvcError):
    """The named resource does not exist (or is not visible to the caller)."""

    default_reason = "NOT_FOUND"


class FailedPrecondition(SamsvcError):
    """The request is valid but the system is not in a state to run it (for example, weights absent)."""

    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(SamsvcError):
    """Too much work: the caller should retry after `retry_after` seconds."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, detail=detail)
        self.retry_after = retry_after


class Unavailable(SamsvcError):
    """A dependency is unreachable for now; retrying later may succeed."""

    default_reason = "UNAVAILABLE"


class Unauthenticated(SamsvcError):
    """The caller presented no valid credentials."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(SamsvcError):
    """The caller is known but may not do this (for example, an admin operation without an admin token)."""

    default_reason = "PERMISSION_DENIED"


class Cancelled(SamsvcError):
    """The work was stopped because its caller went away or asked for it."""

    default_reason = "CANCELLED"


class DeadlineExceeded(SamsvcError):
    """The work ran past its time limit (for example JOB_TIME_LIMIT_S for one batch image)."""

    default_reason = "DEADLINE_EXCEEDED"


class Internal(SamsvcError):
    """A fault of the service itself."""

    default_reason = "INTERNAL"


class ConfigurationError(SamsvcError):
    """The operator's configuration (settings, MODELS_FILE) is invalid; raised at start-up."""

    default_reason = "INVALID_CONFIGURATION"


class DownloadError(SamsvcError):
    """A checkpoint download failed or its digest did not match; nothing was left behind."""

    default_reason = "DOWNLOAD_FAILED"
