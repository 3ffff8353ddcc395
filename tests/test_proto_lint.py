"""The contracts follow Buf's STANDARD and COMMENTS lint rules with the exceptions protos/buf.yaml
names, break nothing against the last released contract (Buf's FILE rules), and keep the Google
AIP rules Buf does not check: every List call paged, every create call taking a request_id.

Buf (pinned, scripts/buf) runs on the descriptor set scripts/generate.py writes; each check is
also shown finding what it exists to find, on a contract made wrong on purpose."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent


def _check_contract() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_contract", ROOT / "scripts" / "check_contract.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_contract", module)
    spec.loader.exec_module(module)
    return module


contract = _check_contract()

#: Calls that take another call's request (protos/buf.yaml says why); no new one joins them.
SHARED_REQUESTS = {
    "GetImageEmbeddingRaw": "GetImageEmbeddingRequest",
    "GetDecoderInfo": "GetDecoderRequest",
    "SegmentBatch": "SubmitBatchRequest",
}
#: Create calls idempotent without a request_id: the same request names the same resource.
IDEMPOTENT_BY_CONTENT = {"CreateImageSession"}  # its id is the image's content hash plus the model


def _files(path: Path = contract.DESCRIPTOR_SET) -> list[descriptor_pb2.FileDescriptorProto]:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return [f for f in descriptors.file if f.name.startswith("samsvc/")]


def aip_problems(files: list[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    """The AIP rules Buf has none for, one line per departure: List calls paged (AIP-158), Create
    and Submit calls idempotent by request_id (AIP-155), and requests named for their call
    except the shared ones above."""
    found: list[str] = []
    messages = {f"{file.package}.{m.name}": m for file in files for m in file.message_type}
    for file in files:
        for service in file.service:
            for method in service.method:
                request = messages.get(method.input_type.lstrip("."))
                response = messages.get(method.output_type.lstrip("."))
                taken = {f.name for f in request.field} if request else set()
                if method.name.startswith("List") and response is not None:
                    if "page_token" not in taken:
                        found.append(f"{method.name} takes no page_token")
                    if "next_page_token" not in {f.name for f in response.field}:
                        found.append(f"{method.name} answers no next_page_token")
                creates = re.match(r"(Create|Submit)[A-Z]", method.name) and method.name not in IDEMPOTENT_BY_CONTENT
                if creates and "request_id" not in taken:
                    found.append(f"{method.name} takes no request_id")
                request_name = method.input_type.rsplit(".", 1)[1]
                ours = method.input_type.startswith(".samsvc.")
                if ours and request_name not in {f"{method.name}Request", SHARED_REQUESTS.get(method.name)}:
                    found.append(f"{method.name} takes {request_name}, not {method.name}Request")
    return found


def test_buf_lint_passes() -> None:
    assert contract.lint() == []


def test_nothing_breaks_the_released_contract() -> None:
    assert contract.RELEASED.exists(), "the released contract's baseline is committed"
    assert contract.breaking() == []


def test_the_aip_rules_buf_lacks_hold() -> None:
    files = _files()
    assert {f.name for f in files} >= {"samsvc/v1/segmentation_service.proto", "samsvc/v1/job.proto"}
    methods = {m.name for f in files for s in f.service for m in s.method}
    assert set(SHARED_REQUESTS) <= methods
    assert {"ListJobs", "CreateImageSession", "SubmitBatch"} <= methods, "the rules have calls to judge"
    assert aip_problems(files) == []


BAD_PROTO = """syntax = "proto3";
package samsvc.v1;

// Documented.
message GoodThing {
  // Documented.
  int32 size = 1;
}

message badThing {
  int32 BadField = 1;
}

// Documented.
enum Colour {
  // Documented.
  RED = 0;
  // Documented.
  COLOUR_BLUE = 1;
}

// Documented.
message ListThingsRequest {
  // Documented.
  int32 page_size = 1;
}

// Documented.
message ListThingsResponse {
  // Documented.
  repeated GoodThing things = 1;
}

// Documented.
message CreateThingRequest {
  // Documented.
  GoodThing thing = 1;
}

// Documented.
message CreateThingResponse {
  // Documented.
  GoodThing thing = 1;
}

// Documented.
service ThingService {
  rpc ListThings(ListThingsRequest) returns (ListThingsResponse);
  // Documented.
  rpc CreateThing(CreateThingRequest) returns (CreateThingResponse);
  // Documented.
  rpc MakeThing(CreateThingRequest) returns (GoodThing);
}
"""


def _compile(tmp_path: Path, source: str) -> Path:
    from grpc_tools import protoc

    (tmp_path / "samsvc" / "v1").mkdir(parents=True)
    (tmp_path / "samsvc" / "v1" / "bad.proto").write_text(source)
    out = tmp_path / "bad.pb"
    assert protoc.main(["protoc", f"-I{tmp_path}", "--include_source_info", f"--descriptor_set_out={out}",
                        "samsvc/v1/bad.proto"]) == 0  # fmt: skip
    return out


def test_the_checks_find_each_departure(tmp_path: Path) -> None:
    descriptor_set = _compile(tmp_path, BAD_PROTO)
    rules = {line.rsplit(":", 1)[-1].strip() for line in contract.lint(descriptor_set)}
    joined = "\n".join(rules)
    for expected in (
        'Message name "badThing" should be PascalCase',
        'Field name "BadField" should be lower_snake_case',
        'Enum value name "RED" should be prefixed with "COLOUR_"',
        'Enum zero value name "RED" should be suffixed with "_UNSPECIFIED"',
        'Message "badThing" should have a non-empty comment for documentation',
        'RPC "ListThings" should have a non-empty comment for documentation',
        'RPC request type "CreateThingRequest" should be named "MakeThingRequest"',
    ):
        assert any(line.startswith(expected) for line in rules), f"{expected!r} not in:\n{joined}"
    assert sorted(aip_problems(_files(descriptor_set))) == [
        "CreateThing takes no request_id",
        "ListThings answers no next_page_token",
        "ListThings takes no page_token",
        "MakeThing takes CreateThingRequest, not MakeThingRequest",
    ]


def test_a_breaking_change_is_found(tmp_path: Path) -> None:
    """A field removed and another renumbered: what Buf's FILE rules exist to refuse."""
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(contract.DESCRIPTOR_SET.read_bytes())
    file = next(f for f in descriptors.file if f.name == "samsvc/v1/segmentation_service.proto")
    request = next(m for m in file.message_type if m.name == "SegmentRequest")
    image = next(f for f in request.field if f.name == "image")
    image.number = 999
    model_type = next(f for f in request.field if f.name == "model_type")
    request.field.remove(model_type)
    changed = tmp_path / "changed.pb"
    changed.write_bytes(descriptors.SerializeToString())
    found = [line.split(":", 3)[-1] for line in contract.breaking(changed)]
    assert sorted(found) == sorted(
        [
            'Previously present field "1" with name "image" on message "SegmentRequest" was deleted.',
            f'Previously present field "{model_type.number}" with name "model_type" on message "SegmentRequest" '
            "was deleted.",
        ]
    )
