"""The image ledger behaves the same in both stores: who may run an image, crashed deliveries,
the retry schedule, leases, the active index and the outbox of ended jobs."""

from __future__ import annotations

import pytest

from samsvc.jobs.records import ImageError, ImageResult, JobStatus, JobType, now_ms
from samsvc.jobs.store import BeginOutcome, JobStore, RecordOutcome
from tests.jobs.conftest import ENDING_GRACE_MS, job
from tests.support import wait_for

LEASE_MS = 60_000


def ok(index: int) -> ImageResult:
    return ImageResult(index, processing_time_s=0.1, width=4, height=3)


def test_one_delivery_runs_an_image_and_a_duplicate_leaves_it(store: JobStore) -> None:
    record, _ = store.create(job(2))
    first = store.begin_image(record.job_id, 0, "delivery-a", LEASE_MS, 3)
    assert first.outcome is BeginOutcome.RUN
    assert store.get(record.job_id).status is JobStatus.PROCESSING  # type: ignore[union-attr]
    assert store.begin_image(record.job_id, 0, "delivery-b", LEASE_MS, 3).outcome is BeginOutcome.BUSY
    assert store.record_result(record.job_id, ok(0), "tiny") is RecordOutcome.RECORDED
    assert store.begin_image(record.job_id, 0, "delivery-b", LEASE_MS, 3).outcome is BeginOutcome.SKIP
    assert store.begin_image("job_missing", 0, "delivery-b", LEASE_MS, 3).outcome is BeginOutcome.MISSING
    store.cancel(record.job_id, "stop")
    assert store.begin_image(record.job_id, 1, "delivery-c", LEASE_MS, 3).outcome is BeginOutcome.SKIP


def test_deliveries_that_never_end_count_as_crashes(store: JobStore) -> None:
    record, _ = store.create(job(1))
    # Each delivery's lease runs out at once, as a killed worker's does.
    for attempt in range(2):
        begin = store.begin_image(record.job_id, 0, f"killed-{attempt}", 1, 2)
        assert begin.outcome is BeginOutcome.RUN and begin.crashes == attempt
        wait_for(lambda: _lease_expired(store, record.job_id), what="the lease to run out")
    crashed = store.begin_image(record.job_id, 0, "third", LEASE_MS, 2)
    assert (crashed.outcome, crashed.crashes) == (BeginOutcome.CRASHED, 2)


def _lease_expired(store: JobStore, job_id: str) -> bool:
    return all(p.lease_until_ms < now_ms() for p in store.pending_images(job_id))


def test_a_cancelled_delivery_ends_without_counting_as_a_crash(store: JobStore) -> None:
    record, _ = store.create(job(1))
    assert store.begin_image(record.job_id, 0, "a", 1, 1).outcome is BeginOutcome.RUN
    store.release_image(record.job_id, 0, "a", ended=True)
    (pending,) = store.pending_images(record.job_id)
    assert (pending.started, pending.ended, pending.crashes, pending.lease_token) == (1, 1, 0, "")


def test_a_transient_failure_schedules_a_retry_taken_once_when_due(store: JobStore) -> None:
    record, _ = store.create(job(2))
    store.begin_image(record.job_id, 1, "a", LEASE_MS, 3)
    due = now_ms() + 200
    assert store.schedule_retry(record.job_id, 1, "a", due) == 1
    (_, pending) = store.pending_images(record.job_id)
    assert (pending.index, pending.failures, pending.crashes, pending.lease_token) == (1, 1, 0, "")
    assert pending.touched_ms == due, "not lost before it is due"
    assert store.take_due_retries(due - 1, 10) == []
    assert store.take_due_retries(due, 10) == [(record.job_id, 1)]
    assert store.take_due_retries(due + 1000, 10) == [], "taken once"
    again = store.begin_image(record.job_id, 1, "b", LEASE_MS, 3)
    assert (again.outcome, again.failures) == (BeginOutcome.RUN, 1)


def test_a_result_clears_a_pending_retry(store: JobStore) -> None:
    record, _ = store.create(job(2))
    store.schedule_retry(record.job_id, 0, "a", now_ms())
    store.record_result(record.job_id, ok(0), "tiny")
    assert store.take_due_retries(now_ms() + 1000, 10) == []


def test_leases_are_held_renewed_and_released(store: JobStore) -> None:
    record, _ = store.create(job(1))
    assert store.hold_image(record.job_id, 0, "a", LEASE_MS)
    assert not store.hold_image(record.job_id, 0, "b", LEASE_MS), "a fresh lease is not taken over"
    assert store.renew_lease(record.job_id, 0, "a", LEASE_MS)
    assert not store.renew_lease(record.job_id, 0, "b", LEASE_MS)
    assert store.begin_image(record.job_id, 0, "a", LEASE_MS, 3).outcome is BeginOutcome.RUN, "its holder runs it"
    store.release_image(record.job_id, 0, "a", ended=False)
    assert store.hold_image(record.job_id, 0, "b", LEASE_MS)
    store.record_result(record.job_id, ok(0), "tiny")
    assert not store.renew_lease(record.job_id, 0, "b", LEASE_MS), "a recorded image has no lease"


def test_pending_images_and_requeues(store: JobStore) -> None:
    record, _ = store.create(job(3))
    store.record_result(record.job_id, ok(1), "tiny")
    pending = store.pending_images(record.job_id)
    assert [p.index for p in pending] == [0, 2]
    assert all(p.touched_ms == record.created_at_ms for p in pending), "queued when the job was created"
    assert store.requeue_lost(record.job_id, 2) == 1
    assert store.requeue_lost(record.job_id, 2) == 2
    store.mark_enqueued(record.job_id, [0])
    first, last = store.pending_images(record.job_id)
    assert last.requeues == 2 and last.touched_ms >= record.created_at_ms
    assert first.touched_ms >= record.created_at_ms and first.requeues == 0


def test_active_jobs_and_the_outbox_of_ended_ones(store: JobStore) -> None:
    running, _ = store.create(job(1))
    ending, _ = store.create(job(1))
    single, _ = store.create(job(1, kind=JobType.SINGLE), [ok(0)])
    active = store.active_jobs(1000)
    assert running.job_id in active and ending.job_id in active and single.job_id not in active
    before = now_ms()
    assert store.record_result(ending.job_id, ok(0), "tiny") is RecordOutcome.FINISHED
    assert ending.job_id not in store.active_jobs(1000)
    assert ending.job_id not in store.overdue_endings(before, 100), "not due before the grace time"
    assert ending.job_id in store.overdue_endings(now_ms() + ENDING_GRACE_MS, 100)
    assert single.job_id not in store.overdue_endings(now_ms() + ENDING_GRACE_MS, 100), "singles need no clean-up"
    store.defer_ending(ending.job_id, now_ms() + 10 * ENDING_GRACE_MS)
    assert ending.job_id not in store.overdue_endings(now_ms() + ENDING_GRACE_MS, 100)
    store.ending_done(ending.job_id)
    store.defer_ending(ending.job_id, now_ms())
    assert ending.job_id not in store.overdue_endings(now_ms() + 100 * ENDING_GRACE_MS, 100), "done stays done"
    store.cancel(running.job_id, "stop")
    assert running.job_id not in store.active_jobs(1000)
    assert running.job_id in store.overdue_endings(now_ms() + ENDING_GRACE_MS, 100)


@pytest.mark.parametrize("refused", [1, 2])
def test_images_refused_at_submission_are_part_of_the_creation(store: JobStore, refused: int) -> None:
    bad = [ImageResult(i, error=ImageError("InvalidArgument", "IMAGE_CORRUPT", "bad")) for i in range(refused)]
    record, _ = store.create(job(2), bad)
    assert record.failed_images == refused
    if refused == 2:
        assert record.status is JobStatus.FAILED, "every image refused: the job ended as it was created"
        assert record.job_id not in store.active_jobs(1000)
    else:
        assert [p.index for p in store.pending_images(record.job_id)] == [1]


def test_finish_if_complete_ends_only_complete_jobs(store: JobStore) -> None:
    record, _ = store.create(job(2))
    assert store.finish_if_complete(record.job_id) is None
    store.record_result(record.job_id, ok(0), "tiny")
    assert store.finish_if_complete(record.job_id) is None
    assert store.finish_if_complete("job_missing") is None
