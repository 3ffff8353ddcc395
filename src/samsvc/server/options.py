"""What the gRPC servicers read from the settings (limits, defaults, allow-lists, Label Studio's
address and token), handed over by samsvc.config.settings.Settings.service_options()."""

from __future__ import annotations

from dataclasses import dataclass, field

from samsvc.validation.export import ExportRoots
from samsvc.validation.image import ImageLimits


@dataclass(frozen=True)
class ServiceOptions:
    """The servicers' view of the settings."""

    default_model: str
    #: samsvc's mask generator (True) or segment-anything's own.
    fast_engine: bool
    image_limits: ImageLimits
    max_batch_images: int
    max_batch_bytes: int
    max_prompts_per_image: int
    prompts_per_slot: int
    max_streams_per_key: int
    max_inferences_per_key: int
    #: Hosts webhooks and image addresses may reach although not public.
    allowed_hosts: tuple[str, ...]
    export_roots: ExportRoots
    label_studio_url: str = ""
    label_studio_token: str = field(default="", repr=False)
    max_image_fetches: int = 16
