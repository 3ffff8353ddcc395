"""The Dramatiq broker: Redis when REDIS_URL is set, the in-process stub otherwise.

Priority: Dramatiq's Redis broker has no message priority, so each priority has its own queue
and its own actor. Three things together make high work run before normal before low:
- a worker's consumer of a queue takes nothing while a higher queue has messages waiting
  (the gate below), so lower work is not even fetched during a higher backlog;
- a prefetch of 1 (QUEUE_PREFETCH) bounds what a worker already holds;
- the actors' `priority` orders what a worker holds.
What remains is the image already running when higher work arrives.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import CurrentMessage

from samsvc.config import Settings
from samsvc.jobs.records import Priority

#: Queue per priority, and the webhook queue (kept apart so deliveries never wait behind images).
IMAGE_QUEUES: dict[Priority, str] = {
    Priority.HIGH: "samsvc-high",
    Priority.NORMAL: "samsvc-normal",
    Priority.LOW: "samsvc-low",
}
WEBHOOK_QUEUE = "samsvc-webhooks"
ALL_QUEUES = (*IMAGE_QUEUES.values(), WEBHOOK_QUEUE)
#: Dramatiq actor priorities: lower runs first among a worker's prefetched messages.
ACTOR_PRIORITIES: dict[Priority, int] = {Priority.HIGH: 0, Priority.NORMAL: 10, Priority.LOW: 20}
#: Dramatiq's Redis key namespace for our queues.
BROKER_NAMESPACE = "samsvc-dramatiq"


#: Seconds a gated consumer waits before looking at the higher queues again.
GATE_PAUSE_S = 0.05


def _higher_queues(queue_name: str) -> list[str]:
    for priority, queue in IMAGE_QUEUES.items():
        if queue == queue_name:
            rank = ACTOR_PRIORITIES[priority]
            return [IMAGE_QUEUES[p] for p, r in ACTOR_PRIORITIES.items() if r < rank]
    return []


class _PriorityGate(Consumer):
    """A consumer that fetches nothing while a higher-priority queue has messages waiting."""

    def __init__(self, inner: Consumer, broker: dramatiq.Broker, higher: list[str]) -> None:
        self._inner = inner
        self._broker = broker
        self._higher = higher

    def __iter__(self) -> _PriorityGate:
        return self

    def __next__(self) -> MessageProxy | None:
        try:
            waiting = queue_depth(self._broker, self._higher)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        if waiting:
            time.sleep(GATE_PAUSE_S)
            return None
        return next(self._inner)

    def ack(self, message: MessageProxy) -> None:
        self._inner.ack(message)

    def nack(self, message: MessageProxy) -> None:
        self._inner.nack(message)

    def requeue(self, messages: Any) -> None:
        self._inner.requeue(messages)

    def close(self) -> None:
        self._inner.close()


class _PriorityMixin:
    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        inner = super().consume(queue_name, prefetch, timeout)  # type: ignore[misc]
        higher = _higher_queues(queue_name)
        return _PriorityGate(inner, self, higher) if higher else inner  # type: ignore[arg-type]


class PriorityRedisBroker(_PriorityMixin, RedisBroker):
    """Dramatiq's Redis broker with priority-gated consumers."""


class PriorityStubBroker(_PriorityMixin, StubBroker):
    """Dramatiq's in-process stub broker with priority-gated consumers."""


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A broker for `settings`, with the middleware our actors rely on."""
    broker: dramatiq.Broker
    if settings.redis_url:
        broker = PriorityRedisBroker(  # type: ignore[no-untyped-call]
            url=settings.redis_url,
            namespace=BROKER_NAMESPACE,
            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            maintenance_chance=settings.broker_maintenance_chance,
        )
    else:
        broker = PriorityStubBroker()
    broker.add_middleware(CurrentMessage())
    for queue in ALL_QUEUES:
        broker.declare_queue(queue)
    return broker


def queue_depth(broker: dramatiq.Broker, queues: list[str]) -> int:
    """Messages waiting (not yet taken by a worker) in `queues`."""
    total = 0
    for queue in queues:
        if isinstance(broker, RedisBroker):
            total += int(broker.client.llen(f"{broker.namespace}:{queue}"))
        elif isinstance(broker, StubBroker):
            total += broker.queues[queue].qsize()
    return total
