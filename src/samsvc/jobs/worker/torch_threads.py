"""Each Dramatiq worker thread sets its own torch CPU threads when it boots: torch's setting is
per thread (samsvc.engine.threads), so a value set on a process's main thread does not bind
the threads that run the actors."""

from __future__ import annotations

from typing import Any

import dramatiq

from samsvc.engine.threads import use_torch_threads


class TorchThreads(dramatiq.Middleware):
    """Runs `use_torch_threads(threads)` in every worker thread before it takes a message."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def after_worker_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        use_torch_threads(self.threads)
