"""Completion notices: a JSON POST of the job summary, signed, sent to the vetted address.

Signature: `X-Samsvc-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
`X-Samsvc-Timestamp: <unix seconds>`; receivers recompute it and reject old timestamps.
Each attempt reads at most MAX_RESPONSE_BYTES of the receiver's answer and lasts at most the
timeout in all (connect, send, answer), so a receiver that drips its answer cannot hold a
delivery thread. Delivery is at least once: `X-Samsvc-Delivery` (also `delivery_id` in the body) is the same on
every attempt and re-send of one notice, so receivers de-duplicate on it.
The connection goes to the address the policy checked (no second DNS lookup), with the
original host name in the Host header and in TLS SNI; redirects are not followed (a 3xx
counts as a failure). Retries and backoff come from the Dramatiq actor that calls `deliver`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import ssl
import time
from typing import Any

from samsvc import __version__
from samsvc.errors import Unavailable
from samsvc.infra.outbound_http import bounded, pinned_connection
from samsvc.jobs.export import manifest_url
from samsvc.jobs.records import JobRecord
from samsvc.validation.webhook_url import WebhookPolicy

#: Seconds to connect and to wait for the receiver's answer.
DEFAULT_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Samsvc-Signature"
TIMESTAMP_HEADER = "X-Samsvc-Timestamp"
DELIVERY_HEADER = "X-Samsvc-Delivery"
#: Bytes of a receiver's answer read at most; the rest is never read.
MAX_RESPONSE_BYTES = 64 * 1024


def webhook_delivery_id(job_id: str) -> str:
    """The same for every attempt and re-send of a job's end notice, so receivers de-duplicate."""
    return f"{job_id}.ended"


def webhook_payload(job: JobRecord) -> dict[str, Any]:
    """The body of a job's end notice."""
    return {
        "delivery_id": webhook_delivery_id(job.job_id),
        "job_id": job.job_id,
        "job_type": job.job_type.value,
        "status": job.status.value,
        "total_images": job.total_images,
        "processed_images": job.processed_images,
        "failed_images": job.failed_images,
        "created_at_ms": job.created_at_ms,
        "started_at_ms": job.started_at_ms,
        "completed_at_ms": job.completed_at_ms,
        "processing_time": job.processing_time_s(),
        "error_message": job.error_message,
        "model_type": job.spec.model,
        "export_url": job.spec.export_url,
        "export_manifest": manifest_url(job.spec.export_url, job.job_id),
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str,
    policy: WebhookPolicy,
    correlation_id: str = "",
    delivery_id: str = "",
    timeout: float = DEFAULT_TIMEOUT_S,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """POST `payload` to `url`; returns the HTTP status. Raises InvalidArgument when the target
    is refused by the policy (permanent) and Unavailable for failures worth retrying."""
    target = policy.check(url)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"samsvc-webhook/{__version__}",
        TIMESTAMP_HEADER: str(timestamp),
        "X-Request-Id": correlation_id,
        DELIVERY_HEADER: delivery_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    connection = pinned_connection(target, timeout, ssl_context)
    with bounded(connection, timeout) as expired:
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(MAX_RESPONSE_BYTES)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set():
                raise Unavailable(
                    f"webhook {target.host} took longer than {timeout:g} s", reason="WEBHOOK_TIMEOUT"
                ) from exc
            raise Unavailable(f"webhook {target.host} unreachable: {exc}", reason="WEBHOOK_UNREACHABLE") from exc
    if not 200 <= status < 300:
        raise Unavailable(f"webhook {target.host} answered HTTP {status}", reason="WEBHOOK_REJECTED")
    return status
