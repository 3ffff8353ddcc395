"""Whole-dataset embedding jobs in both runtimes: progress streams like a batch's, a bad image
fails alone, each image's embedding is kept and read back (or opened as an image session)
after the job ended, and only by the key that made the job."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from samsvc.config import Settings
from samsvc.server.auth import digest, new_key
from samsvc.v1 import interactive_pb2 as ipb
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene
from tests.support.stacks import MODES, job_stack
from tests.support.starts import starts

ALICE, BOB = new_key(), new_key()
A, B = [("x-api-key", ALICE)], [("x-api-key", BOB)]


@starts("redis", "processes", when_param="redis", scope="module", params=MODES)
def server(
    request: pytest.FixtureRequest, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    settings = base_settings.model_copy(
        update={
            "data_dir": str(tmp_path_factory.mktemp("data")),
            "api_keys": [f"alice:{digest(ALICE)}", f"bob:{digest(BOB)}"],
        }
    )
    with job_stack(request.param, settings, tmp_path_factory.mktemp("redis")) as running:
        yield running


def test_an_embedding_job_keeps_each_images_embedding(server: ServerThread) -> None:
    stub = server.stub
    images = [encode(scene(96, 72, seed=51)), b"\xff\xd8\xff not a jpeg", encode(scene(64, 80, seed=52))]
    accepted = stub.SubmitEmbeddingBatch(ipb.SubmitEmbeddingBatchRequest(images=images), metadata=A)
    assert accepted.total_images == 3
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=accepted.job_id), metadata=A, timeout=300))
    finished = events[-1].finished.job
    assert finished.status == job_pb2.JOB_STATUS_COMPLETED and finished.job_type == job_pb2.JOB_TYPE_EMBEDDING
    assert (finished.processed_images, finished.failed_images) == (3, 1)
    by_index = {e.image.index: e.image for e in events if e.WhichOneof("event") == "image"}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]

    for index in (0, 2):
        result = by_index[index]
        stored = stub.GetImageEmbedding(
            ipb.GetImageEmbeddingRequest(job_image=ipb.JobImage(job_id=accepted.job_id, index=index)), metadata=A
        )
        fresh = stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image=images[index]), metadata=A)
        assert stored.embedding_cache_hit and stored.image_id == result.image_id == fresh.image_id
        assert (result.image_width, result.image_height) == (
            fresh.transform.original_width,
            fresh.transform.original_height,
        )
        ours = np.frombuffer(stored.tensors[0].data, dtype="<f4")
        theirs = np.frombuffer(fresh.tensors[0].data, dtype="<f4")
        assert np.allclose(ours, theirs, atol=1e-5)
    # A stored embedding opens as a session without the encoder, and answers prompts.
    session = stub.CreateImageSession(
        ipb.CreateImageSessionRequest(job_image=ipb.JobImage(job_id=accepted.job_id, index=0)), metadata=A
    )
    assert session.embedding_cache_hit and session.image_id == by_index[0].image_id
    answer = stub.SegmentPrompts(
        pb.SegmentPromptsRequest(image_id=session.image_id, prompts=[pb.Prompt(points=[pb.PointPrompt(x=9, y=9)])]),
        metadata=A,
    )
    assert len(answer.results[0].masks) == 1

    refusals = {
        ("NOT_FOUND", "JOB_NOT_FOUND"): (accepted.job_id, 0, B),
        ("NOT_FOUND", "EMBEDDING_NOT_FOUND"): (accepted.job_id, 1, A),
        ("INVALID_ARGUMENT", "INVALID_PARAMETER"): (accepted.job_id, 7, A),
    }
    for (code, reason), (job_id, index, caller) in refusals.items():
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetImageEmbedding(
                ipb.GetImageEmbeddingRequest(job_image=ipb.JobImage(job_id=job_id, index=index)), metadata=caller
            )
        assert (caught.value.code().name, rich_status(caught.value)[1]["ErrorInfo"].reason) == (code, reason)
    listed = stub.ListJobs(pb.ListJobsRequest(job_type=job_pb2.JOB_TYPE_EMBEDDING), metadata=A).jobs
    assert accepted.job_id in [j.job_id for j in listed]


def test_a_segment_batch_is_not_an_embedding_source(server: ServerThread) -> None:
    stub = server.stub
    job = stub.SubmitBatch(
        pb.SubmitBatchRequest(images=[encode(scene(40, 30))], options=pb.SegmentOptions(points_per_side=1)), metadata=A
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetImageEmbedding(
            ipb.GetImageEmbeddingRequest(job_image=ipb.JobImage(job_id=job.job_id, index=0)), metadata=A
        )
    assert rich_status(caught.value)[1]["ErrorInfo"].reason == "NOT_AN_EMBEDDING_JOB"
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitEmbeddingBatch(ipb.SubmitEmbeddingBatchRequest(images=[], model_type="tiny"), metadata=A)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
