"""The image session store interface and its record.

A session holds one image's embedding (and the best low-resolution logits of its last answer,
for refinement clicks) under `(owner, image_id)`: a session belongs to the API key that made
it, and another key's lookup finds nothing. Sessions last `ttl_s` after their last use; one
key's sessions hold at most `max_bytes_per_key` and all of a store's sessions at most
`max_bytes`. When either is full, the owner's own least recently used sessions go first, and
another key's (the least recently used of all) only when the owner has no other left, so one
key cannot empty the store of everyone else's sessions. Backends: samsvc.sessions.memory (this process) and
samsvc.sessions.redis (shared by every replica).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from samsvc.engine.embeddings import ImageEmbedding
from samsvc.errors import NotFound

#: Seconds a session lives after its last use.
DEFAULT_TTL_S = 3600
#: Bytes all sessions of a store may hold (an SAM embedding is 4 MiB).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Bytes one key's sessions may hold: a quarter of the default store (32 SAM embeddings).
DEFAULT_MAX_BYTES_PER_KEY = 128 * 1024 * 1024


def image_id(data: bytes, model: str) -> str:
    """The session id of an image and a model (samsvc.validation.sessions.IMAGE_ID): the same
    bytes and model, the same id."""
    return f"img_{hashlib.sha256(data).hexdigest()[:32]}_{model}"


def session_expired(image_id: str) -> NotFound:
    return NotFound(
        f"image session {image_id!r} does not exist or has expired: create it again (CreateImageSession)",
        reason="IMAGE_SESSION_EXPIRED",
        metadata={"image_id": image_id},
    )


@dataclass(frozen=True)
class ImageSessionRecord:
    image_id: str
    owner: str
    model: str
    #: LoadedModel.identity when the embedding was computed: a session of another
    #: checkpoint or precision is never used.
    identity: str
    #: The checkpoint's SHA-256.
    digest: str
    embedding: ImageEmbedding
    #: Per prompt of the session's last answer, the 1 x 256 x 256 logits of its best mask.
    previous: tuple[npt.NDArray[np.float32], ...] = ()
    #: Unix seconds when the session expires unless used (set by the store).
    expires_at: float = field(default=0.0, compare=False)

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes + sum(int(p.nbytes) for p in self.previous)

    def evolve(self, **changes: object) -> ImageSessionRecord:
        return replace(self, **changes)  # type: ignore[arg-type]


class SessionStore(Protocol):
    ttl_s: float
    max_bytes: int
    #: 0: a key's sessions are held only to `max_bytes`.
    max_bytes_per_key: int

    def put(self, record: ImageSessionRecord) -> ImageSessionRecord:
        """Store (or replace) the session; returns it with its expiry. A session larger than
        either budget is refused (FAILED_PRECONDITION)."""

    def get(self, owner: str, image_id: str, renew: bool = True) -> ImageSessionRecord | None:
        """The session (renewed for another `ttl_s` unless not `renew`); None when absent or expired."""

    def set_previous(self, owner: str, image_id: str, previous: tuple[npt.NDArray[np.float32], ...]) -> bool:
        """Keep the best logits of the session's latest answer; False when the session is gone."""

    def delete(self, owner: str, image_id: str) -> bool:
        """End the session; whether it existed."""
