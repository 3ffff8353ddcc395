"""Storage grows with work, not with calls: Segment calls keep their status only (unless
SINGLE_JOB_RESULTS), the Redis caches hold at most their byte budgets, and ListJobs reads the
caller's own index, not everyone's jobs. Against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import redis

from samsvc.cache.redis import RedisByteCache
from samsvc.config import Settings
from samsvc.jobs.records import JobType
from samsvc.jobs.stores.redis import RedisJobStore
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.jobs.conftest import job
from tests.support import RedisServer, ServerThread, encode, scene

MANY_MASKS = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def stored_bytes(client: redis.Redis, pattern: str) -> int:
    return sum(int(client.memory_usage(key) or 0) for key in client.scan_iter(pattern))  # type: ignore[union-attr]


def test_segment_calls_keep_their_status_not_their_masks(
    base_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    per_call = {}
    for keep in (True, False):
        settings = base_settings.model_copy(
            update={"redis_url": redis_server.url, "data_dir": str(tmp_path / "data"), "single_job_results": keep}
        )
        server = ServerThread(settings)
        try:
            before = stored_bytes(client, "samsvc:job:seg_*")
            answers = [
                server.stub.Segment(pb.SegmentRequest(image=encode(scene(160, 120, seed=i)), **MANY_MASKS))
                for i in range(5)
            ]
            per_call[keep] = (stored_bytes(client, "samsvc:job:seg_*") - before) / len(answers)
            status = server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=answers[-1].job_id))
            assert status.processed_images == 1 and status.job_type == 1
            kept = server.stub.GetJobResults(pb.GetJobResultsRequest(job_id=answers[-1].job_id)).results
            assert len(kept) == (1 if keep else 0)
        finally:
            server.stop()
    assert per_call[True] > 20_000, f"each call with its masks kept: {per_call[True]:.0f} bytes"
    assert per_call[False] < 4_000, f"each call as status only: {per_call[False]:.0f} bytes"


def test_redis_caches_hold_at_most_their_budget(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    cache = RedisByteCache(client, "test:cache", ttl_s=3600, max_bytes=1_000_000)
    for number in range(50):  # 5 MB offered to a 1 MB cache
        cache.put(f"entry{number}", bytes([number]) * 100_000)
    assert cache.stored_bytes() <= 1_000_000
    entries = [key for key in client.scan_iter("test:cache:entry*")]
    assert 1 <= len(entries) <= 10
    assert cache.get("entry49") == bytes([49]) * 100_000, "the newest stays"
    assert cache.get("entry0") is None, "the oldest went first"
    cache.put("entry49", b"smaller")  # replacing an entry counts its new size only
    assert cache.stored_bytes() <= 1_000_000 and cache.get("entry49") == b"smaller"
    cache.put("huge", b"x" * 2_000_000)
    assert cache.get("huge") is None, "an entry over the whole budget is not kept"


def test_the_result_cache_in_redis_is_bounded_by_result_cache_bytes(
    base_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = base_settings.model_copy(
        update={
            "redis_url": redis_server.url,
            "data_dir": str(tmp_path / "data"),
            "result_cache_ttl_s": 600,
            "result_cache_bytes": 40_000,
        }
    )
    server = ServerThread(settings)
    few = dict(MANY_MASKS, points_per_side=3)
    try:
        answers = [  # distinct images: every answer is a new entry
            server.stub.Segment(pb.SegmentRequest(image=encode(scene(96, 72, seed=seed)), **few)).ByteSize()
            for seed in range(8)
        ]
    finally:
        server.stop()
    assert sum(answers) > 2 * 40_000, "more was offered than the budget"
    client = redis.Redis.from_url(redis_server.url)
    assert 0 < int(client.get("samsvc:cache:result:bytes") or 0) <= 40_000


def test_listing_a_keys_jobs_reads_its_own_index(redis_server: RedisServer) -> None:
    store = RedisJobStore.from_url(redis_server.url, prefix="listing")
    client = redis.Redis.from_url(redis_server.url)
    for _ in range(400):
        store.create(job(1, kind=JobType.SINGLE).evolve(owner="someone-else"))
    mine = [store.create(job(1).evolve(owner="alice"))[0].job_id for _ in range(3)]

    def hash_reads(list_call: object) -> int:
        before = _calls(client, "hgetall")
        assert callable(list_call)
        list_call()
        return _calls(client, "hgetall") - before

    everyone = hash_reads(lambda: store.list_jobs(None, None, None, 20, owner=None))
    assert everyone >= 20
    assert hash_reads(lambda: store.list_jobs(None, JobType.BATCH, None, 20, owner=None)) >= 400, (
        "filtering everyone's jobs reads them all: what a key's listing used to cost"
    )
    reads = hash_reads(lambda: store.list_jobs(None, None, None, 20, owner="alice"))
    assert reads <= len(mine)
    assert sorted(j.job_id for j in store.list_jobs(None, None, None, 20, owner="alice")) == sorted(mine)


def _calls(client: redis.Redis, command: str) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
