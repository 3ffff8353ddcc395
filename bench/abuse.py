"""What one abusive caller costs: the attacks of the bounded-cost work, and those on the edges
added since (bench.abuse_edges: adapters, exports, model loads, caches, pages), against a running
`samsvc serve` (gateway included), loopback only, bounded in count and time.

    uv run python -m bench.abuse [--rounds 20]

A real `samsvc serve` on free ports with API keys, a tiny random-weight checkpoint, and short
gateway timeouts so that slow attacks end quickly. For each attack it prints how fast it was
refused (median and worst of `--rounds` tries, or of the attack's own count) and the memory of
the server process (resident) and of Envoy (its heap, from its admin interface) before and
after. Writes bench/results_abuse.json and the table on docs/operations/observability.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import socket
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psutil
from pydantic import SecretStr

from bench.abuse_edges import STUDIO_TOKEN, StudioFiles, edge_attacks, timed
from samsvc.config import Settings
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.server.auth import digest, new_key
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc as pb_grpc
from tests.support import ServeProcess, closed_by_peer, encode, free_port, raw_request, scene, wait_for

PAGE = Path(__file__).resolve().parent.parent / "docs/operations/observability.md"
KEY, LIMITED = new_key(), new_key()
LIMITS = {
    "max_inferences_per_key": 2,
    "max_queued_images_per_key": 20,
    "max_streams_per_key": 50,
    "gateway_headers_timeout_s": 2.0,
    "gateway_receive_timeout_s": 4.0,
    "gateway_idle_timeout_s": 4.0,
    "gateway_max_connections": 200,
}


class Target:
    def __init__(self, root: Path, studio: StudioFiles) -> None:
        checkpoint = root / "tiny.pth"
        sha = build_random_checkpoint(checkpoint, TINY_ARCHITECTURE)
        # `tampered`: the same file under a digest it does not have (a checkpoint failing its check).
        entries = models_file_entry("tiny", checkpoint, sha) + models_file_entry("tampered", checkpoint, "0" * 64)
        (root / "models.toml").write_text(entries, encoding="utf-8")
        self.rest_port, self.admin_port = free_port(), free_port()
        settings = Settings(
            grpc_port=0,
            model_dir=root,
            models_file=root / "models.toml",
            default_model="tiny",
            data_dir=root / "data",
            gateway=True,
            rest_port=self.rest_port,
            envoy_admin_port=self.admin_port,
            metrics_port=-1,
            log_level="WARNING",  # refusals are logged at WARNING: 31.7 counts the lines
            api_keys=[f"bench:{digest(KEY)}", f"limited:{digest(LIMITED)}:tiny"],
            webhook_allowed_hosts=[],
            label_studio_url=studio.url,
            label_studio_api_key=SecretStr(STUDIO_TOKEN),
            **LIMITS,
        )
        self.process = ServeProcess(settings)
        self.channel = grpc.insecure_channel(self.process.address)
        self.stub = pb_grpc.SegmentationServiceStub(self.channel)
        wait_for(lambda: raw_request(self.rest_port, "GET", "/health", {}).status == 200, timeout=120, what="envoy")
        self.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), points_per_side=1), metadata=auth(KEY))

    def memory(self) -> dict[str, float]:
        server = psutil.Process(self.process.process.pid).memory_info().rss
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/memory", timeout=10) as answer:
            heap = int(json.loads(answer.read())["allocated"])
        return {"server_rss_mib": server / 2**20, "envoy_heap_mib": heap / 2**20}

    def log_lines(self, containing: str) -> int:
        """Lines of the server's log that contain `containing`."""
        log = self.process.log
        log.flush()
        log.seek(0)
        return sum(containing in line for line in log.read().splitlines())

    def stop(self) -> None:
        self.channel.close()
        self.process.stop()


def auth(key: str) -> list[tuple[str, str]]:
    return [("x-api-key", key)]


def grpc_refusal(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return str(error.code().name)
    return "ACCEPTED"


def attacks(target: Target, rounds: int) -> dict[str, Callable[[], tuple[list[float], str]]]:
    port, stub = target.rest_port, target.stub
    image = encode(scene(256, 192))

    def heavy_work() -> tuple[list[float], str]:
        request = pb.SegmentRequest(image=image, points_per_side=128, crop_n_layers=3, crop_n_points_downscale_factor=1)
        took, code = timed(lambda: grpc_refusal(lambda: stub.Segment(request, metadata=auth(KEY), timeout=30)), rounds)
        return took, f"{code} (TOO_MANY_PROMPTS: 1.39 M prompts asked)"

    def unauthenticated_uploads() -> tuple[list[float], str]:
        took, answer = timed(
            lambda: raw_request(
                port, "POST", "/api/v1/segment/batch", {"Content-Type": "application/json"}, 64 << 20, pace=0.005
            ),
            rounds,
        )
        return took, f"HTTP {answer.status} after {answer.sent >> 10} KiB of 64 MiB"  # type: ignore[attr-defined]

    def oversized_image_body() -> tuple[list[float], str]:
        headers = {"Content-Type": "application/json", "x-api-key": KEY}
        took, answer = timed(
            lambda: raw_request(port, "POST", "/api/v1/segment", headers, 64 << 20, pace=0.002), rounds
        )
        return took, f"HTTP {answer.status} after {answer.sent >> 20} MiB of 64 MiB"  # type: ignore[attr-defined]

    def slow_headers() -> tuple[list[float], str]:
        def one() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST /api/v1/segment HTTP/1.1\r\nHost: x\r\n")
                return sock.recv(64)

        took, answer = timed(one, min(rounds, 5))
        return took, f"closed ({bytes(answer)[:12]!r}) after the headers timeout"  # type: ignore[arg-type]

    def stalled_body() -> tuple[list[float], str]:
        headers = {"x-api-key": KEY}
        took, answer = timed(
            lambda: raw_request(port, "POST", "/api/v1/segment/batch", headers, 8 << 20, send_at_most=64 << 10),
            min(rounds, 5),
        )
        return took, f"HTTP {answer.status} after the receive timeout"  # type: ignore[attr-defined]

    def connection_flood() -> tuple[list[float], str]:
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(240)]
        started = time.perf_counter()
        try:
            closed = wait_for(
                lambda: sum(closed_by_peer(s) for s in held) >= 40, timeout=10, what="refused connections"
            )
        finally:
            for sock in held:
                sock.close()
        return [time.perf_counter() - started], f"{240 - 200} connections over the limit closed: {bool(closed)}"

    def stream_flood() -> tuple[list[float], str]:
        slow = pb.SegmentOptions(points_per_side=24)
        job = stub.SubmitBatch(pb.SubmitBatchRequest(images=[image] * 2, options=slow), metadata=auth(KEY))
        watch = pb.WatchJobRequest(job_id=job.job_id)
        streams = [stub.WatchJob(watch, metadata=auth(KEY), timeout=300) for _ in range(50)]
        try:
            for stream in streams:
                next(stream)
            status = pb.GetJobStatusRequest(job_id=job.job_id)
            unary, _ = timed(lambda: stub.GetJobStatus(status, metadata=auth(KEY)), 20)
            took, code = timed(lambda: grpc_refusal(lambda: next(stub.WatchJob(watch, metadata=auth(KEY)))), rounds)
            return took, f"{code}; GetJobStatus median {statistics.median(unary) * 1000:.1f} ms with 50 streams open"
        finally:
            for stream in streams:
                stream.cancel()
            stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=auth(KEY))

    def inference_flood() -> tuple[list[float], str]:
        slow = pb.SegmentRequest(image=image, points_per_side=16, points_per_batch=1)
        running = [stub.Segment.future(slow, metadata=auth(KEY)) for _ in range(2)]
        try:
            from samsvc.v1 import health_pb2

            def both_running() -> bool:
                load = stub.CheckHealth(health_pb2.CheckHealthRequest(), metadata=auth(KEY)).inference
                return load.running + load.waiting == 2

            wait_for(both_running, timeout=30, what="two inferences of the key")
            took, code = timed(lambda: grpc_refusal(lambda: stub.Segment(slow, metadata=auth(KEY), timeout=30)), rounds)
            return took, f"{code} (KEY_INFERENCE_LIMIT) with 2 running"
        finally:
            for call in running:
                call.cancel()

    def queued_images_flood() -> tuple[list[float], str]:
        batch = pb.SubmitBatchRequest(images=[image] * 20, options=pb.SegmentOptions(points_per_side=24))
        first = stub.SubmitBatch(batch, metadata=auth(KEY))
        try:
            took, code = timed(lambda: grpc_refusal(lambda: stub.SubmitBatch(batch, metadata=auth(KEY))), rounds)
            return took, f"{code} (QUEUED_IMAGES_LIMIT) with 20 queued"
        finally:
            stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id), metadata=auth(KEY))

    def disallowed_model() -> tuple[list[float], str]:
        request = pb.SegmentRequest(image=image, model_type="vit_h")
        took, code = timed(lambda: grpc_refusal(lambda: stub.Segment(request, metadata=auth(LIMITED))), rounds)
        return took, f"{code} (MODEL_NOT_ALLOWED), nothing loaded"

    def webhook_to_loopback() -> tuple[list[float], str]:
        request = pb.SubmitBatchRequest(images=[image], webhook_url="http://[2002:7f00:1::1]:9464/metrics")
        took, code = timed(lambda: grpc_refusal(lambda: stub.SubmitBatch(request, metadata=auth(KEY))), rounds)
        return took, f"{code} (6to4 carrying 127.0.0.1)"

    return {
        "1. 1.4 M prompts in one request": heavy_work,
        "2. unauthenticated 64 MiB uploads": unauthenticated_uploads,
        "2. 64 MiB body on a one-image route": oversized_image_body,
        "2. headers never finished": slow_headers,
        "2. body stalled after 64 KiB": stalled_body,
        "2. 240 connections (limit 200)": connection_flood,
        "3. streams past MAX_STREAMS_PER_KEY": stream_flood,
        "6. inferences past MAX_INFERENCES_PER_KEY": inference_flood,
        "6. batch images past MAX_QUEUED_IMAGES_PER_KEY": queued_images_flood,
        "6. a model the key may not use": disallowed_model,
        "7. webhook to loopback through 6to4": webhook_to_loopback,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    studio = StudioFiles()
    with tempfile.TemporaryDirectory() as tmp:
        target = Target(Path(tmp), studio)
        try:
            everything = {**attacks(target, args.rounds), **edge_attacks(target, args.rounds, KEY, LIMITED, studio)}
            for name, attack in everything.items():
                before = target.memory()
                took, outcome = attack()
                after = target.memory()
                rows.append(
                    {
                        "attack": name,
                        "outcome": outcome,
                        "refusal_median_s": statistics.median(took),
                        "refusal_max_s": max(took),
                        "before": before,
                        "after": after,
                    }
                )
                print(f"{name}: {outcome}; {statistics.median(took) * 1000:.1f} ms median", flush=True)
        finally:
            target.stop()
            studio.close()
    results = {"machine": f"{psutil.cpu_count()} CPUs ({platform.machine()})", "limits": LIMITS, "rows": rows}
    (Path(__file__).with_name("results_abuse.json")).write_text(json.dumps(results, indent=2) + "\n")
    table = [
        f"Measured by `uv run python -m bench.abuse` on {results['machine']}; numbers 1-7 refer to the bounded-cost "
        "points, 31.N to the hardening of the edges (gateway timeouts shortened so slow attacks end in seconds).",
        "",
        "| attack | outcome | refused in (median / worst) | server RSS before -> after | Envoy heap before -> after |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        table.append(
            f"| {row['attack']} | {row['outcome']} | {row['refusal_median_s'] * 1000:.1f} ms / "
            f"{row['refusal_max_s'] * 1000:.1f} ms | {row['before']['server_rss_mib']:.0f} -> "
            f"{row['after']['server_rss_mib']:.0f} MiB | {row['before']['envoy_heap_mib']:.1f} -> "
            f"{row['after']['envoy_heap_mib']:.1f} MiB |"
        )
    text = PAGE.read_text()
    block = "<!-- abuse:start -->\n" + "\n".join(table) + "\n<!-- abuse:end -->"
    PAGE.write_text(re.sub(r"<!-- abuse:start -->.*?<!-- abuse:end -->", lambda _: block, text, flags=re.DOTALL))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
