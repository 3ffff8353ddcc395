"""generated/ must be exactly what scripts/generate.py makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_descriptor_set_carries_error_details_and_http_rules() -> None:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "generated" / "samsvc" / "v1" / "descriptor_set.pb").read_bytes()
    )
    files = {f.name for f in descriptors.file}
    assert {
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "google/api/annotations.proto",
        "samsvc/v1/segmentation_service.proto",
    } <= files
    service = next(f for f in descriptors.file if f.name == "samsvc/v1/segmentation_service.proto").service[0]
    assert service.name == "SegmentationService"
    for method in service.method:
        assert method.options.ByteSize() > 0, f"{method.name} has no google.api.http rule"


def test_routes_of_the_seed_are_annotated() -> None:
    from google.api import annotations_pb2

    from samsvc.v1 import segmentation_service_pb2

    service = segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"]
    routes: set[tuple[str, str]] = set()
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        for binding in [rule, *rule.additional_bindings]:
            verb = binding.WhichOneof("pattern")
            routes.add((verb.upper(), getattr(binding, verb)))
    assert {
        ("POST", "/api/v1/segment"),
        ("POST", "/segment"),
        ("GET", "/api/v1/models"),
        ("GET", "/models"),
        ("GET", "/health"),
        ("GET", "/api/v1/health"),
    } <= routes


def test_openapi_document_is_valid_and_covers_every_route() -> None:
    import json

    from openapi_spec_validator import validate

    spec = json.loads((ROOT / "generated" / "samsvc" / "v1" / "openapi.json").read_text())
    validate(spec)
    assert "/api/v1/admin/models/{name}:unload" in spec["paths"]
    assert "/api/v1/segment/batch" in spec["paths"] and "/api/v1/jobs/{job_id}/events" in spec["paths"]
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_openapi_path_variables_are_plain_names() -> None:
    """The embedding routes once named their variables `job_image.job_id`: legal OpenAPI, but a
    fuzzer (schemathesis) fills templates with str.format, read the dot as an attribute and
    called the document a Schema Error. Every variable is a plain name declared once."""
    import json
    import re
    import string

    spec = json.loads((ROOT / "generated" / "samsvc" / "v1" / "openapi.json").read_text())
    embedding = "/api/v1/jobs/{job_image_job_id}/images/{job_image_index}/embedding"
    assert embedding in spec["paths"] and embedding + ":raw" in spec["paths"]
    for path, operations in spec["paths"].items():
        names = re.findall(r"\{([^}]*)\}", path)
        assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in names), path
        filled = string.Formatter().vformat(path, (), {name: "x" for name in names})
        assert "{" not in filled, path
        for operation in operations.values():
            declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert sorted(declared) == sorted(names), path
