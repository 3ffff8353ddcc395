"""`samsvc worker` keeps its Dramatiq worker processes running.

It runs two Dramatiq CLIs: one over the image queues (WORKER_PROCESSES x WORKER_THREADS) and one
over the webhook queue (WEBHOOK_THREADS), so a slow webhook receiver never holds an image's
thread. Dramatiq's CLI stops all of its processes when one of them dies (an OOM kill, a crash in
a native library, an image that kills its worker); the supervisor starts that CLI again, after
a pause that doubles while it keeps dying (DEFAULT_RESTART_FIRST_S up to
DEFAULT_RESTART_LONGEST_S) and resets once it has run DEFAULT_STABLE_S. What a dead process
held is queued again by the reconciler, and an image that keeps killing its worker fails after
JOB_MAX_RETRIES deliveries (IMAGE_CRASHED_WORKER). SIGTERM and SIGINT are passed on; the
supervisor ends when every CLI has stopped.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

DEFAULT_RESTART_FIRST_S = 1.0
DEFAULT_RESTART_LONGEST_S = 30.0
DEFAULT_STABLE_S = 60.0
#: Seconds between looks at the children.
POLL_S = 0.2
#: Tells a worker process it delivers webhooks (it then takes no part in the image estimates).
WORKER_ROLE_ENV = "SAMSVC_WORKER_ROLE"

Environment = Callable[[], tuple[Mapping[str, str], Path | None]]


@dataclass
class Child:
    """A command to keep running; `environment()` gives each start its environment and a
    scratch directory removed after that run."""

    name: str
    argv: Sequence[str]
    environment: Environment
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    scratch: Path | None = None
    started: float = 0.0
    pause: float = DEFAULT_RESTART_FIRST_S
    due: float = 0.0
    code: int | None = None

    def start(self) -> None:
        env, self.scratch = self.environment()
        self.started = time.monotonic()
        self.code = None
        self.process = subprocess.Popen(list(self.argv), env=dict(env))

    def reap(self) -> int | None:
        """The exit code if the process has just ended (its scratch directory removed)."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        self.process = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return code


def supervise(children: Sequence[Child]) -> int:
    """Run every child, starting each again whenever it dies, until SIGTERM or SIGINT; then
    returns the largest exit code of their last runs."""
    stop = threading.Event()

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        for child in children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for child in children:
        child.start()
    while True:
        now = time.monotonic()
        for child in children:
            code = child.reap()
            if code is not None:
                child.code = code
                if not stop.is_set():
                    if now - child.started > DEFAULT_STABLE_S:
                        child.pause = DEFAULT_RESTART_FIRST_S
                    child.due = now + child.pause
                    log.error(
                        "%s worker processes exited (code %s); starting them again in %.0f s",
                        child.name, code, child.pause,
                    )  # fmt: skip
                    child.pause = min(child.pause * 2, DEFAULT_RESTART_LONGEST_S)
            elif child.process is None and not stop.is_set() and now >= child.due:
                child.start()
        if stop.is_set() and all(child.process is None for child in children):
            return max((child.code or 0) for child in children)
        time.sleep(POLL_S)
