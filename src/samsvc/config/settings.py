"""The one typed settings object, in sections (one module each: process, models, limits, caching,
auth, storage, jobs, webhooks, gateway). Every field is an environment variable (upper case) and
a CLI flag (`--kebab-case`); flags win over the environment, which wins over the defaults.

Consumers never read the fields: each takes the typed options its section hands over
(`model_options()`, `job_options()`, `auth_options()`, `gateway_options()`, `s3_options()`,
...), so the engine, the jobs and the gateway neither import this package nor copy fields."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from samsvc.config.auth import AuthSettings
from samsvc.config.caching import CacheSettings
from samsvc.config.gateway import GatewaySettings
from samsvc.config.jobs import JobSettings
from samsvc.config.limits import LimitSettings
from samsvc.config.models import ModelSettings
from samsvc.config.process import ProcessSettings
from samsvc.config.storage import StorageSettings
from samsvc.config.webhooks import WebhookSettings
from samsvc.engine.options import ModelOptions
from samsvc.errors import ConfigurationError
from samsvc.gateway.options import GatewayOptions, ToolOptions
from samsvc.jobs.options import JobOptions, WebhookOptions, WorkerOptions
from samsvc.server.auth_options import AuthOptions
from samsvc.server.options import ServiceOptions

SecretName = Literal["admin_jwt_key", "label_studio_api_key", "webhook_secret"]


#: The sections in the order the configuration reference lists them.
SECTIONS: list[type[BaseSettings]] = [
    ProcessSettings,
    ModelSettings,
    LimitSettings,
    CacheSettings,
    AuthSettings,
    StorageSettings,
    JobSettings,
    WebhookSettings,
    GatewaySettings,
]


class Settings(
    GatewaySettings,
    WebhookSettings,
    JobSettings,
    StorageSettings,
    AuthSettings,
    CacheSettings,
    LimitSettings,
    ModelSettings,
    ProcessSettings,
):
    """Configuration of a samsvc process (the sections' fields, in the order above reversed)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    def secret(self, name: SecretName) -> str:
        """A secret's value: the content of its *_FILE when set (without the final newline),
        else its variable's. Secrets are SecretStr: never in a repr, a log line or an error."""
        file: Path | None = getattr(self, f"{name}_file")
        if file is None:
            value: SecretStr = getattr(self, name)
            return value.get_secret_value()
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigurationError(f"{name.upper()}_FILE {file} cannot be read: {exc.strerror}") from exc

    def model_options(self) -> ModelOptions:
        """The ModelManager's (samsvc.engine.loader)."""
        return ModelOptions(
            model_dir=self.model_dir,
            models_file=self.models_file,
            device=self.device,
            verify_checksums=self.verify_checksums,
            auto_download=self.auto_download,
            dtype=self.model_dtype,
            encoder=self.model_encoder,
            compile_models=self.torch_compile,
            encoder_batch_size=self.encoder_batch_size,
            encoder_batch_wait_s=self.encoder_batch_wait_ms / 1000,
            s3=self.s3_options(),
        )

    def webhook_options(self) -> WebhookOptions:
        """Webhook deliveries' (the secret read now: a missing file stops start-up)."""
        return WebhookOptions(
            secret=self.secret("webhook_secret"),
            allowed_hosts=tuple(self.webhook_allowed_hosts),
            max_retries=self.webhook_max_retries,
            min_backoff_ms=self.webhook_min_backoff_ms,
            timeout_s=self.webhook_timeout_s,
            threads=self.webhook_threads,
        )

    def job_options(self) -> JobOptions:
        """The job machinery's (samsvc.jobs.wiring and everything it builds)."""
        return JobOptions(
            redis_url=self.redis_url,
            data_dir=self.data_dir,
            s3=self.s3_options(),
            export_roots=self.export_roots(),
            image_limits=self.image_limits(),
            fast_engine=self.amg_engine == "fast",
            webhooks=self.webhook_options(),
            worker=WorkerOptions(
                threads=self.worker_threads,
                poll_ms=self.worker_poll_ms,
                queue_prefetch=self.queue_prefetch,
                heartbeat_timeout_ms=self.broker_heartbeat_timeout_ms,
                maintenance_chance=self.broker_maintenance_chance,
            ),
            retention_s=self.job_retention_s,
            max_retries=self.job_max_retries,
            min_backoff_ms=self.job_min_backoff_ms,
            max_backoff_ms=self.job_max_backoff_ms,
            time_limit_s=self.job_time_limit_s,
            lease_s=self.job_lease_s,
            store_retry_s=self.job_store_retry_s,
            reconcile_interval_s=self.reconcile_interval_s,
            reconcile_grace_s=self.reconcile_grace_s,
            cancel_poll_interval_s=self.cancel_poll_interval_s,
            single_job_results=self.single_job_results,
            max_queued_images_per_key=self.max_queued_images_per_key,
            failpoints=self.failpoints,
        )

    def auth_options(self) -> AuthOptions:
        """The authenticator's (samsvc.server.auth; the admin key read now)."""
        return AuthOptions(
            api_keys_file=self.api_keys_file,
            api_keys=tuple(self.api_keys),
            protect_health=self.auth_protect_health,
            allow_unauthenticated=self.allow_unauthenticated,
            admin_jwt_key=self.secret("admin_jwt_key"),
            admin_jwt_algorithms=tuple(self.admin_jwt_algorithms),
            admin_jwt_claim=self.admin_jwt_claim,
            admin_jwt_audience=self.admin_jwt_audience,
            admin_jwt_issuer=self.admin_jwt_issuer,
        )

    def service_options(self) -> ServiceOptions:
        """The gRPC servicers' (samsvc.server; Label Studio's token read now)."""
        return ServiceOptions(
            default_model=self.default_model,
            fast_engine=self.amg_engine == "fast",
            image_limits=self.image_limits(),
            max_batch_images=self.max_batch_images,
            max_batch_bytes=self.max_batch_bytes,
            max_prompts_per_image=self.max_prompts_per_image,
            prompts_per_slot=self.prompts_per_slot,
            max_streams_per_key=self.max_streams_per_key,
            max_inferences_per_key=self.max_inferences_per_key,
            allowed_hosts=tuple(self.webhook_allowed_hosts),
            export_roots=self.export_roots(),
            label_studio_url=self.label_studio_url,
            label_studio_token=self.secret("label_studio_api_key"),
            max_image_fetches=self.max_image_fetches,
        )

    def gateway_options(self) -> GatewayOptions:
        """Envoy's and its sidecar's (samsvc.gateway.launcher)."""
        return GatewayOptions(
            rest_host=self.rest_host,
            rest_port=self.rest_port,
            admin_port=self.envoy_admin_port,
            max_image_bytes=self.max_image_bytes,
            max_batch_bytes=self.max_batch_bytes,
            request_timeout_s=self.rest_timeout_s,
            headers_timeout_s=self.gateway_headers_timeout_s,
            receive_timeout_s=self.gateway_receive_timeout_s,
            idle_timeout_s=self.gateway_idle_timeout_s,
            max_connections=self.gateway_max_connections,
            max_heap_bytes=self.gateway_max_heap_bytes,
            cors_origins=tuple(self.cors_origins),
            sidecar_max_calls=self.gateway_adapter_max_calls,
            sidecar_max_calls_per_key=self.gateway_adapter_max_calls_per_key,
            tls_cert_file=self.tls_cert_file,
            tls_key_file=self.tls_key_file,
            tls_port=self.tls_port,
            tools=ToolOptions(
                label_studio_url=self.label_studio_url,
                max_image_bytes=self.max_image_bytes,
                prelabel_max_regions=self.label_studio_prelabel_max_regions,
                prelabel_points_per_side=self.label_studio_prelabel_points_per_side,
            ),
            envoy_binary=self.envoy_binary,
        )
