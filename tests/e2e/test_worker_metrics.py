"""`samsvc worker`'s own Prometheus endpoint, scraped after real batch work: the samples of all
its Dramatiq processes summed, the queue depth and each worker process's resources."""

from __future__ import annotations

import re
import urllib.request

import psutil
import pytest

from samsvc.config import Settings
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.server.test_metrics import value
from tests.support import RedisServer, ServerThread, WorkerProcess, encode, scene, wait_for

pytestmark = pytest.mark.processes  # samsvc's own processes: workers, `samsvc serve`


def loads_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps", encoding="utf-8") as maps:
        return "libtorch" in maps.read()


def serves(pid: int, url: str) -> bool:
    """Whether process `pid` listens on the port of `url`."""
    port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
    try:
        return any(
            c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.Process(pid).net_connections()
        )
    except psutil.NoSuchProcess:
        return False


def test_worker_processes_export_their_metrics(redis_settings: tuple[Settings, RedisServer]) -> None:
    settings = redis_settings[0].model_copy(update={"worker_processes": 2, "worker_metrics_port": 0})
    worker = WorkerProcess(settings)
    server = ServerThread(settings)
    try:
        images = [encode(scene(64, 48, seed=i)) for i in range(3)]
        options = pb.SegmentOptions(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
        events = list(server.stub.SegmentBatch(pb.SubmitBatchRequest(images=images, options=options), timeout=300))
        assert events[-1].finished.job.status == job_pb2.JOB_STATUS_COMPLETED
        url = wait_for(
            lambda: re.search(r"worker metrics on (http://\S+/metrics)", worker.output()),
            timeout=60,
            what="the worker's metrics endpoint",
        ).group(1)
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert value(text, "samsvc_images_total", model="tiny", outcome="succeeded") == 3
        assert value(text, "samsvc_image_seconds_count", model="tiny") == 3
        assert value(text, "samsvc_queue_depth", priority="normal") == 0
        assert value(text, "samsvc_worker_processes") == 2
        memory = [
            float(v) for v in re.findall(r"^samsvc_worker_resident_memory_bytes\{pid=\"\d+\"\} (\S+)$", text, re.M)
        ]
        assert len(memory) == 2 and min(memory) > 50e6
        # Only the image workers run models: the supervisor (`samsvc worker` itself), the
        # process serving these metrics and the webhook processes name queues, read files and
        # send requests, and do not load torch (its import costs seconds of CPU next to the
        # first images, and hundreds of MB each).
        workers = {int(pid) for pid in re.findall(r"^samsvc_worker_resident_memory_bytes\{pid=\"(\d+)\"\}", text, re.M)}
        assert all(loads_torch(pid) for pid in workers)
        others = [worker.process.pid, *(set(worker.children()) - workers)]
        serving = [pid for pid in others if serves(pid, url)]
        assert len(serving) == 1
        assert not any(loads_torch(pid) for pid in [worker.process.pid, *serving])
        # Nor do the webhook queue's processes (Dramatiq's main process and its one worker).
        webhooks = [pid for pid in worker.children() if "samsvc-webhooks" in psutil.Process(pid).cmdline()]
        assert len(webhooks) == 2
        assert not any(loads_torch(pid) for pid in webhooks)
    finally:
        server.stop()
        worker.stop()
