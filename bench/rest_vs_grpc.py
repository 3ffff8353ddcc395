"""One Segment over REST/JSON through Envoy against the same call over native gRPC, side by
side in one run (same server, image and parameters; alternating). The result and embedding
caches are off, and every answer is checked not to be a cache hit: each call runs the model.

    uv run python -m bench.rest_vs_grpc [--rounds 7] [--size 512x384] [--points-per-side 4]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from samsvc.config import Settings
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.gateway.launcher import start_gateway
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", default="512x384")
    parser.add_argument("--points-per-side", type=int, default=4)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    image = encode(scene(width, height, seed=1), "JPEG", quality=92)
    params = {"points_per_side": args.points_per_side, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        digest = build_random_checkpoint(root / "tiny.pth", TINY_ARCHITECTURE)
        (root / "models.toml").write_text(models_file_entry("tiny", root / "tiny.pth", digest), encoding="utf-8")
        settings = Settings(
            grpc_port=0, rest_port=0, envoy_admin_port=0, model_dir=root, models_file=root / "models.toml",
            default_model="tiny", data_dir=str(root / "data"), max_workers=1,
            result_cache_ttl_s=0, result_cache_bytes=0, embedding_cache_bytes=0,
        )  # fmt: skip
        server = ServerThread(settings)
        gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
        url = f"http://127.0.0.1:{gateway.rest_port}/api/v1/segment"
        body = json.dumps({"image": base64.b64encode(image).decode(), **params}).encode()

        def rest() -> int:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=600) as response:
                answer = json.loads(response.read())
            assert answer.get("cache_hit") is False, "a REST answer came from the result cache"
            return len(answer["masks"])

        def grpc_call() -> int:
            answer = server.stub.Segment(pb.SegmentRequest(image=image, **params))
            assert not answer.cache_hit, "a gRPC answer came from the result cache"
            return len(answer.masks)

        assert rest() == grpc_call()  # warm both paths, load the model
        rest_s, grpc_s = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            grpc_call()
            grpc_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            rest()
            rest_s.append(time.perf_counter() - started)
        gateway.stop()
        server.stop()
    result = {
        "image": args.size,
        "params": params,
        "grpc_median_s": statistics.median(grpc_s),
        "rest_median_s": statistics.median(rest_s),
        "ratio_rest_over_grpc": statistics.median(rest_s) / statistics.median(grpc_s),
    }
    print(json.dumps(result, indent=2))
    print(f"REST/gRPC latency ratio for one Segment: {result['ratio_rest_over_grpc']:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
