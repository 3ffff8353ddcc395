"""Interactive segmentation's units of work: an image's embedding (computed once: the
embedding cache, image sessions and embedding jobs reuse it) and prompts answered from it,
encoded for the answer. Blocking: the server runs them in its inference pool, workers in their
threads.

Input arrives checked by samsvc.validation, except the pixels, decoded here (and only when no
stored embedding spares it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from samsvc.encoding.masks import MaskEncoding, Polygon, Rle
from samsvc.engine.amg_types import CancelToken
from samsvc.engine.embeddings import EmbeddingCache, ImageEmbedding
from samsvc.engine.loader import LoadedModel, ModelManager
from samsvc.engine.prompt_types import PromptSpec
from samsvc.inference.pipeline import encode_pixels, image_key
from samsvc.infra import metrics
from samsvc.sessions.store import image_id, session_expired
from samsvc.validation.image import ImageHeader, decode_image


@dataclass(frozen=True)
class EmbeddedImage:
    """An image's embedding and where it came from."""

    embedding: ImageEmbedding
    model: str
    #: LoadedModel.identity of the model that computed it.
    identity: str
    #: SHA-256 of that model's checkpoint.
    digest: str
    image_id: str
    #: Whether it was reused (the encoder did not run).
    reused: bool
    processing_time_s: float


def embedding_cache_key(owner: str, model: str, identity: str, data: bytes) -> str:
    """An embedding is cached for the key that sent the image: a hit (and its speed) never tells
    one key that another sent the same image."""
    return f"{owner}:{model}:{identity}:{image_key(data)}"


def embed_image(
    data: bytes,
    header: ImageHeader,
    model: str,
    models: ModelManager,
    cache: EmbeddingCache | None,
    owner: str,
    cancel: CancelToken | None = None,
) -> EmbeddedImage:
    """The image's embedding from `owner`'s cache, or decoded and encoded (then cached)."""
    started = time.perf_counter()
    loaded = models.get(model)
    key = embedding_cache_key(owner, model, loaded.identity, data)
    embedding = cache.get(key, loaded.device) if cache is not None else None
    hit = embedding is not None
    if cache is not None:
        metrics.CACHE_REQUESTS.labels("embedding", "hit" if hit else "miss").inc()
    if embedding is None:
        image = decode_image(data, header)
        if cancel is not None:
            cancel.raise_if_cancelled()
        encoding = time.perf_counter()
        embedding = loaded.embed(image)
        models.costs.observe_encode(model, time.perf_counter() - encoding)
        if cache is not None:
            cache.put(key, embedding)
    return EmbeddedImage(
        embedding=embedding,
        model=model,
        identity=loaded.identity,
        digest=loaded.digest,
        image_id=image_id(data, model),
        reused=hit,
        processing_time_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class PromptTask:
    """Checked prompts on one image: sent (`image` with its `header`) or an image session's
    `embedding`, computed by the model whose identity is `identity`."""

    model: str
    prompts: list[PromptSpec]
    multimask: bool
    encoding: MaskEncoding
    return_logits: bool
    fast: bool = True
    image: bytes = b""
    header: ImageHeader | None = None
    #: The API key asking: whose embedding cache a sent image is looked up in.
    owner: str = ""
    embedding: ImageEmbedding | None = None
    identity: str = ""
    #: The session's id, for the error when its model changed.
    image_id: str = ""


@dataclass(frozen=True)
class PromptedMask:
    data: bytes | Rle | list[Polygon]
    area: int
    bbox: tuple[int, int, int, int]
    score: float


@dataclass(frozen=True)
class PromptsOutcome:
    results: list[tuple[list[PromptedMask], bytes]]
    embedding_cache_hit: bool
    width: int
    height: int
    model: str
    processing_time_s: float
    #: Per prompt, the 1 x 256 x 256 logits of its best mask (what an image session keeps).
    previous: tuple[npt.NDArray[np.float32], ...] = ()


def _box(mask: npt.NDArray[np.bool_]) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0]), int(rows[-1] - rows[0]))


def _session_model(task: PromptTask, models: ModelManager) -> tuple[LoadedModel, ImageEmbedding]:
    loaded = models.get(task.model)
    if task.embedding is None or loaded.identity != task.identity:
        # The model's checkpoint or precision changed since the session was made: its
        # embedding no longer belongs to the model that would decode it.
        raise session_expired(task.image_id)
    return loaded, task.embedding


def run_prompts(
    task: PromptTask, models: ModelManager, cache: EmbeddingCache | None, cancel: CancelToken | None = None
) -> PromptsOutcome:
    """Embed the image (or reuse its stored embedding), predict every prompt, encode."""
    started = time.perf_counter()
    if task.header is not None:
        embedded = embed_image(task.image, task.header, task.model, models, cache, task.owner, cancel)
        loaded, embedding, hit = models.get(task.model), embedded.embedding, embedded.reused
    else:
        (loaded, embedding), hit = _session_model(task, models), True
    outputs = loaded.predict_prompts(embedding, task.prompts, task.multimask, fast=task.fast)
    results = []
    for output in outputs:
        masks = [
            PromptedMask(encode_pixels(m, task.encoding), int(m.sum()), _box(m), float(score))
            for m, score in zip(output.masks, output.scores, strict=True)
        ]
        logits = output.low_res_logits.astype("<f4").tobytes() if task.return_logits else b""
        results.append((masks, logits))
    height, width = embedding.original_size
    return PromptsOutcome(
        results=results,
        embedding_cache_hit=hit,
        width=int(width),
        height=int(height),
        model=task.model,
        processing_time_s=time.perf_counter() - started,
        previous=tuple(output.best_logits for output in outputs),
    )
