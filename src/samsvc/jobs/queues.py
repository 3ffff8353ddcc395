"""The job priorities and the Dramatiq queues and Redis namespace that carry them: what every
job process agrees on, in a module that imports nothing of the engine, so the processes that
only name queues (the `samsvc worker` supervisor, its metrics process) start without torch."""

from __future__ import annotations

from enum import Enum


class Priority(Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


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
