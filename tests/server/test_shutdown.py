"""A real `samsvc serve` process: NOT_SERVING on SIGTERM, in-flight calls finish, exit 0."""

from __future__ import annotations

import signal
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samsvc.config import Settings
from samsvc.v1 import health_pb2 as samsvc_health
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc
from tests.support import ServeProcess, encode, scene, wait_for


@pytest.mark.processes
def test_sigterm_drains_then_stops(base_settings: Settings) -> None:
    serve = ServeProcess(base_settings.model_copy(update={"shutdown_grace": 60.0}))
    # Open Watch streams must not hold the server: it exits as soon as the in-flight call is done.
    try:
        channel = grpc.insecure_channel(serve.address)
        stub = segmentation_service_pb2_grpc.SegmentationServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        statuses: list[int] = []
        watch = health.Watch(health_pb2.HealthCheckRequest(service="samsvc.v1.SegmentationService"))

        def follow() -> None:
            try:
                for update in watch:
                    statuses.append(update.status)
            except grpc.RpcError:
                return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        wait_for(lambda: health_pb2.HealthCheckResponse.SERVING in statuses, what="SERVING")

        in_flight = stub.Segment.future(
            pb.SegmentRequest(
                image=encode(scene(160, 120)),
                points_per_side=6,
                points_per_batch=4,
                pred_iou_thresh=0.0,
                stability_score_thresh=0.0,
            )
        )
        wait_for(
            lambda: stub.CheckHealth(samsvc_health.CheckHealthRequest()).inference.running == 1,
            what="the request to start",
        )
        serve.process.send_signal(signal.SIGTERM)

        wait_for(lambda: health_pb2.HealthCheckResponse.NOT_SERVING in statuses, what="NOT_SERVING")
        response = in_flight.result(timeout=120)
        assert len(response.masks) > 0, "the in-flight request finished normally"
        assert serve.process.wait(timeout=20) == 0
        with pytest.raises(grpc.RpcError) as caught:
            stub.CheckHealth(samsvc_health.CheckHealthRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    finally:
        serve.stop()
