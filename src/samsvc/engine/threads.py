"""How torch work shares this process's CPUs.

torch runs its CPU kernels on OpenMP (GNU libgomp in the PyPI wheels). Each thread that calls
torch gets a team of its own, sized by that thread's own setting (`torch.set_num_threads` sets
the calling thread's, but a thread takes the value set last by any thread on its first parallel
call, over its own if it set one before), and a team lives until its thread ends. Once the teams
of a process hold more threads than it has CPUs, libgomp stops spin-waiting between parallel
regions (`do_spin` falls back to its "throttled" count) for every team: each of the hundreds of
small regions of one click then pays a futex wake-up. On 2 CPUs a click by image_id took 38-41
ms in that state against 26-28 ms with one team, and a server entered it for good as soon as a
second pool thread had run torch with 2 threads.

So the threads of a process that run torch keep their teams within the CPUs:
- `ComputeLanes`, the inference pool: lane 0 runs with all the CPUs it is given, every other
  lane single-threaded (a team of one is no OpenMP team), and each call takes the lowest idle
  lane, so a call alone runs at full width and overlapping ones share the CPUs without
  throttling each other;
- every other thread that may touch torch (I/O pools, event loops, batch workers next to the
  lanes) calls `use_torch_threads(1)` first.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")

#: The name prefix of the lanes' threads (lane i is "<prefix>-<i>").
DEFAULT_LANE_PREFIX = "samsvc-inference"


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which a container's cpuset narrows)."""
    return len(os.sched_getaffinity(0))


def use_torch_threads(threads: int) -> None:
    """Set the calling thread's torch CPU threads (1: its torch calls make no OpenMP team)."""
    # torch gives a thread its count on its first parallel call, from the value set last by any
    # thread; that first call happens here, so a later one cannot overwrite what is set next.
    torch.get_num_threads()
    torch.set_num_threads(max(1, threads))


class ComputeLanes(Executor):
    """A pool of `lanes` single-thread lanes for torch work: lane 0 with `threads` torch threads,
    the others with 1; each call runs on the lowest-numbered lane with the fewest calls."""

    def __init__(self, lanes: int, threads: int, prefix: str = DEFAULT_LANE_PREFIX) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self.threads = [max(1, threads)] + [1] * (lanes - 1)
        self._lanes = [
            ThreadPoolExecutor(1, f"{prefix}-{i}", initializer=use_torch_threads, initargs=(n,))
            for i, n in enumerate(self.threads)
        ]
        self._calls = [0] * lanes
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            lane = min(range(len(self._lanes)), key=lambda i: (self._calls[i], i))
            self._calls[lane] += 1
        try:
            future = self._lanes[lane].submit(self._run, lane, fn, *args, **kwargs)
        except BaseException:
            self._release(lane)
            raise
        future.add_done_callback(functools.partial(self._cancelled, lane))
        return future

    def _run(self, lane: int, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        # Released before the future completes: whoever it wakes may submit the next call.
        try:
            return fn(*args, **kwargs)
        finally:
            self._release(lane)

    def _cancelled(self, lane: int, future: Future[Any]) -> None:
        if future.cancelled():  # never ran
            self._release(lane)

    def _release(self, lane: int) -> None:
        with self._lock:
            self._calls[lane] -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=wait, cancel_futures=cancel_futures)
