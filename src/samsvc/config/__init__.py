"""The one typed settings object (samsvc.config.settings.Settings), in sections (process, models,
limits, caching, auth, storage, jobs, webhooks, gateway: a module each, each handing its consumer
typed options), how a process loads it and hands it on (samsvc.config.environment), and the
client commands' own settings and flags (samsvc.config.client). Every field is an environment
variable (upper case) and a CLI flag (`--kebab-case`); flags win over the environment, which
wins over the defaults."""

from samsvc.config.client import ClientSettings, add_settings_flags
from samsvc.config.environment import (
    load_settings,
    server_torch_threads,
    settings_environment,
    worker_torch_threads,
)
from samsvc.config.limits import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_IMAGES,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_SIDE,
    MESSAGE_OVERHEAD_BYTES,
)
from samsvc.config.settings import Settings

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_IMAGES",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_IMAGE_SIDE",
    "MESSAGE_OVERHEAD_BYTES",
    "ClientSettings",
    "Settings",
    "add_settings_flags",
    "load_settings",
    "server_torch_threads",
    "settings_environment",
    "worker_torch_threads",
]
