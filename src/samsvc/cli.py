"""The `samsvc` command: serve, run workers or the gateway, manage models and keys, and (as a
client of a running server) segment images and folders and manage jobs.

Every setting (samsvc.config.Settings) is a flag of every command (`--grpc-port 50051`) and an
environment variable (`GRPC_PORT=50051`); the flag wins.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from samsvc import __version__
from samsvc.config import Settings, add_settings_flags, load_settings
from samsvc.errors import SamsvcError

log = logging.getLogger("samsvc")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, Settings, "settings (each also an environment variable)")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in Settings.model_fields}
    return load_settings(**overrides)


def _configure_logging(settings: Settings) -> None:
    from samsvc.infra.logs import configure

    configure(settings.log_level, settings.log_format)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from samsvc.server.app import serve

    if not settings.gateway:
        asyncio.run(serve(settings))
        return 0
    from samsvc.gateway.launcher import Gateway, banner, start_gateway

    def gateway(running: Any) -> Gateway:
        return start_gateway(settings.gateway_options(), "127.0.0.1", running.port)

    def announce(running: Any, started: Gateway | None) -> str:
        return banner(settings.grpc_host, running.port, settings.rest_host, started)

    asyncio.run(serve(settings, gateway, announce))  # type: ignore[arg-type]
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    """Envoy (and the adapter) alone, in front of the gRPC server at GRPC_TARGET."""
    import signal
    import threading

    from samsvc.gateway.launcher import banner, start_gateway

    host, _, port = settings.grpc_target.rpartition(":")
    gateway = start_gateway(settings.gateway_options(), host or "127.0.0.1", int(port))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(banner(settings.grpc_host, int(port), settings.rest_host, gateway).split("\n", 1)[1], flush=True)
    print(f"samsvc: forwarding to gRPC at {settings.grpc_target}", flush=True)
    stop.wait()
    gateway.stop()
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Dramatiq's worker CLI over the image queues and another over the webhook queue, each
    started again whenever its processes die."""
    import os

    from samsvc.config import settings_environment
    from samsvc.jobs.queues import IMAGE_QUEUES, WEBHOOK_QUEUE
    from samsvc.jobs.worker.metrics import MULTIPROC_ENV, prepare_directory
    from samsvc.jobs.worker.supervisor import WORKER_ROLE_ENV, Child, supervise

    if not settings.redis_url:
        print("error: samsvc worker needs REDIS_URL (without it, `samsvc serve` runs jobs in-process)", file=sys.stderr)
        return 2
    base = {**os.environ, **settings_environment(settings)}
    # Dramatiq reads these from the environment when its worker module is imported.
    base["dramatiq_queue_prefetch"] = str(settings.queue_prefetch)
    base["dramatiq_worker_timeout"] = str(settings.worker_poll_ms)
    images = [
        sys.executable, "-m", "dramatiq", "samsvc.jobs.worker.main",
        "--processes", str(settings.worker_processes),
        "--threads", str(settings.worker_threads),
        "--queues", *IMAGE_QUEUES.values(),
    ]  # fmt: skip
    if settings.worker_metrics_port >= 0:
        images += ["--fork-function", "samsvc.jobs.worker.metrics:serve"]
    webhooks = [
        sys.executable, "-m", "dramatiq", "samsvc.jobs.worker.main",
        "--processes", "1", "--threads", str(settings.webhook_threads), "--queues", WEBHOOK_QUEUE,
    ]  # fmt: skip

    def image_environment() -> tuple[dict[str, str], Path | None]:
        if settings.worker_metrics_port < 0:
            return base, None
        # Every process writes samples into one fresh directory; a fork process serves their sum.
        scratch = prepare_directory()
        return {**base, MULTIPROC_ENV: str(scratch)}, scratch

    def webhook_environment() -> tuple[dict[str, str], Path | None]:
        return {**base, WORKER_ROLE_ENV: "webhooks"}, None

    return supervise([Child("image", images, image_environment), Child("webhook", webhooks, webhook_environment)])


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from samsvc.server.auth import check_key_name, digest, new_key

    check_key_name(args.name)
    key = new_key()
    entry = f"{args.name}:{digest(key)}"
    if args.models:
        entry += ":" + "+".join(m.strip() for m in args.models.split(",") if m.strip())
    print(f"API key for {args.name} (shown once; keep it secret): {key}")
    if args.file:
        path = Path(args.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as keys_file:
            keys_file.write(entry + "\n")
        print(f"its digest was added to {path} (point API_KEYS_FILE at it):")
    else:
        print("add this line to API_KEYS_FILE (or API_KEYS):")
    print(entry)
    return 0


def cmd_models_list(settings: Settings, args: argparse.Namespace) -> int:
    from samsvc.engine.registry import ModelRegistry

    registry = ModelRegistry.load(settings.model_dir, settings.models_file)
    print(f"{'NAME':<24} {'SOURCE':<11} {'FAMILY':<6} {'WEIGHTS':<8} {'SIZE':>9}  CHECKPOINT")
    for spec in registry:
        size = f"{spec.size_bytes / 1e6:.0f} MB" if spec.size_bytes else "-"
        weights = "present" if spec.weights_present else "absent"
        print(f"{spec.name:<24} {spec.source.value:<11} {spec.family:<6} {weights:<8} {size:>9}  {spec.path}")
    return 0


def cmd_models_download(settings: Settings, args: argparse.Namespace) -> int:
    from samsvc.engine.download import download_model, sha256_of
    from samsvc.engine.registry import ModelRegistry

    registry = ModelRegistry.load(settings.model_dir, settings.models_file)
    spec = registry.get(args.name)
    if spec is None:
        print(f"error: unknown model {args.name!r}; known: {', '.join(registry.names())}", file=sys.stderr)
        return 2
    if spec.weights_present and not args.force:
        print(f"{spec.name}: already present at {spec.path} (use --force to download again)")
        return 0
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=spec.name, disable=args.quiet) as bar:

        def progress(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        path = download_model(spec, progress=progress, s3=settings.s3_options())
    if spec.sha256:
        print(f"{spec.name}: saved to {path} (sha256 verified)")
    else:
        # Nothing to check it against: say what arrived, so it can be pinned in MODELS_FILE.
        print(f"{spec.name}: saved to {path} (sha256 {sha256_of(path)}, not checked: none is recorded)")
    return 0


def cmd_models_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Check the checkpoints present (or those named) against their recorded size and SHA-256;
    exit 1 naming each one that fails."""
    from samsvc.engine.checkpoint_reader import size_mismatch
    from samsvc.engine.download import sha256_of
    from samsvc.engine.registry import ModelRegistry

    registry = ModelRegistry.load(settings.model_dir, settings.models_file)
    names = args.names or [spec.name for spec in registry if spec.weights_present]
    if not names:
        print(f"no checkpoints in {settings.model_dir} or MODELS_FILE to verify")
        return 0
    failed: list[str] = []
    for name in names:
        spec = registry.get(name)
        if spec is None:
            print(f"{name}: not a registered model; known: {', '.join(registry.names())}", file=sys.stderr)
            failed.append(name)
            continue
        if not spec.weights_present:
            print(f"{name}: ABSENT {spec.path}")
            failed.append(str(spec.path))
            continue
        mismatch = size_mismatch(spec)
        if mismatch is not None:
            print(f"{name}: BAD {mismatch.detail} (another release, or a truncated download)")
            failed.append(str(spec.path))
            continue
        size = spec.path.stat().st_size
        with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=args.quiet) as bar:
            digest = sha256_of(spec.path, progress=bar.update)
        if spec.sha256 is None:
            print(f"{name}: no digest recorded; sha256 {digest} ({spec.path}, {size} bytes)")
        elif digest != spec.sha256:
            print(f"{name}: BAD {spec.path} has sha256 {digest}, expected {spec.sha256}")
            failed.append(str(spec.path))
        else:
            print(f"{name}: OK {spec.path} ({size} bytes, sha256 verified)")
    if failed:
        print(f"error: {len(failed)} checkpoint(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_models_build_tiny(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from samsvc.engine.checkpoints import build_random_checkpoint, models_file_entry
    from samsvc.engine.sam.disc_checkpoint import build_disc_checkpoint

    path = Path(args.path).absolute()
    if args.discs:
        digest = build_disc_checkpoint(path)
        print(f"# a tiny SAM weighted by hand to answer every click with discs around it: {path}")
    else:
        digest = build_random_checkpoint(path, seed=args.seed)
        print(f"# a randomly initialised tiny SAM (for trying the service, not for real masks): {path}")
    if args.register_in:
        # Relative to the models file, so the pair can move together (into a container's /models).
        models_file = Path(args.register_in).absolute()
        models_file.parent.mkdir(parents=True, exist_ok=True)
        entry = models_file_entry(args.name, Path(os.path.relpath(path, models_file.parent)), digest)
        with models_file.open("a", encoding="utf-8") as handle:
            handle.write(entry)
        print(f"# registered as {args.name!r} in {models_file}")
        return 0
    print("# add this to your MODELS_FILE:")
    print(models_file_entry(args.name, path, digest))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samsvc", description="Segment Anything as a service.")
    parser.add_argument("--version", action="version", version=f"samsvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gRPC server and, unless --no-gateway, Envoy for REST/JSON (in-process mode without REDIS_URL)",
    )
    _add_settings_flags(serve)
    serve.set_defaults(handler=cmd_serve)

    gateway = commands.add_parser("gateway", help="run Envoy alone in front of a gRPC server at GRPC_TARGET")
    _add_settings_flags(gateway)
    gateway.set_defaults(handler=cmd_gateway)

    worker = commands.add_parser("worker", help="run Dramatiq worker processes for batch jobs (needs REDIS_URL)")
    _add_settings_flags(worker)
    worker.set_defaults(handler=cmd_worker)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="make a new API key; prints it once with the line to store")
    create.add_argument("name", help="who the key is for")
    create.add_argument("--file", help="append the key's digest line to this API_KEYS_FILE (created if absent)")
    create.add_argument("--models", help="the only models the key may use, comma separated (default: all)")
    _add_settings_flags(create)
    create.set_defaults(handler=cmd_keys_create)

    from samsvc.client.commands import register

    register(commands)

    models = commands.add_parser("models", help="list, download or build model checkpoints")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser("list", help="registered models and whether their weights are here")
    _add_settings_flags(listing)
    listing.set_defaults(handler=cmd_models_list)
    download = model_commands.add_parser("download", help="download a model's weights into MODEL_DIR, verified")
    download.add_argument("name", help="model name, e.g. vit_b")
    download.add_argument("--force", action="store_true", help="download even if the file is present")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_settings_flags(download)
    download.set_defaults(handler=cmd_models_download)
    verify = model_commands.add_parser(
        "verify", help="check the checkpoints present against their recorded size and sha256 (exit 1 if any fails)"
    )
    verify.add_argument("names", nargs="*", help="models to check (default: every one whose checkpoint is here)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_settings_flags(verify)
    verify.set_defaults(handler=cmd_models_verify)
    tiny = model_commands.add_parser(
        "build-tiny", help="write a small random-weight SAM checkpoint and print its MODELS_FILE entry"
    )
    tiny.add_argument("path", help="where to write the checkpoint (.pth)")
    tiny.add_argument("--name", default="tiny", help="model name for the MODELS_FILE entry")
    tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    tiny.add_argument(
        "--discs",
        action="store_true",
        help="hand-set weights instead: every click gives sharp discs around itself (masks that pass the default "
        "thresholds, hundreds per image; they ignore the image)",
    )
    tiny.add_argument(
        "--register-in", metavar="MODELS_FILE", help="append the entry to this models file (path relative to it)"
    )
    _add_settings_flags(tiny)
    tiny.set_defaults(handler=cmd_models_build_tiny)
    return parser


def _bad_settings(exc: ValidationError) -> int:
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        print(f"error: setting {where}: {error['msg']}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client_handler = getattr(args, "client_handler", None)
    if client_handler is not None:
        # Client commands talk to a server: they read ClientSettings (SAMSVC_*), not the server's.
        try:
            code: int = client_handler(args)
        except KeyboardInterrupt:
            return 130
        except ValidationError as exc:
            return _bad_settings(exc)
        return code
    try:
        settings = _settings(args)
    except ValidationError as exc:
        return _bad_settings(exc)
    _configure_logging(settings)
    try:
        code = args.handler(settings, args)
    except SamsvcError as exc:
        print(f"error: {exc.for_log()}", file=sys.stderr)  # the operator's terminal: the detail too
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
