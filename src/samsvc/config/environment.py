"""Settings as a process receives them: from the environment with flags on top, handed on to
child processes, and the torch thread counts derived from them."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from samsvc.config.settings import Settings


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit values (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def settings_environment(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce `settings` in a child process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = ",".join(value) if isinstance(value, list) else str(value)
    return env


def worker_torch_threads(settings: Settings, cpus: int) -> int:
    """Torch threads for each thread of each worker process: processes x threads fit the CPUs."""
    return settings.torch_threads or max(1, cpus // (settings.worker_processes * settings.worker_threads))


def server_torch_threads(settings: Settings, cpus: int) -> int:
    """Torch threads of the server's inference lane 0 (samsvc.engine.threads.ComputeLanes)."""
    return settings.torch_threads or cpus
