"""Both job stores behave the same: idempotent results, events in order, cancellation,
request ids, listing. The Redis store runs against a real redis-server."""

from __future__ import annotations

import json
import threading

import pytest

from samsvc.errors import ResourceExhausted, Unavailable
from samsvc.jobs.records import EventKind, ImageError, ImageResult, JobStatus, JobType
from samsvc.jobs.store import JobStore, ListCursor, RecordOutcome
from samsvc.jobs.stores.redis import RedisJobStore
from tests.jobs.conftest import job
from tests.support import RedisServer


def ok(index: int, seconds: float = 0.5) -> ImageResult:
    return ImageResult(index, processing_time_s=seconds, width=4, height=3)


def test_a_result_is_recorded_once(store: JobStore) -> None:
    record, created = store.create(job(2))
    assert created
    assert store.record_result(record.job_id, ok(0), "tiny") is RecordOutcome.RECORDED
    assert store.record_result(record.job_id, ok(0, 9.0), "tiny") is RecordOutcome.IGNORED
    assert store.record_result(record.job_id, ok(1), "tiny") is RecordOutcome.FINISHED
    assert store.record_result(record.job_id, ok(1), "tiny") is RecordOutcome.IGNORED
    final = store.get(record.job_id)
    assert final is not None and final.status is JobStatus.COMPLETED
    assert (final.succeeded_images, final.failed_images) == (2, 0)
    assert final.started_at_ms is not None and final.completed_at_ms is not None
    assert store.result(record.job_id, 0).processing_time_s == 0.5  # type: ignore[union-attr]
    kinds = [e.kind for e in store.events(record.job_id, "", 0.1)]
    assert kinds == [
        EventKind.ACCEPTED,
        EventKind.IMAGE,
        EventKind.PROGRESS,
        EventKind.IMAGE,
        EventKind.PROGRESS,
        EventKind.FINISHED,
    ]


def test_concurrent_duplicates_record_once(store: JobStore) -> None:
    record, _ = store.create(job(1))
    outcomes: list[RecordOutcome] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        outcomes.append(store.record_result(record.job_id, ok(0), "tiny"))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.value for o in outcomes) == ["finished"] + ["ignored"] * 7


def test_all_failed_means_failed(store: JobStore) -> None:
    bad = ImageResult(0, error=ImageError("InvalidArgument", "IMAGE_CORRUPT", "images[0]: broken"))
    record, _ = store.create(job(1), [bad])
    final = store.get(record.job_id)
    assert final is not None and final.status is JobStatus.FAILED and final.failed_images == 1


def test_cancel_ends_the_job_and_later_results_are_ignored(store: JobStore) -> None:
    record, _ = store.create(job(3))
    store.record_result(record.job_id, ok(0), "tiny")
    cancelled, changed = store.cancel(record.job_id, "cancelled by request")
    assert changed and cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert store.record_result(record.job_id, ok(1), "tiny") is RecordOutcome.IGNORED
    assert store.cancel(record.job_id, "again") == (store.get(record.job_id), False)
    results, more = store.results(record.job_id, 0, 10)
    assert [r.index for r in results] == [0] and not more
    assert store.events(record.job_id, "", 0.1)[-1].kind is EventKind.FINISHED


def test_events_resume_after_a_cursor_and_wait_for_new_ones(store: JobStore) -> None:
    record, _ = store.create(job(2))
    first = store.events(record.job_id, "", 0.1)
    assert [e.kind for e in first] == [EventKind.ACCEPTED]
    assert store.events(record.job_id, first[-1].cursor, 0.2) == []

    def later() -> None:
        store.record_result(record.job_id, ok(1), "tiny")

    timer = threading.Timer(0.2, later)
    timer.start()
    woken = store.events(record.job_id, first[-1].cursor, 5.0)
    timer.join()
    assert woken[0].kind is EventKind.IMAGE and json.loads(woken[0].data) == {"index": 1}


def test_request_id_returns_the_first_job(store: JobStore) -> None:
    first, created = store.create(job(1), request_id="abc")
    second, created_again = store.create(job(1), request_id="abc")
    assert created and not created_again and second.job_id == first.job_id


def test_results_page_by_index(store: JobStore) -> None:
    record, _ = store.create(job(5))
    for index in (4, 0, 2):
        store.record_result(record.job_id, ok(index), "tiny")
    page, more = store.results(record.job_id, 0, 2)
    assert [r.index for r in page] == [0, 2] and more
    page, more = store.results(record.job_id, 3, 2)
    assert [r.index for r in page] == [4] and not more


def test_listing_is_newest_first_with_filters(store: JobStore) -> None:
    base = 1_900_000_000_000
    made = [
        store.create(job(1, created=base + i, kind=JobType.SINGLE if i % 2 else JobType.BATCH))[0] for i in range(5)
    ]
    store.record_result(made[4].job_id, ok(0), "tiny")
    listed = [r.job_id for r in store.list_jobs(None, None, None, 100) if r.created_at_ms >= base]
    assert listed == [m.job_id for m in reversed(made)]
    singles = store.list_jobs(None, JobType.SINGLE, None, 100)
    assert {m.job_id for m in made if m.job_type is JobType.SINGLE} <= {r.job_id for r in singles}
    assert all(r.job_type is JobType.SINGLE for r in singles)
    done = store.list_jobs(JobStatus.COMPLETED, None, None, 100)
    assert made[4].job_id in {r.job_id for r in done} and all(r.status is JobStatus.COMPLETED for r in done)
    after = ListCursor(made[3].created_at_ms, made[3].job_id)
    assert [r.job_id for r in store.list_jobs(None, None, after, 2)] == [made[2].job_id, made[1].job_id]


def test_mean_image_seconds_follows_measurements(store: JobStore) -> None:
    record, _ = store.create(job(2))
    model = f"m{record.job_id[-6:]}"
    store.record_result(record.job_id, ok(0, 2.0), model)
    store.record_result(record.job_id, ok(1, 4.0), model)
    assert store.mean_image_seconds(model) == pytest.approx(2.0 + 0.2 * (4.0 - 2.0))


def test_redis_outage_is_the_projects_error(redis_server: RedisServer) -> None:
    from tests.support import free_port

    dead = RedisJobStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(Unavailable) as caught:
        dead.get("job_x")
    assert caught.value.reason == "STORE_UNAVAILABLE"


def test_queued_images_are_counted_per_owner_in_both_stores(store: JobStore) -> None:
    first, _ = store.create(job(3).evolve(owner="alice"), queued_limit=5)
    with pytest.raises(ResourceExhausted) as refused:
        store.create(job(3).evolve(owner="alice"), queued_limit=5)
    assert refused.value.reason == "QUEUED_IMAGES_LIMIT"
    refused_early = [ImageResult(i, error=ImageError("InvalidArgument", "IMAGE_CORRUPT", "bad")) for i in range(2)]
    assert store.create(job(4).evolve(owner="alice"), refused_early, queued_limit=5)[1], "refused images don't count"
    assert store.create(job(5).evolve(owner="bob"), queued_limit=5)[1]
    store.record_result(first.job_id, ImageResult(0), "tiny")
    assert store.create(job(1).evolve(owner="alice"), queued_limit=5)[1], "a finished image frees its place"
