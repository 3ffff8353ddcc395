"""grpc.health.v1 and the detailed CheckHealth report."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc

from samsvc.v1 import health_pb2 as samsvc_health
from samsvc.v1 import model_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene


def test_standard_health_reports_serving(server: ServerThread) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "samsvc.v1.SegmentationService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


SAM2_BUILTINS = ["sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large"]


def test_detailed_report_covers_models_and_process(server: ServerThread) -> None:
    server.stub.Segment(pb.SegmentRequest(image=encode(scene(48, 32)), points_per_side=1))
    report = server.stub.CheckHealth(samsvc_health.CheckHealthRequest())
    assert report.status == samsvc_health.SERVING_STATUS_SERVING
    assert report.version
    models = {m.name: m for m in report.models}
    assert list(models) == ["vit_h", "vit_l", "vit_b", *SAM2_BUILTINS, "tiny"]
    assert models["sam2.1_hiera_tiny"].family == model_pb2.MODEL_FAMILY_SAM2
    assert models["sam2.1_hiera_tiny"].config == "configs/sam2.1/sam2.1_hiera_t.yaml"
    tiny = models["tiny"]
    assert tiny.family == model_pb2.MODEL_FAMILY_SAM
    assert tiny.source == model_pb2.MODEL_SOURCE_REGISTERED
    assert tiny.weights_present and tiny.loaded and tiny.load_time_seconds > 0 and tiny.device == "cpu"
    assert not models["vit_h"].weights_present and not models["vit_h"].loaded
    assert report.process.rss_bytes > 50_000_000
    assert report.process.cpu_seconds > 0 and report.process.uptime_seconds > 0 and report.process.threads > 1
    assert report.inference.max_workers == server.settings.max_workers
    assert report.inference.max_queue == server.settings.max_queue
    assert report.jobs.mode == "embedded" and report.jobs.store_reachable
    assert (report.jobs.live_workers, report.jobs.live_worker_threads) == (1, server.settings.worker_threads)


def test_list_models_pages(server: ServerThread) -> None:
    first = server.stub.ListModels(pb.ListModelsRequest(page_size=5))
    assert [m.name for m in first.models] == ["vit_h", "vit_l", "vit_b", *SAM2_BUILTINS[:2]]
    assert first.next_page_token
    second = server.stub.ListModels(pb.ListModelsRequest(page_size=5, page_token=first.next_page_token))
    assert [m.name for m in second.models] == [*SAM2_BUILTINS[2:], "tiny"]
    assert second.next_page_token == ""
    everything = server.stub.ListModels(pb.ListModelsRequest())
    assert len(everything.models) == 8
    vit_b = everything.models[2]
    assert vit_b.url.endswith("sam_vit_b_01ec64.pth") and vit_b.size_bytes == 375042383
    assert vit_b.architecture.encoder_embed_dim == 768


def test_list_models_refuses_bad_paging(server: ServerThread) -> None:
    import grpc
    import pytest

    from tests.support import rich_status

    for request, field in [
        (pb.ListModelsRequest(page_size=-1), "page_size"),
        (pb.ListModelsRequest(page_size=101), "page_size"),
        (pb.ListModelsRequest(page_token="garbage!"), "page_token"),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.ListModels(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _, details = rich_status(caught.value)
        assert details["BadRequest"].field_violations[0].field == field
