"""The Dramatiq broker: Redis when REDIS_URL is set, the in-process stub otherwise.

Priority: Dramatiq's Redis broker has no message priority, so each priority has its own queue
and its own actor; the actors' `priority` orders what a worker has prefetched, and a prefetch
of 1 (QUEUE_PREFETCH) keeps a worker from holding low work while high work waits in Redis.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
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


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A broker for `settings`, with the middleware our actors rely on."""
    broker: dramatiq.Broker
    if settings.redis_url:
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=settings.redis_url,
            namespace=BROKER_NAMESPACE,
            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            maintenance_chance=settings.broker_maintenance_chance,
        )
    else:
        broker = StubBroker()
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
