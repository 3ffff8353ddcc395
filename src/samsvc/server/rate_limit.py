"""Per-caller rate limits: calls and images per minute, as token buckets.

Each caller (an API key's name) has a bucket per limit holding up to the per-minute limit and
refilling continuously at limit/60 per second. A call takes one token from the calls bucket and
one per image from the images bucket, from both or from neither. With REDIS_URL the buckets live
in Redis (one Lua script, Redis's clock), so every server replica shares them; otherwise in this
process's memory. Over the limit: ResourceExhausted with the seconds until enough tokens are back
(sent as google.rpc.RetryInfo, HTTP 429 through Envoy).

This module is the interface; samsvc.server.rate_limits.memory and samsvc.server.rate_limits.redis
are the two backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from samsvc.errors import ResourceExhausted
from samsvc.validation.batch import check_rate_cost


@dataclass(frozen=True)
class Limits:
    """Per-minute limits of one caller; 0 means no limit."""

    requests_per_minute: int = 0
    images_per_minute: int = 0

    @property
    def active(self) -> bool:
        return self.requests_per_minute > 0 or self.images_per_minute > 0


class RateLimiter(Protocol):
    limits: Limits

    def take(self, caller: str, images: int) -> None:
        """Charge one call and `images` images to `caller`, or raise ResourceExhausted."""


def refusal(caller: str, wait_ms: float, limits: Limits) -> ResourceExhausted:
    seconds = math.ceil(wait_ms) / 1000
    return ResourceExhausted(
        f"rate limit of {caller or 'anonymous callers'} reached "
        f"({limits.requests_per_minute or 'unlimited'} calls, {limits.images_per_minute or 'unlimited'} images "
        f"per minute); retry in {seconds:.1f} s",
        retry_after=seconds,
        reason="RATE_LIMITED",
        metadata={
            "requests_per_minute": str(limits.requests_per_minute),
            "images_per_minute": str(limits.images_per_minute),
        },
    )


def check_cost(images: int, limits: Limits) -> None:
    """A call no minute's budget could grant is refused as bad input, not made to wait."""
    check_rate_cost(images, limits.images_per_minute)
