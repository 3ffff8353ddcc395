"""`python -m samsvc.healthcheck [ADDRESS]`: exit 0 when the gRPC server at ADDRESS (default
127.0.0.1:$GRPC_PORT) reports SERVING on grpc.health.v1, 1 otherwise. For container health
checks and Kubernetes exec probes."""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    address = args[0] if args else f"127.0.0.1:{os.environ.get('GRPC_PORT', '50051')}"
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else "NOT_SERVING")
    return 0 if serving else 1


if __name__ == "__main__":
    raise SystemExit(main())
