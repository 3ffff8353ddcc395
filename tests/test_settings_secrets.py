"""Secrets in the settings: never in a repr or a log line, readable from files (compose and
Kubernetes secrets), and handed on intact to the processes samsvc starts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from samsvc.config import Settings, settings_environment
from samsvc.errors import ConfigurationError

SECRETS = {
    "admin_jwt_key": "admin-secret-0123456789-abcdefghijklmnop",
    "label_studio_api_key": "studio-token-xyz",
    "webhook_secret": "webhook-signing-key",
}


def test_secrets_stay_out_of_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(**SECRETS, redis_url="redis://:redis-password@cache:6379/0")
    logging.getLogger("samsvc.test").warning("settings: %s / %r", settings, settings)
    for shown in (repr(settings), str(settings), caplog.text):
        for value in (*SECRETS.values(), "redis-password"):
            assert value not in shown
    # A child process (`samsvc worker`, the metrics process) still gets them.
    env = settings_environment(settings)
    assert env["WEBHOOK_SECRET"] == SECRETS["webhook_secret"] and "redis-password" in env["REDIS_URL"]
    assert all(settings.secret(name) == value for name, value in SECRETS.items())  # type: ignore[arg-type]


def test_secret_files_win_and_a_missing_one_is_named(tmp_path: Path) -> None:
    files = {}
    for name in SECRETS:
        files[f"{name}_file"] = tmp_path / name
        files[f"{name}_file"].write_text(f"from-file-{name}\n", encoding="utf-8")
    settings = Settings(**SECRETS, **files)
    assert [settings.secret(name) for name in SECRETS] == [f"from-file-{name}" for name in SECRETS]  # type: ignore[arg-type]
    missing = Settings(label_studio_api_key_file=tmp_path / "absent")
    with pytest.raises(ConfigurationError) as caught:
        missing.secret("label_studio_api_key")
    assert "LABEL_STUDIO_API_KEY_FILE" in caught.value.message
