"""What every RPC of the gRPC face shares: who calls (authenticated by the interceptor, charged
to their rate limits), the blocking-I/O pool, the inference pool under admission control, and
the per-key limits on what one caller may hold at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from samsvc.engine.amg_types import CancelToken
from samsvc.errors import FailedPrecondition, ResourceExhausted, Unauthenticated
from samsvc.server.admission import AdmissionControl
from samsvc.server.auth import Authenticator, Principal
from samsvc.server.error_boundary import ServicerContext
from samsvc.server.rate_limit import RateLimiter

if TYPE_CHECKING:
    from samsvc.engine.loader import LoadedModel, ModelManager

T = TypeVar("T")

#: A call whose expected seconds exceed what its deadline leaves by more than this factor is
#: refused before it starts (DEADLINE_TOO_SHORT); within it, it runs (estimates are not exact).
DEFAULT_DEADLINE_MARGIN = 1.5


class KeyedLimit:
    """At most `most` of something per caller at once (0: no limit); RESOURCE_EXHAUSTED beyond."""

    def __init__(self, most: int, what: str, setting: str, reason: str) -> None:
        self.most = most
        self._what, self._setting, self._reason = what, setting, reason
        self._held: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def hold(self, caller: Principal, retry_after: float = 5.0) -> Iterator[None]:
        if self.most and self._held[caller.name] >= self.most:
            raise ResourceExhausted(
                f"{self.most} {self._what} of this key are open ({self._setting}); retry later",
                reason=self._reason,
                retry_after=retry_after,
            )
        self._held[caller.name] += 1
        try:
            yield
        finally:
            self._held[caller.name] -= 1
            if not self._held[caller.name]:
                del self._held[caller.name]


@dataclass
class InferenceTiming:
    """What Calls.infer measured of one call: seconds waited for inference slots, then of work."""

    queued_s: float = 0.0
    compute_s: float = 0.0


class Calls:
    def __init__(
        self,
        authenticator: Authenticator,
        rate_limiter: RateLimiter | None,
        io_executor: ThreadPoolExecutor,
        executor: Executor,
        admission: AdmissionControl,
        max_inferences_per_key: int,
    ) -> None:
        self.auth = authenticator
        self.rate_limiter = rate_limiter
        self.admission = admission
        self._io_executor = io_executor
        self._executor = executor
        self._inferences = KeyedLimit(
            max_inferences_per_key, "inferences", "MAX_INFERENCES_PER_KEY", "KEY_INFERENCE_LIMIT"
        )

    async def caller(self, context: ServicerContext, images: int = 0) -> Principal:
        """Who calls (the interceptor already refused unknown callers), charged to their rate
        limits: one call and `images` images."""
        principal = self.auth.caller(context.invocation_metadata() or ())
        if self.rate_limiter is not None:
            await self.run_blocking(self.rate_limiter.take, principal.name, images)
        return principal

    def known_caller(self, context: ServicerContext) -> Principal | None:
        """The caller's principal if it shows a valid key (always one, with authentication
        off), else None; not charged to any limit (open calls such as health use it)."""
        try:
            return self.auth.caller(context.invocation_metadata() or ())
        except Unauthenticated:
            return None

    def check_deadline(self, context: ServicerContext, expected_s: float | None, what: str) -> None:
        """Refuse at once (FAILED_PRECONDITION, DEADLINE_TOO_SHORT) work that cannot end before
        the call's deadline: its caller would wait until the deadline and get nothing."""
        left = context.time_remaining()
        if expected_s is None or left is None or expected_s <= left * DEFAULT_DEADLINE_MARGIN:
            return
        raise FailedPrecondition(
            f"{what} is expected to take about {expected_s:.0f} s on this server and the call's deadline leaves "
            f"{left:.0f} s: give the call a longer deadline, ask for less work, or submit it as a batch job "
            "(SubmitBatch)",
            reason="DEADLINE_TOO_SHORT",
            metadata={"expected_seconds": f"{expected_s:.1f}", "deadline_seconds": f"{left:.1f}"},
        )

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store work in the I/O pool (in this call's context: its correlation id)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await loop.run_in_executor(self._io_executor, call)

    async def model(self, caller: Principal, models: ModelManager, name: str) -> LoadedModel:
        """Model `name`, loaded: a load is inference-sized work (it reads and hashes a checkpoint
        of up to gigabytes), so it holds an inference slot and one of the caller's inferences
        like any other. One load per model runs; callers meanwhile wait for it and share its
        model or error, and a failure is remembered briefly (samsvc.engine.loader)."""
        loaded = models.ready(name)
        if loaded is not None:
            return loaded
        return await self.infer(caller, _load, models, name)

    async def infer(
        self,
        caller: Principal,
        fn: Callable[..., T],
        *args: Any,
        weight: int = 1,
        timing: InferenceTiming | None = None,
    ) -> T:
        """Run `fn(*args, cancel_token)` in the inference pool under admission control, holding
        `weight` slots and one of the caller's MAX_INFERENCES_PER_KEY; a cancelled caller stops
        it at its next safe point. `timing`, when given, gets the seconds waited and worked."""
        cancel = CancelToken()
        with self._inferences.hold(caller, retry_after=self.admission.retry_after()):
            arrived = time.perf_counter()
            async with self.admission.slot(weight):
                started = time.perf_counter()
                call = functools.partial(contextvars.copy_context().run, fn, *args, cancel)
                future = asyncio.get_running_loop().run_in_executor(self._executor, call)
                try:
                    result = await future
                except asyncio.CancelledError:
                    cancel.cancel()
                    raise
            self.admission.record_duration(time.perf_counter() - started)
        if timing is not None:
            timing.queued_s, timing.compute_s = started - arrived, time.perf_counter() - started
        return result


def _load(models: ModelManager, name: str, cancel: CancelToken) -> LoadedModel:
    return models.get(name)
