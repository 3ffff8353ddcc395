"""The server's threads that run torch keep torch's OpenMP teams within the CPUs
(samsvc.engine.threads): the inference pool's lane 0 runs with all of them, its other lanes,
the I/O pool and the event loop single-threaded; embedded batch images run on the lanes."""

from __future__ import annotations

import asyncio
import queue
import threading

import dramatiq
import pytest
import torch
from dramatiq.brokers.stub import StubBroker

from samsvc.config import Settings, server_torch_threads
from samsvc.engine.threads import cpu_count
from samsvc.inference.pipeline import run_segment
from samsvc.jobs.worker import actors
from samsvc.jobs.worker.torch_threads import TorchThreads
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene


@pytest.fixture(scope="module")
def server_settings(base_settings: Settings) -> Settings:
    return base_settings.model_copy(update={"max_workers": 2, "torch_threads": 0})


def test_inference_lanes_io_pool_and_loop_thread_widths(server: ServerThread) -> None:
    quick = dict(points_per_side=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    # Real inferences, one at a time and two at once, before looking.
    for _ in range(2):
        server.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), **quick))
    both = [
        threading.Thread(target=server.stub.Segment, args=(pb.SegmentRequest(image=encode(scene(48, 48)), **quick),))
        for _ in range(2)
    ]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(timeout=120)

    lanes = server.running.executor
    hold = threading.Event()
    try:
        busy = lanes.submit(lambda: (hold.wait(30), torch.get_num_threads())[1])  # lane 0, kept busy
        other = lanes.submit(torch.get_num_threads).result(timeout=30)  # so this one takes lane 1
    finally:
        hold.set()
    assert busy.result(timeout=30) == server_torch_threads(server.settings, cpu_count()) == cpu_count()
    assert other == 1
    assert server.running.io_executor.submit(torch.get_num_threads).result(timeout=30) == 1

    async def loop_threads() -> int:
        return torch.get_num_threads()

    assert asyncio.run_coroutine_threadsafe(loop_threads(), server.loop).result(timeout=30) == 1


def test_worker_threads_set_their_own_torch_threads() -> None:
    """Set on the process's main thread, the value would not bind Dramatiq's worker threads
    (each thread keeps its own); the middleware sets it in each of them."""
    broker = StubBroker()
    broker.add_middleware(TorchThreads(1))
    seen: queue.Queue[int] = queue.Queue()

    @dramatiq.actor(broker=broker, queue_name="probe")
    def probe() -> None:
        seen.put(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what a thread without the middleware would take
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        for _ in range(4):
            probe.send()
        assert [seen.get(timeout=30) for _ in range(4)] == [1, 1, 1, 1]
    finally:
        worker.stop()
        torch.set_num_threads(before)


def test_embedded_batch_images_run_on_the_lanes(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not on the Dramatiq thread: an image alone takes lane 0 and the CPUs' torch threads."""
    seen: list[tuple[str, int]] = []

    def recorded(*args: object) -> object:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return run_segment(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(actors, "run_segment", recorded)
    options = pb.SegmentOptions(points_per_side=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    images = [encode(scene(40, 30, seed=i)) for i in range(2)]
    events = list(server.stub.SegmentBatch(pb.SubmitBatchRequest(images=images, options=options), timeout=120))
    assert events[-1].WhichOneof("event") == "finished"
    assert len(seen) == 2
    assert all(name.startswith("samsvc-inference-0") and threads == cpu_count() for name, threads in seen), seen
