"""The contracts follow the house style (Google AIPs, Buf's STANDARD and COMMENTS rules): package
samsvc.v1; PascalCase messages, enums, services and methods; snake_case fields; enum values
prefixed with their enum's name, the zero value `*_UNSPECIFIED`; every List method paged; and a
comment on every message, field, enum, enum value, service and method, read from the
descriptor set's source info (what protoc saw, so a comment in the wrong place counts as none)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = ROOT / "generated" / "samsvc" / "v1" / "descriptor_set.pb"

PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")

# Source-info paths (descriptor.proto field numbers).
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE, SERVICE_METHOD = 2, 2


def _files() -> list[descriptor_pb2.FileDescriptorProto]:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    return [f for f in descriptors.file if f.name.startswith("samsvc/")]


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _elements(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """(kind, full name, source path) of every element that must be named well and commented."""

    def enum(
        e: descriptor_pb2.EnumDescriptorProto, scope: str, path: tuple[int, ...]
    ) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        yield "enum", f"{scope}.{e.name}", path
        for i, value in enumerate(e.value):
            yield f"enum value of {e.name}", f"{scope}.{e.name}.{value.name}", (*path, ENUM_VALUE, i)

    def message(
        m: descriptor_pb2.DescriptorProto, scope: str, path: tuple[int, ...]
    ) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        name = f"{scope}.{m.name}"
        yield "message", name, path
        for i, field in enumerate(m.field):
            yield "field", f"{name}.{field.name}", (*path, MESSAGE_FIELD, i)
        for i, nested in enumerate(m.nested_type):
            if not nested.options.map_entry:
                yield from message(nested, name, (*path, MESSAGE_NESTED, i))
        for i, nested_enum in enumerate(m.enum_type):
            yield from enum(nested_enum, name, (*path, MESSAGE_ENUM, i))

    scope = file.package
    for i, m in enumerate(file.message_type):
        yield from message(m, scope, (FILE_MESSAGE, i))
    for i, e in enumerate(file.enum_type):
        yield from enum(e, scope, (FILE_ENUM, i))
    for i, service in enumerate(file.service):
        yield "service", f"{scope}.{service.name}", (FILE_SERVICE, i)
        for j, method in enumerate(service.method):
            yield "method", f"{scope}.{service.name}.{method.name}", (FILE_SERVICE, i, SERVICE_METHOD, j)


def problems(files: list[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    """Every departure from the style in `files`, one line each."""
    found: list[str] = []
    messages = {f"{file.package}.{m.name}": m for file in files for m in file.message_type}
    for file in files:
        if file.package != "samsvc.v1" or not file.name.startswith("samsvc/v1/"):
            found.append(f"{file.name}: package {file.package!r}, not samsvc.v1 under samsvc/v1/")
        comments = {
            tuple(location.path): location.leading_comments.strip() or location.trailing_comments.strip()
            for location in file.source_code_info.location
        }
        for kind, name, path in _elements(file):
            short = name.rsplit(".", 1)[1]
            if kind == "field":
                ok = bool(SNAKE.match(short))
            elif kind.startswith("enum value of "):
                prefix = _upper_snake(kind.removeprefix("enum value of ")) + "_"
                ok = bool(UPPER_SNAKE.match(short)) and short.startswith(prefix)
            else:
                ok = bool(PASCAL.match(short))
            if not ok:
                found.append(f"badly named {kind} {name}")
            if not comments.get(path):
                found.append(f"no comment on {kind} {name}")
        for e in _enums(file):
            first = e.value[0]
            if first.number != 0 or first.name != f"{_upper_snake(e.name)}_UNSPECIFIED":
                found.append(f"enum {e.name} starts with {first.name} = {first.number}, not *_UNSPECIFIED = 0")
        for service in file.service:
            for method in service.method:
                request = messages.get(method.input_type.lstrip("."))
                response = messages.get(method.output_type.lstrip("."))
                if not method.name.startswith("List") or request is None or response is None:
                    continue
                if "page_token" not in {f.name for f in request.field}:
                    found.append(f"{method.name} takes no page_token")
                if "next_page_token" not in {f.name for f in response.field}:
                    found.append(f"{method.name} answers no next_page_token")
    return found


def _enums(file: descriptor_pb2.FileDescriptorProto) -> Iterator[descriptor_pb2.EnumDescriptorProto]:
    yield from file.enum_type
    stack = list(file.message_type)
    while stack:
        m = stack.pop()
        yield from m.enum_type
        stack += m.nested_type


def test_the_contracts_follow_the_style() -> None:
    files = _files()
    assert {f.name for f in files} >= {"samsvc/v1/segmentation_service.proto", "samsvc/v1/job.proto"}
    assert sum(1 for file in files for _ in _elements(file)) > 200, "every element is looked at"
    assert problems(files) == []


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
service Things {
  rpc ListThings(ListThingsRequest) returns (ListThingsResponse);
}
"""


def test_the_lint_finds_each_departure(tmp_path: Path) -> None:
    from grpc_tools import protoc

    (tmp_path / "samsvc" / "v1").mkdir(parents=True)
    (tmp_path / "samsvc" / "v1" / "bad.proto").write_text(BAD_PROTO)
    out = tmp_path / "bad.pb"
    assert protoc.main(["protoc", f"-I{tmp_path}", "--include_source_info", f"--descriptor_set_out={out}",
                        "samsvc/v1/bad.proto"]) == 0  # fmt: skip
    found = problems(list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file))
    assert sorted(found) == sorted(
        [
            "badly named message samsvc.v1.badThing",
            "no comment on message samsvc.v1.badThing",
            "badly named field samsvc.v1.badThing.BadField",
            "no comment on field samsvc.v1.badThing.BadField",
            "badly named enum value of Colour samsvc.v1.Colour.RED",
            "enum Colour starts with RED = 0, not *_UNSPECIFIED = 0",
            "no comment on method samsvc.v1.Things.ListThings",
            "ListThings takes no page_token",
            "ListThings answers no next_page_token",
        ]
    )
