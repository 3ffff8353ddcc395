"""Torch's OpenMP teams stay within the CPUs: one wide lane, the others single-threaded, and a
call alone always on the wide one (samsvc.engine.threads)."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import pytest
import torch

from samsvc.engine.threads import ComputeLanes, use_torch_threads

CPUS = 2


def torch_work() -> tuple[int, int]:
    """Some torch work (it makes the calling thread's OpenMP team); (thread, its torch threads)."""
    torch.randn(256, 256) @ torch.randn(256, 256)
    return threading.get_ident(), torch.get_num_threads()


def teams_after(executor: Executor) -> dict[int, int]:
    """Torch threads of each pool thread that ran torch work: calls one at a time, then two at
    once (both threads of a pool busy together), then one at a time again."""
    teams: dict[int, int] = {}
    for _ in range(3):
        thread, threads = executor.submit(torch_work).result()
        teams[thread] = threads
    both = threading.Barrier(2, timeout=30)

    def together() -> tuple[int, int]:
        both.wait()
        return torch_work()

    for future in [executor.submit(together) for _ in range(2)]:
        thread, threads = future.result()
        teams[thread] = threads
    for _ in range(3):
        thread, threads = executor.submit(torch_work).result()
        teams[thread] = threads
    return teams


def test_a_plain_pool_grows_teams_past_the_cpus() -> None:
    """The fault: a two-thread pool whose threads each take the CPUs' width holds two teams of
    2 on 2 CPUs once both have run (libgomp then throttles its spin-waits for good)."""
    with ThreadPoolExecutor(2, initializer=use_torch_threads, initargs=(CPUS,)) as pool:
        teams = teams_after(pool)
    assert len(teams) == 2 and sum(teams.values()) > CPUS


def test_lanes_keep_the_teams_within_the_cpus() -> None:
    lanes = ComputeLanes(2, CPUS)
    try:
        teams = teams_after(lanes)
        assert len(teams) == 2
        assert sorted(teams.values()) == [1, CPUS]  # one wide team; the other lane makes none
        wide = next(thread for thread, threads in teams.items() if threads == CPUS)
        # Calls one at a time, before and after the overlap, all ran on the wide lane.
        assert all(lanes.submit(torch_work).result() == (wide, CPUS) for _ in range(5))
    finally:
        lanes.shutdown()


def test_a_call_alone_takes_the_wide_lane_even_right_after_another() -> None:
    """The lane is free again before the call's future completes, so a caller woken by one
    result and submitting the next at once still gets lane 0."""
    lanes = ComputeLanes(3, CPUS)
    try:
        first = lanes.submit(torch_work).result()
        assert {lanes.submit(torch_work).result() for _ in range(50)} == {first}
    finally:
        lanes.shutdown()


def test_an_overlapping_call_takes_a_free_lane_not_the_queue() -> None:
    lanes = ComputeLanes(2, CPUS)
    release = threading.Event()
    try:
        busy = lanes.submit(release.wait, 30)
        thread, threads = lanes.submit(torch_work).result(timeout=30)  # not behind the busy lane
        assert threads == 1 and thread != threading.get_ident()
        release.set()
        assert busy.result(timeout=30)
    finally:
        release.set()
        lanes.shutdown()


def test_a_failed_or_cancelled_call_frees_its_lane() -> None:
    lanes = ComputeLanes(1, CPUS)
    release = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    try:
        with pytest.raises(RuntimeError):
            lanes.submit(fail).result()
        wide = lanes.submit(torch_work).result()
        busy = lanes.submit(release.wait, 30)
        queued = lanes.submit(torch_work)
        assert queued.cancel()
        release.set()
        busy.result(timeout=30)
        assert lanes.submit(torch_work).result() == wide
        assert lanes._calls == [0]
    finally:
        release.set()
        lanes.shutdown()


def test_use_torch_threads_sets_the_calling_thread_only() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []

    def narrow() -> None:
        use_torch_threads(1)
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=narrow)
    worker.start()
    worker.join()
    assert seen == [1] and torch.get_num_threads() == before


def test_a_thread_keeps_its_width_when_another_sets_one_before_its_first_torch_call() -> None:
    """torch sets a thread's count from the process's last set value on that thread's first
    parallel call: a width set before it would be overwritten by whatever another thread set
    in between, unless use_torch_threads has that first initialisation happen at once."""
    before = torch.get_num_threads()
    narrowed, other_set = threading.Event(), threading.Event()
    seen: list[int] = []

    def narrow() -> None:
        use_torch_threads(1)
        narrowed.set()
        other_set.wait(30)
        seen.append(torch_work()[1])

    worker = threading.Thread(target=narrow)
    worker.start()
    try:
        narrowed.wait(30)
        torch.set_num_threads(CPUS)  # another thread sets the process's last value
        other_set.set()
        worker.join(30)
        assert seen == [1]
    finally:
        other_set.set()
        torch.set_num_threads(before)
