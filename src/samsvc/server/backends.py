"""Where the server's shared state lives, chosen in one place: the Segment result cache, the
embedding cache, image sessions and the per-key rate limits each in Redis when REDIS_URL is set
(shared by replicas), else in this process's memory. (The job machinery chooses its own in
samsvc.jobs.wiring.)"""

from __future__ import annotations

from samsvc.cache.backend import ByteCache
from samsvc.cache.memory import MemoryByteCache
from samsvc.cache.redis import RedisByteCache
from samsvc.config import Settings
from samsvc.engine.embeddings import EmbeddingCache
from samsvc.engine.loader import ModelManager
from samsvc.infra.redis_connection import connect
from samsvc.server.rate_limit import Limits, RateLimiter
from samsvc.server.rate_limits.memory import MemoryRateLimiter
from samsvc.server.rate_limits.redis import RedisRateLimiter
from samsvc.sessions.memory import MemorySessionStore
from samsvc.sessions.redis import RedisSessionStore
from samsvc.sessions.store import SessionStore


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    """Per-caller limits: in Redis when configured (shared by replicas), else in memory."""
    limits = Limits(settings.rate_limit_requests_per_minute, settings.rate_limit_images_per_minute)
    if not limits.active:
        return None
    if settings.redis_url:
        return RedisRateLimiter(connect(settings.redis_url), limits)
    return MemoryRateLimiter(limits)


def build_caches(settings: Settings) -> tuple[ByteCache | None, EmbeddingCache | None]:
    """The Segment result cache (Redis when configured, else memory) and the embedding cache
    (memory, or Redis with EMBEDDING_CACHE_REDIS)."""
    result: ByteCache | None = None
    if settings.result_cache_ttl_s > 0 and settings.result_cache_bytes > 0:
        if settings.redis_url:
            result = RedisByteCache(
                connect(settings.redis_url, text=False),
                "samsvc:cache:result",
                settings.result_cache_ttl_s,
                settings.result_cache_bytes,
            )
        else:
            result = MemoryByteCache(settings.result_cache_bytes, settings.result_cache_ttl_s)
    embeddings: EmbeddingCache | None = None
    if settings.embedding_cache_redis and settings.redis_url and settings.embedding_cache_bytes > 0:
        ttl = settings.result_cache_ttl_s or 3600
        cache = RedisByteCache(
            connect(settings.redis_url, text=False), "samsvc:cache:embedding", ttl, settings.embedding_cache_bytes
        )
        embeddings = EmbeddingCache(cache)
    elif settings.embedding_cache_bytes > 0:
        embeddings = EmbeddingCache(MemoryByteCache(settings.embedding_cache_bytes))
    return result, embeddings


def build_sessions(settings: Settings, models: ModelManager) -> SessionStore | None:
    """Image sessions: in Redis when configured (shared by replicas), else in memory; None when
    IMAGE_SESSION_BYTES is 0."""
    if settings.image_session_bytes <= 0:
        return None
    if settings.redis_url:
        return RedisSessionStore(
            connect(settings.redis_url, text=False),
            models.device,
            ttl_s=settings.image_session_ttl_s,
            max_bytes=settings.image_session_bytes,
            max_bytes_per_key=settings.image_session_bytes_per_key,
        )
    return MemorySessionStore(
        settings.image_session_bytes, settings.image_session_ttl_s, settings.image_session_bytes_per_key
    )
