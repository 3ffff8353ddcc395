"""What one request, one key and one process may ask for: sizes, prompts, slots, queues, rates.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from samsvc.validation.image import ImageLimits

#: 10 MiB: the design document's per-image limit.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: Longest image side accepted, read from the header before decoding.
DEFAULT_MAX_IMAGE_SIDE = 4096
#: 100 MiB: a batch request carries many images in one message.
DEFAULT_MAX_BATCH_BYTES = 100 * 1024 * 1024
#: The design document's batch size.
DEFAULT_MAX_BATCH_IMAGES = 50
#: Room for the protobuf fields around the image in one gRPC message.
MESSAGE_OVERHEAD_BYTES = 1024 * 1024


class LimitSettings(BaseSettings):
    """What one request, one key and one process may ask for: sizes, prompts, slots, queues, rates."""

    max_image_bytes: int = Field(DEFAULT_MAX_IMAGE_BYTES, ge=1, description="Largest image accepted, in bytes.")
    max_image_side: int = Field(DEFAULT_MAX_IMAGE_SIDE, ge=1, description="Longest image side accepted, in pixels.")
    max_batch_images: int = Field(DEFAULT_MAX_BATCH_IMAGES, ge=1, le=10_000, description="Most images in one batch.")
    max_batch_bytes: int = Field(
        DEFAULT_MAX_BATCH_BYTES, ge=1, description="Largest batch request in bytes (all images together)."
    )
    max_workers: int = Field(
        2,
        ge=1,
        le=256,
        description=(
            "Inference slots per process; a request takes one per PROMPTS_PER_SLOT prompts (at most all). Each slot "
            "is a thread (lane) of the inference pool, plus one per WORKER_THREADS in the in-process mode: a call "
            "runs on the lowest idle lane, lane 0 with TORCH_THREADS torch threads and the others single-threaded, "
            "so torch's thread teams never outnumber the CPUs."
        ),
    )
    max_prompts_per_image: int = Field(
        16_384,
        ge=1,
        description="Most point prompts one image may ask for (points_per_side squared over all crop layers).",
    )
    prompts_per_slot: int = Field(
        4_096, ge=1, description="Prompts one inference slot covers; heavier requests take more slots (at most all)."
    )
    max_queue: int = Field(16, ge=0, le=10_000, description="Requests allowed to wait for an inference slot.")
    max_inferences_per_key: int = Field(
        4,
        ge=0,
        description="Segment/SegmentPrompts calls one API key may have running or waiting per server; 0: no limit.",
    )
    max_queued_images_per_key: int = Field(
        1_000, ge=0, description="Batch images one API key may have waiting or running at once; 0: no limit."
    )
    max_streams_per_key: int = Field(
        32, ge=1, le=100_000, description="Job streams (WatchJob, SegmentBatch) one API key may hold open per server."
    )
    rate_limit_requests_per_minute: int = Field(
        0, ge=0, description="Calls each API key may make per minute (Redis-shared when REDIS_URL); 0: no limit."
    )
    rate_limit_images_per_minute: int = Field(
        0, ge=0, description="Images each API key may send per minute (Segment: 1, batch: each); 0: no limit."
    )

    def image_limits(self) -> ImageLimits:
        """What one image may be (bytes, longest side), checked before it is decoded."""
        return ImageLimits(self.max_image_bytes, self.max_image_side)

    @property
    def max_message_bytes(self) -> int:
        """gRPC receive limit: the largest allowed request (one image or a batch) plus its envelope."""
        return max(self.max_image_bytes, self.max_batch_bytes) + MESSAGE_OVERHEAD_BYTES
