"""Prometheus metrics scraped from a real `samsvc serve` process after real traffic."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from samsvc.config import Settings
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc
from tests.support import ServeProcess, ServerThread, encode, scene


def value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{{{wanted}}} not in metrics"
    return float(found.group(1))


@pytest.mark.processes
def test_metrics_follow_traffic(base_settings: Settings) -> None:
    serve = ServeProcess(base_settings.model_copy(update={"metrics_port": 0, "result_cache_ttl_s": 60}))
    try:
        line = serve.process.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"(http://\S+/metrics)", line)
        assert url, line
        with grpc.insecure_channel(serve.address) as channel:
            stub = segmentation_service_pb2_grpc.SegmentationServiceStub(channel)
            request = pb.SegmentRequest(image=encode(scene(64, 48)), points_per_side=2)
            stub.Segment(request)
            stub.Segment(request)  # a result-cache hit
            with pytest.raises(grpc.RpcError):
                stub.Segment(pb.SegmentRequest(image=b"nope"))
        with urllib.request.urlopen(url.group(1), timeout=10) as response:
            text = response.read().decode()
        assert value(text, "samsvc_requests_total", rpc="Segment", code="OK") == 2
        assert value(text, "samsvc_requests_total", rpc="Segment", code="INVALID_ARGUMENT") == 1
        assert value(text, "samsvc_request_seconds_count", rpc="Segment") == 3
        assert value(text, "samsvc_image_seconds_count", model="tiny") == 1
        assert value(text, "samsvc_cache_requests_total", cache="result", outcome="hit") == 1
        assert value(text, "samsvc_cache_requests_total", cache="result", outcome="miss") == 1
        assert value(text, "samsvc_model_load_seconds", model="tiny") > 0
        assert value(text, "samsvc_jobs_submitted_total", type="single") == 2
        assert value(text, "samsvc_queue_depth", priority="high") == 0
        assert value(text, "process_resident_memory_bytes") > 50e6
    finally:
        serve.stop()


def test_a_call_is_counted_before_its_status_reaches_the_caller(server: ServerThread) -> None:
    """Whoever scrapes right after an answer finds it counted (refusals included): the count is
    taken before the status is sent, not after."""
    from prometheus_client import REGISTRY

    def count(code: str) -> float:
        return REGISTRY.get_sample_value("samsvc_requests_total", {"rpc": "Segment", "code": code}) or 0.0

    for _ in range(30):
        before = count("INVALID_ARGUMENT")
        with pytest.raises(grpc.RpcError):
            server.stub.Segment(pb.SegmentRequest(image=b"nope"))
        assert count("INVALID_ARGUMENT") == before + 1
    before = count("OK")
    server.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 24)), points_per_side=1))
    assert count("OK") == before + 1
