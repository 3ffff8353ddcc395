"""Both image session stores behind one interface: renewal on use, expiry, the byte budget
(least recently used first), ownership, previous answers; and in Redis, an outage is an error
the caller sees (UNAVAILABLE), never a silently missing session."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from samsvc.engine.embeddings import ImageEmbedding
from samsvc.errors import FailedPrecondition, Unavailable
from samsvc.infra.redis_connection import connect
from samsvc.sessions.memory import MemorySessionStore
from samsvc.sessions.redis import RedisSessionStore
from samsvc.sessions.store import ImageSessionRecord, SessionStore, image_id
from samsvc.validation.sessions import check_image_id
from tests.support import RedisServer, wait_for
from tests.support.starts import starts

MakeStore = Callable[..., SessionStore]
EMBEDDING_BYTES = 256 * 64 * 64 * 4
LOGITS = np.full((1, 256, 256), 0.5, dtype=np.float32)


def record(owner: str, seed: int) -> ImageSessionRecord:
    features = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, 256, 64, 64)).astype(np.float32))
    return ImageSessionRecord(
        image_id=image_id(bytes([seed]), "tiny"),
        owner=owner,
        model="tiny",
        identity="abc:fp32",
        digest="abc",
        embedding=ImageEmbedding(features, (768, 1024), (480, 640)),
    )


@starts("redis", scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@starts("redis", when_param="redis", params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def make(max_bytes: int = 64 * EMBEDDING_BYTES, ttl_s: float = 3600, per_key: int = 0) -> SessionStore:
        if request.param == "memory":
            return MemorySessionStore(max_bytes, ttl_s, per_key)
        return RedisSessionStore(
            connect(redis_url, text=False), torch.device("cpu"), prefix=f"t{time.monotonic_ns()}", ttl_s=ttl_s,
            max_bytes=max_bytes, max_bytes_per_key=per_key,
        )  # fmt: skip

    return make


def test_a_session_comes_back_as_stored_and_only_to_its_owner(make_store: MakeStore) -> None:
    store = make_store()
    stored = store.put(record("alice", 1))
    assert stored.expires_at > time.time() + 3000
    found = store.get("alice", stored.image_id)
    assert found is not None and found.model == "tiny" and found.identity == "abc:fp32"
    assert torch.equal(found.embedding.features, stored.embedding.features)
    assert (found.embedding.input_size, found.embedding.original_size) == ((768, 1024), (480, 640))
    assert store.get("bob", stored.image_id) is None
    assert store.set_previous("alice", stored.image_id, (LOGITS, LOGITS * 2))
    again = store.get("alice", stored.image_id)
    assert again is not None and len(again.previous) == 2 and np.array_equal(again.previous[1], LOGITS * 2)
    assert not store.set_previous("bob", stored.image_id, (LOGITS,))
    assert store.delete("alice", stored.image_id) and not store.delete("alice", stored.image_id)
    assert store.get("alice", stored.image_id) is None


def test_the_byte_budget_drops_the_least_recently_used(make_store: MakeStore) -> None:
    store = make_store(max_bytes=2 * EMBEDDING_BYTES + 300_000)
    first, second = store.put(record("a", 1)), store.put(record("a", 2))
    assert store.get("a", first.image_id) is not None  # first is now the most recently used
    third = store.put(record("a", 3))
    assert store.get("a", second.image_id) is None
    assert store.get("a", first.image_id) is not None and store.get("a", third.image_id) is not None
    with pytest.raises(FailedPrecondition):
        make_store(max_bytes=EMBEDDING_BYTES - 1).put(record("a", 4))


def alive(store: SessionStore, owner: str, seeds: range) -> list[int]:
    return [seed for seed in seeds if store.get(owner, image_id(bytes([seed]), "tiny"), renew=False) is not None]


def test_one_key_cannot_evict_another_keys_sessions(make_store: MakeStore) -> None:
    """One budget for all used to let a key push everyone else's sessions out by making its
    own: bob's eighth session evicted alice's. Now a key's sessions are held to the per-key
    budget and, when the store is full, the key's own least recently used go first."""
    store = make_store(max_bytes=5 * EMBEDDING_BYTES + 500_000, per_key=3 * EMBEDDING_BYTES + 300_000)
    store.put(record("alice", 1))
    store.put(record("alice", 2))
    for seed in range(10, 18):
        store.put(record("bob", seed))
    assert alive(store, "alice", range(1, 3)) == [1, 2], "alice's sessions survive bob's"
    assert alive(store, "bob", range(10, 18)) == [15, 16, 17], "bob keeps his newest, within his budget"
    # The store is full (5 sessions): bob's next session evicts bob's oldest, not alice's older ones.
    store.put(record("bob", 18))
    assert alive(store, "alice", range(1, 3)) == [1, 2]
    assert alive(store, "bob", range(10, 19)) == [16, 17, 18]
    # A key's previous answers count against its own budget too.
    assert store.set_previous("bob", image_id(bytes([18]), "tiny"), (LOGITS,) * 8)
    assert alive(store, "alice", range(1, 3)) == [1, 2]
    assert 18 in alive(store, "bob", range(10, 19))
    # Alone in the store, a key may use it up to its budget; another key's first session then
    # evicts the least recently used of all only when the store is full.
    carol = make_store(max_bytes=2 * EMBEDDING_BYTES + 300_000, per_key=2 * EMBEDDING_BYTES + 300_000)
    carol.put(record("carol", 1))
    carol.put(record("carol", 2))
    carol.put(record("dave", 3))
    assert alive(carol, "carol", range(1, 3)) == [2] and alive(carol, "dave", range(3, 4)) == [3]
    with pytest.raises(FailedPrecondition) as caught:
        make_store(per_key=EMBEDDING_BYTES - 1).put(record("a", 4))
    assert "IMAGE_SESSION_BYTES_PER_KEY" in caught.value.message


def test_sessions_expire_unless_used(make_store: MakeStore) -> None:
    store = make_store(ttl_s=1.5)
    kept, left = store.put(record("a", 1)), store.put(record("a", 2))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # used every 0.3 s: renewed each time
        assert store.get("a", kept.image_id) is not None
        time.sleep(0.3)
    assert store.get("a", left.image_id, renew=False) is None
    peeked = store.get("a", kept.image_id, renew=False)
    assert peeked is not None and peeked.expires_at < time.time() + 1.5
    wait_for(lambda: store.get("a", kept.image_id, renew=False) is None, timeout=10, what="expiry")


def test_ids_are_content_and_model() -> None:
    assert image_id(b"x", "tiny") == image_id(b"x", "tiny") != image_id(b"x", "vit_b")
    assert check_image_id(image_id(b"x", "sam2.1_hiera_tiny")) == "sam2.1_hiera_tiny"


@pytest.mark.redis
def test_a_redis_outage_is_unavailable_not_a_missing_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = RedisServer(tmp_path_factory.mktemp("outage"))
    try:
        store = RedisSessionStore(connect(server.url, text=False), torch.device("cpu"))
        stored = store.put(record("a", 1))
        server.kill()
        for call in (
            lambda: store.get("a", stored.image_id),
            lambda: store.put(record("a", 2)),
            lambda: store.set_previous("a", stored.image_id, (LOGITS,)),
            lambda: store.delete("a", stored.image_id),
        ):
            with pytest.raises(Unavailable) as caught:
                call()
            assert caught.value.reason == "STORE_UNAVAILABLE" and "127.0.0.1" not in caught.value.message
        server.start()  # AOF: the session survived the crash
        assert store.get("a", stored.image_id) is not None
    finally:
        server.stop()
