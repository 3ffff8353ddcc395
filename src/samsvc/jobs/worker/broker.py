"""The Dramatiq broker: Redis when REDIS_URL is set, the in-process stub otherwise.

Priority: Dramatiq's Redis broker has no message priority, so each priority has its own queue
and its own actor. Three things together make high work run before normal before low:
- a worker's consumer of a queue takes nothing while a higher queue has messages waiting
  (the gate below), so lower work is not even fetched during a higher backlog;
- a prefetch of 1 (QUEUE_PREFETCH) bounds what a worker already holds;
- the actors' `priority` orders what a worker holds.
What remains is the image already running when higher work arrives.

Every consumer also takes an image's lease as its message comes off the queue (see
samsvc.jobs.recovery.leases), gives each delivery its own token, and drops the lease when the message
goes back to the queue unprocessed (a worker shutting down).
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
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage

from samsvc.errors import Unavailable
from samsvc.infra.redis_connection import connect
from samsvc.jobs.options import JobOptions
from samsvc.jobs.queues import ACTOR_PRIORITIES, ALL_QUEUES, BROKER_NAMESPACE, IMAGE_QUEUES, Priority
from samsvc.jobs.recovery.leases import LeaseKeeper, new_token

#: Seconds a gated consumer waits before looking at the higher queues again.
GATE_PAUSE_S = 0.05
#: Message option carrying a delivery's own token (set when a worker takes the message).
DELIVERY_OPTION = "samsvc_delivery"
#: Actor name of an image's priority.
IMAGE_ACTORS: dict[Priority, str] = {p: f"segment_image_{p.value}" for p in Priority}
#: Actor name of a job's webhook delivery.
WEBHOOK_ACTOR = "deliver_webhook"


def image_of(message: Message[Any] | MessageProxy) -> tuple[str, int] | None:
    """(job id, index) of an image message; None for other messages."""
    if message.queue_name.split(".")[0] in IMAGE_QUEUES.values() and len(message.args) == 2:
        return str(message.args[0]), int(message.args[1])
    return None


def delivery_token(message: Message[Any] | MessageProxy) -> str:
    return str(message.options.get(DELIVERY_OPTION) or "")


def _higher_queues(queue_name: str) -> list[str]:
    for priority, queue in IMAGE_QUEUES.items():
        if queue == queue_name:
            rank = ACTOR_PRIORITIES[priority]
            return [IMAGE_QUEUES[p] for p, r in ACTOR_PRIORITIES.items() if r < rank]
    return []


class _SamsvcConsumer(Consumer):
    """A consumer that fetches nothing while a higher-priority queue has messages waiting, and
    leases each image it takes."""

    def __init__(self, inner: Consumer, broker: dramatiq.Broker, higher: list[str], leases: LeaseKeeper | None) -> None:
        self._inner = inner
        self._broker = broker
        self._higher = higher
        self._leases = leases

    def __iter__(self) -> _SamsvcConsumer:
        return self

    def __next__(self) -> MessageProxy | None:
        if self._higher:
            try:
                waiting = queue_depth(self._broker, self._higher)
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            if waiting:
                time.sleep(GATE_PAUSE_S)
                return None
        message = next(self._inner)
        if message is not None:
            token = new_token()
            message.options[DELIVERY_OPTION] = token
            image = image_of(message)
            if image is not None and self._leases is not None:
                self._leases.hold(*image, token)
        return message

    def ack(self, message: MessageProxy) -> None:
        self._inner.ack(message)
        if self._leases is not None:
            self._leases.forget(delivery_token(message))

    def nack(self, message: MessageProxy) -> None:
        self._inner.nack(message)
        if self._leases is not None:
            self._leases.forget(delivery_token(message))

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        self._inner.requeue(messages)
        if self._leases is not None:
            for message in messages:
                self._leases.release(delivery_token(message))

    def close(self) -> None:
        self._inner.close()


class _PriorityMixin:
    def __init__(self, *args: Any, leases: LeaseKeeper | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: What each consumer takes an image's lease with (None: no leases).
        self.leases = leases

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        inner = super().consume(queue_name, prefetch, timeout)  # type: ignore[misc]
        return _SamsvcConsumer(inner, self, _higher_queues(queue_name), self.leases)  # type: ignore[arg-type]


class PriorityRedisBroker(_PriorityMixin, RedisBroker):
    """Dramatiq's Redis broker with priority-gated consumers."""


class PriorityStubBroker(_PriorityMixin, StubBroker):
    """Dramatiq's in-process stub broker with priority-gated consumers."""


def build_broker(options: JobOptions, leases: LeaseKeeper | None = None) -> dramatiq.Broker:
    """A broker for `options` (Redis's, or the stub broker in-process), with the middleware our
    actors rely on; its consumers take each image's lease with `leases`."""
    broker: dramatiq.Broker
    if options.redis_url:
        broker = PriorityRedisBroker(
            client=connect(options.redis_url, text=False),
            namespace=BROKER_NAMESPACE,
            heartbeat_timeout=options.worker.heartbeat_timeout_ms,
            maintenance_chance=options.worker.maintenance_chance,
            leases=leases,
        )
    else:
        broker = PriorityStubBroker(leases=leases)
    broker.add_middleware(CurrentMessage())
    for queue in ALL_QUEUES:
        broker.declare_queue(queue)
    return broker


def waiting_images(broker: dramatiq.Broker) -> set[tuple[str, int]]:
    """(job id, index) of every image message waiting in a queue (not yet taken by a worker)."""
    encoded: list[Any] = []
    try:
        for queue in IMAGE_QUEUES.values():
            if isinstance(broker, RedisBroker):
                ids = broker.client.lrange(f"{broker.namespace}:{queue}", 0, -1)
                if ids:
                    bodies = broker.client.hmget(f"{broker.namespace}:{queue}.msgs", ids)
                    encoded += [body for body in bodies if body is not None]
            elif isinstance(broker, StubBroker):
                waiting = broker.queues[queue]
                with waiting.mutex:
                    encoded += list(waiting.queue)
    except redis.RedisError as exc:
        raise Unavailable("the job queue is unreachable", reason="QUEUE_UNAVAILABLE") from exc
    images = set()
    for body in encoded:
        image = image_of(Message.decode(body))
        if image is not None:
            images.add(image)
    return images


def queue_depth(broker: dramatiq.Broker, queues: list[str]) -> int:
    """Messages waiting (not yet taken by a worker) in `queues`."""
    total = 0
    for queue in queues:
        if isinstance(broker, RedisBroker):
            total += int(broker.client.llen(f"{broker.namespace}:{queue}"))
        elif isinstance(broker, StubBroker):
            total += broker.queues[queue].qsize()
    return total
