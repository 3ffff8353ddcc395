"""The settings in sections: every field in exactly one section module, the environment names
unchanged, each consumer handed typed options built from its section (the secrets read, never
shown), and no room but the process entry points reading the settings object itself."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from samsvc.config import Settings
from samsvc.config.settings import SECTIONS

SRC = Path(__file__).resolve().parents[1] / "src" / "samsvc"
#: The modules that read the settings object: the process entry points and the server's wiring.
READERS = {
    "cli.py",
    "server/app.py",
    "server/backends.py",
    "jobs/worker/main.py",
    "jobs/worker/metrics.py",
}


def test_every_field_belongs_to_exactly_one_section() -> None:
    owners: dict[str, list[str]] = {}
    for section in SECTIONS:
        for name in section.model_fields:
            owners.setdefault(name, []).append(section.__name__)
    assert set(owners) == set(Settings.model_fields), "Settings is its sections' fields, nothing else"
    shared = {name: where for name, where in owners.items() if len(where) > 1}
    assert not shared, f"fields declared in more than one section: {shared}"


def test_environment_names_are_the_fields_upper_cased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_MAX_RETRIES", "7")
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "hooks.internal, 10.0.0.0/8")
    monkeypatch.setenv("MAX_IMAGE_SIDE", "2048")
    monkeypatch.setenv("ENCODER_BATCH_WAIT_MS", "25")
    settings = Settings()
    jobs = settings.job_options()
    assert jobs.max_retries == 7 and jobs.webhooks.allowed_hosts == ("hooks.internal", "10.0.0.0/8")
    assert jobs.image_limits.max_side == 2048 == settings.service_options().image_limits.max_side
    assert settings.model_options().encoder_batch_wait_s == pytest.approx(0.025)


def test_every_list_setting_splits_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each section's comma-separated variables are split (a validator of the same name in two
    sections once left all but one section's lists as refused strings)."""
    lists = [name for name, field in Settings.model_fields.items() if "list" in str(field.annotation)]
    assert len(lists) == 7, lists
    for name in lists:
        monkeypatch.setenv(name.upper(), "a, b")
    settings = Settings()
    for name in lists:
        assert [str(value) for value in getattr(settings, name)] == ["a", "b"], name


def test_each_consumer_gets_its_sections_values(tmp_path: Path) -> None:
    settings = Settings(
        model_dir=tmp_path,
        device="cpu",
        torch_compile=True,
        amg_engine="reference",
        redis_url="redis://127.0.0.1:1/0",
        worker_threads=3,
        webhook_min_backoff_ms=500,
        rest_port=0,
        max_batch_bytes=5_000_000,
        label_studio_url="http://studio.internal:8080",
        api_keys=["alice:" + "0" * 64],
        auth_protect_health=True,
    )
    models = settings.model_options()
    assert (models.model_dir, models.device, models.compile_models) == (tmp_path, "cpu", True)
    jobs = settings.job_options()
    assert not jobs.in_process and not jobs.fast_engine and jobs.worker.threads == 3
    assert jobs.webhooks.max_backoff_ms == 500 * 64
    gateway = settings.gateway_options()
    assert (gateway.rest_port, gateway.max_batch_bytes) == (0, 5_000_000)
    assert gateway.tools.label_studio_url == "http://studio.internal:8080"
    auth = settings.auth_options()
    assert auth.api_keys == ("alice:" + "0" * 64,) and auth.protect_health
    assert not settings.service_options().fast_engine


def test_options_carry_secrets_without_showing_them(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("hook-secret-from-file\n", encoding="utf-8")
    settings = Settings(
        webhook_secret_file=tmp_path / "hook",
        admin_jwt_key="admin-secret-0123456789-abcdefghijklmnop",
        label_studio_api_key="studio-token-xyz",
    )
    options = [settings.job_options(), settings.auth_options(), settings.service_options()]
    assert settings.job_options().webhooks.secret == "hook-secret-from-file"
    assert settings.auth_options().admin_jwt_key.startswith("admin-secret")
    assert settings.service_options().label_studio_token == "studio-token-xyz"
    for shown in map(repr, options):
        for secret in ("hook-secret-from-file", "admin-secret", "studio-token-xyz"):
            assert secret not in shown
    assert all(dataclasses.is_dataclass(option) for option in options)


def _imports_settings(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("samsvc.config")
        and {alias.name for alias in node.names} & {"Settings", "load_settings"}
        for node in ast.walk(tree)
    )


def test_only_the_entry_points_read_the_settings_object() -> None:
    readers = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "config" not in path.relative_to(SRC).parts and _imports_settings(path)
    }
    assert readers == READERS, "take the section's options (samsvc.config.settings) instead of Settings"
