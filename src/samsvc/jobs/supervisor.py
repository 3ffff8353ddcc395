"""`samsvc worker` keeps its Dramatiq worker processes running.

Dramatiq's CLI stops every worker process it runs when one of them dies (an OOM kill, a crash
in a native library, an image that kills its worker). The supervisor starts them again, after
a pause that doubles while they keep dying (DEFAULT_RESTART_FIRST_S up to
DEFAULT_RESTART_LONGEST_S) and resets once they have run DEFAULT_STABLE_S; what the dead
process held is queued again by the reconciler, and an image that keeps killing its worker
fails after JOB_MAX_RETRIES deliveries (IMAGE_CRASHED_WORKER). SIGTERM and SIGINT are passed
on; the supervisor ends when the processes have stopped.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

DEFAULT_RESTART_FIRST_S = 1.0
DEFAULT_RESTART_LONGEST_S = 30.0
DEFAULT_STABLE_S = 60.0


def supervise(
    argv: Sequence[str],
    environment: Callable[[], tuple[Mapping[str, str], Path | None]],
) -> int:
    """Run `argv` again whenever it dies; `environment()` gives each start its environment and a
    scratch directory removed after that run. Returns the exit code of the last run."""
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    pause = DEFAULT_RESTART_FIRST_S
    while True:
        env, scratch = environment()
        started = time.monotonic()
        child = subprocess.Popen(list(argv), env=dict(env))
        code = child.wait()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if stop.is_set() or code == 0:
            return code
        if time.monotonic() - started > DEFAULT_STABLE_S:
            pause = DEFAULT_RESTART_FIRST_S
        log.error("worker processes exited (code %s); starting them again in %.0f s", code, pause)
        if stop.wait(pause):
            return code
        pause = min(pause * 2, DEFAULT_RESTART_LONGEST_S)
