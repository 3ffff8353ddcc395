"""Generate everything in generated/ from protos/ with one command.

    uv run python scripts/generate.py            # rewrite generated/
    uv run python scripts/generate.py --check    # exit 1 when generated/ or the sync client is stale

Makes Python messages, gRPC stubs, .pyi stubs (mypy-protobuf) and a descriptor set with
its imports and source comments (generated/samsvc/v1/descriptor_set.pb) for Envoy's gRPC-JSON transcoder and
the API docs. google/rpc/status.proto and error_details.proto go into the descriptor set
so that error details survive transcoding. Then writes the blocking client from the asyncio
one (scripts/unasync.py).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GENERATED = ROOT / "generated"
#: Inside the package, so installs carry it (importlib.resources: samsvc.v1/descriptor_set.pb).
DESCRIPTOR_SET = "samsvc/v1/descriptor_set.pb"
# Imported by nothing of ours but needed in the descriptor set: Envoy renders
# google.rpc.Status details (BadRequest, ErrorInfo, ...) only for types it knows.
OPENAPI = "samsvc/v1/openapi.json"
OPENAPI_SERVICES = ("samsvc.v1.SegmentationService", "samsvc.v1.AdminService")
EXTRA_DESCRIPTOR_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def _googleapis_include() -> Path:
    import google.api.annotations_pb2 as annotations

    # .../site-packages/google/api/annotations_pb2.py -> .../site-packages
    return Path(annotations.__file__).resolve().parent.parent.parent


def _grpc_tools_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def _plugin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: run `uv sync` first")
    return found


def generate(out: Path) -> None:
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    includes = [f"-I{PROTO_ROOT}", f"-I{_googleapis_include()}", f"-I{_grpc_tools_include()}"]
    out.mkdir(parents=True, exist_ok=True)
    run = [sys.executable, "-m", "grpc_tools.protoc", *includes]
    subprocess.run(
        [
            *run,
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *protos,
        ],
        check=True,
    )
    subprocess.run(
        [
            *run,
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out / DESCRIPTOR_SET}",
            *protos,
            *EXTRA_DESCRIPTOR_PROTOS,
        ],
        check=True,
    )
    for package in {p.parent for p in out.rglob("*_pb2.py")}:
        (package / "__init__.py").touch()
    write_openapi(out)


def write_openapi(out: Path) -> None:
    """generated/samsvc/v1/openapi.json from the descriptor set (served at /openapi.json)."""
    sys.path.insert(0, str(ROOT / "src"))
    from samsvc.gateway.openapi import build_openapi

    document = build_openapi((out / DESCRIPTOR_SET).read_bytes(), list(OPENAPI_SERVICES))
    (out / OPENAPI).write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def _differences(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"only in {left}: {n}" for n in cmp.left_only]
    found += [f"only in {right}: {n}" for n in cmp.right_only]
    found += [f"differs: {left / n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        found += _differences(left / sub, right / sub)
    return found


def main() -> int:
    sys.path.insert(0, str(ROOT / "scripts"))
    import unasync

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "generated"
        generate(fresh)
        if args.check:
            stale = _differences(fresh, GENERATED)
            for line in stale:
                print(line, file=sys.stderr)
            if stale:
                print("generated/ is stale: run `uv run python scripts/generate.py`", file=sys.stderr)
            return unasync.main(["--check"]) or (1 if stale else 0)
        shutil.rmtree(GENERATED, ignore_errors=True)
        shutil.copytree(fresh, GENERATED)
    unasync.write()
    print(f"wrote {GENERATED.relative_to(ROOT)}/ and {unasync.TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
