"""What is kept between calls: embeddings, Segment answers, image sessions.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class CacheSettings(BaseSettings):
    """What is kept between calls: embeddings, Segment answers, image sessions."""

    embedding_cache_bytes: int = Field(
        512 * 1024 * 1024, ge=0, description="Bytes of cached image embeddings, in memory or Redis; 0 turns it off."
    )
    embedding_cache_redis: bool = Field(
        False, description="Keep image embeddings in Redis (REDIS_URL) instead of memory, shared by replicas."
    )
    result_cache_ttl_s: int = Field(3600, ge=0, description="Seconds Segment results stay cached; 0 turns it off.")
    result_cache_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Bytes of cached Segment answers, in memory or Redis; 0 turns it off."
    )
    image_session_ttl_s: int = Field(
        3600, ge=1, description="Seconds an image session lives after its last use (CreateImageSession)."
    )
    image_session_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        description="Bytes all image sessions may hold, in memory or Redis (least recently used go first); 0: off.",
    )
    image_session_bytes_per_key: int = Field(
        128 * 1024 * 1024,
        ge=0,
        description="Bytes one API key's image sessions may hold (its own oldest go first); 0: only the total.",
    )
