"""An OpenAPI 3 document made from the descriptor set: every google.api.http route of the
services, every field with its proto comment, and the error body. Built by
scripts/generate.py into generated/samsvc/v1/openapi.json and served at /openapi.json."""

from __future__ import annotations

import re
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from samsvc import __version__
from samsvc.gateway.openapi_links import EXAMPLE_IMAGE, IMAGE_FIELDS, add_links
from samsvc.validation.schema import (
    any_of,
    array_constraints,
    field_constraints,
    one_of,
    required_constraints,
)

FieldProto = descriptor_pb2.FieldDescriptorProto

_SCALARS: dict[int, dict[str, Any]] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "int64"},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    # proto3 JSON prints 64-bit integers as strings.
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "format": "byte", "description": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
        "description": "A detail message; `@type` names it (google.rpc.ErrorInfo, google.rpc.BadRequest, ...).",
    },
}
_TEMPLATE_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


_Comments = dict[tuple[str, ...], str]


def is_required(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Whether the proto marks `field` `(google.api.field_behavior) = REQUIRED`."""
    return field_behavior_pb2.REQUIRED in field.options.Extensions[field_behavior_pb2.field_behavior]


def _clean(comment: str) -> str:
    return "\n".join(line.strip() for line in comment.strip().splitlines()).strip()


class _Index:
    """Messages, enums and comments of a descriptor set, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, ...], str] = {}
        self.files = list(files.file)
        for file in self.files:
            comments = {
                tuple(map(str, loc.path)): _clean(loc.leading_comments)
                for loc in file.source_code_info.location
                if loc.leading_comments
            }
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(f"{prefix}.{message.name}", message, ("4", str(i)), comments)
            for i, enum in enumerate(file.enum_type):
                self._add_enum(f"{prefix}.{enum.name}", enum, ("5", str(i)), comments)
            for i, service in enumerate(file.service):
                self.comments[(f"{prefix}.{service.name}",)] = comments.get(("6", str(i)), "")
                for j, method in enumerate(service.method):
                    self.comments[(f"{prefix}.{service.name}", method.name)] = comments.get(
                        ("6", str(i), "2", str(j)), ""
                    )

    def _add_message(
        self,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[str, ...],
        comments: dict[tuple[str, ...], str],
    ) -> None:
        self.messages[name] = message
        self.comments[(name,)] = comments.get(path, "")
        for i, field in enumerate(message.field):
            self.comments[(name, field.name)] = comments.get((*path, "2", str(i)), "")
        for i, nested in enumerate(message.nested_type):
            self._add_message(f"{name}.{nested.name}", nested, (*path, "3", str(i)), comments)
        for i, enum in enumerate(message.enum_type):
            self._add_enum(f"{name}.{enum.name}", enum, (*path, "4", str(i)), comments)

    def _add_enum(
        self,
        name: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[str, ...],
        comments: dict[tuple[str, ...], str],
    ) -> None:
        self.enums[name] = enum
        self.comments[(name,)] = comments.get(path, "")
        for i, value in enumerate(enum.value):
            self.comments[(name, value.name)] = comments.get((*path, "2", str(i)), "")


def _schema_name(full_name: str) -> str:
    return full_name.lstrip(".")


class _Builder:
    def __init__(self, index: _Index) -> None:
        self.index = index
        self.schemas: dict[str, Any] = {}

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        name = _schema_name(type_name)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder against recursion
            if type_name in self.index.enums:
                self.schemas[name] = self._enum_schema(type_name)
            else:
                self.schemas[name] = self._message_schema(type_name)
        return {"$ref": f"#/components/schemas/{name}"}

    def _enum_schema(self, type_name: str) -> dict[str, Any]:
        enum = self.index.enums[type_name]
        lines = [self.index.comments.get((type_name,), "")]
        lines += [f"- `{v.name}`: {self.index.comments.get((type_name, v.name), '')}" for v in enum.value]
        return {"type": "string", "enum": [v.name for v in enum.value], "description": "\n".join(lines).strip()}

    def field_schema(self, message_name: str, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type in (FieldProto.TYPE_MESSAGE, FieldProto.TYPE_ENUM):
            item = self.ref(field.type_name)
        else:
            item = dict(_SCALARS[field.type])
        entry = self.index.messages.get(field.type_name)
        if entry is not None and entry.options.map_entry:
            value = entry.field[1]
            return {
                "type": "object",
                "additionalProperties": self.field_schema(field.type_name, value),
                "description": self.index.comments.get((message_name, field.name), ""),
            }
        constraints = field_constraints(message_name.lstrip("."), field.name)
        if field.type == FieldProto.TYPE_BYTES and field.name in IMAGE_FIELDS:
            constraints = {**constraints, "example": EXAMPLE_IMAGE}
        if constraints and "$ref" not in item:
            item = {**item, **constraints}
        schema: dict[str, Any] = item
        if field.label == FieldProto.LABEL_REPEATED:
            schema = {"type": "array", "items": item, **array_constraints(message_name.lstrip("."), field.name)}
        if is_required(field) and "$ref" not in schema:
            schema = {**schema, **required_constraints(schema["type"])}
        description = self.index.comments.get((message_name, field.name), "")
        if description:
            if "$ref" in schema:
                schema = {"allOf": [schema], "description": description}
            else:
                schema["description"] = (description + "\n" + schema.get("description", "")).strip()
        return schema

    def _message_schema(self, type_name: str) -> dict[str, Any]:
        message = self.index.messages[type_name]
        properties = {f.name: self.field_schema(type_name, f) for f in message.field}
        schema: dict[str, Any] = {
            "type": "object",
            "description": self.index.comments.get((type_name,), ""),
            "properties": properties,
        }
        required = [f.name for f in message.field if is_required(f)]
        if required:
            schema["required"] = required
        name = type_name.lstrip(".")
        for keyword, alternatives in (("oneOf", one_of(name)), ("anyOf", any_of(name))):
            if alternatives:
                schema[keyword] = alternatives
        return schema


def _bindings(rule: http_pb2.HttpRule) -> list[tuple[str, str, str]]:
    found = []
    for binding in [rule, *rule.additional_bindings]:
        verb = binding.WhichOneof("pattern")
        if verb is None or verb == "custom":
            continue
        found.append((verb, getattr(binding, verb), binding.body))
    return found


def path_parameter(field_path: str) -> str:
    """The name a path variable gets in the document: a nested field's path with `_` for `.`
    (`job_image.job_id` -> `job_image_job_id`). The URL is the same; a dotted name is legal
    OpenAPI, but tools that fill templates with Python's str.format (fuzzers, some generators)
    read the dot as an attribute and fail on the document."""
    return field_path.replace(".", "_")


def _path_description(index: _Index, message: str, field_path: str) -> str:
    """The comment of the (possibly nested) field a path variable fills, naming the field."""
    owner, *parts = [message, *field_path.split(".")]
    comment = ""
    for depth, part in enumerate(parts):
        comment = index.comments.get((owner, part), "")
        if depth < len(parts) - 1:
            field = next((f for f in index.messages[owner].field if f.name == part), None)
            if field is None or not field.type_name:
                break
            owner = field.type_name
    if "." not in field_path:
        return comment
    return f"The request's `{field_path}`. {comment}".strip()


def build_openapi(descriptor_set: bytes, services: list[str], title: str = "samsvc") -> dict[str, Any]:
    """The OpenAPI document for `services` (full names) in a serialized FileDescriptorSet."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    index = _Index(files)
    builder = _Builder(index)
    error = builder.ref(".google.rpc.Status")
    error_responses = {
        status: {
            "description": text,
            "content": {"application/json": {"schema": error}},
        }
        for status, text in (
            ("400", "Bad input: `details` holds a google.rpc.BadRequest naming each field and an ErrorInfo."),
            ("401", "Missing or unknown credentials."),
            ("403", "Not allowed: admin operations need an admin token with the admin claim."),
            ("404", "No such job or route."),
            ("412", "Failed precondition, for example the model's weights are not on the server."),
            ("413", "The request body is over the gateway's limit."),
            ("429", "Overloaded: retry after the google.rpc.RetryInfo delay."),
            ("503", "A dependency (the job store) is unavailable."),
        )
    }
    paths: dict[str, Any] = {}
    tags = []
    for file in index.files:
        for service in file.service:
            full = f"{file.package}.{service.name}"
            if full not in services:
                continue
            tags.append({"name": service.name, "description": index.comments.get((f".{full}",), "")})
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for verb, template, body in _bindings(rule):
                    operation = _operation(builder, index, full, method, verb, template, body, error_responses)
                    path = _TEMPLATE_VARIABLE.sub(lambda m: "{" + path_parameter(m.group(1)) + "}", template)
                    paths.setdefault(path, {})[verb] = operation
    add_links(paths, builder.schemas)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": __version__,
            "description": (
                "REST/JSON for samsvc's gRPC API, transcoded by Envoy from the protobuf contract. "
                "Field names are the proto's (snake_case); every field is printed, zeros included; "
                "bytes are base64; 64-bit integers are strings. Streaming methods answer "
                "newline-delimited JSON, one message per line."
            ),
        },
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        # Keys are optional when the server runs without them, hence the empty alternative.
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (sk_..., from `samsvc keys create`), or an admin JWT for AdminService.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "An API key."},
            },
        },
    }


def _operation(
    builder: _Builder,
    index: _Index,
    service: str,
    method: descriptor_pb2.MethodDescriptorProto,
    verb: str,
    template: str,
    body: str,
    errors: dict[str, Any],
) -> dict[str, Any]:
    request = index.messages[method.input_type]
    path_fields = [m.group(1) for m in _TEMPLATE_VARIABLE.finditer(template)]
    parameters: list[dict[str, Any]] = [
        {"name": path_parameter(name), "in": "path", "required": True,
         "schema": {"type": "string", **field_constraints(method.input_type.lstrip("."), name)},
         "description": _path_description(index, method.input_type, name)}
        for name in path_fields
    ]  # fmt: skip
    operation: dict[str, Any] = {
        "tags": [service.rsplit(".", 1)[-1]],
        "operationId": f"{method.name}_{verb}_" + re.sub(r"[^A-Za-z0-9]+", "_", template).strip("_"),
        "summary": method.name,
        "description": index.comments.get((f".{service}", method.name), ""),
    }
    if body == "*":
        schema = builder.ref(method.input_type)
        if path_fields:  # the body holds the fields the path does not
            whole = builder.schemas[_schema_name(method.input_type)]
            schema = {
                "type": "object",
                "properties": {k: v for k, v in whole["properties"].items() if k not in path_fields},
            }
            rest = [name for name in whole.get("required", []) if name not in path_fields]
            if rest:
                schema["required"] = rest
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    else:
        # A field of the same oneof as a path variable is not a query parameter: giving both
        # is refused.
        in_path = {name.split(".")[0] for name in path_fields}
        taken = {f.oneof_index for f in request.field if f.name in in_path and f.HasField("oneof_index")}
        for field in request.field:
            if field.name in path_fields or field.name == body:
                continue
            if field.HasField("oneof_index") and field.oneof_index in taken and not field.proto3_optional:
                continue
            if field.type == FieldProto.TYPE_MESSAGE and field.label != FieldProto.LABEL_REPEATED:
                continue  # message fields cannot be query parameters
            parameters.append(
                {
                    "name": field.name,
                    "in": "query",
                    "required": is_required(field),
                    "schema": builder.field_schema(method.input_type, field),
                    "description": index.comments.get((method.input_type, field.name), ""),
                }
            )
        if body:
            operation["requestBody"] = {
                "required": True,
                "description": index.comments.get((method.input_type, body), ""),
                "content": {
                    kind: {"schema": {"type": "string", "format": "binary"}}
                    for kind in ("image/jpeg", "image/png", "image/webp")
                },
            }
    if parameters:
        operation["parameters"] = parameters
    response = builder.ref(method.output_type)
    if method.server_streaming:
        operation["responses"] = {
            "200": {
                "description": "A stream of messages, one JSON object per line.",
                "content": {"application/x-ndjson": {"schema": response}},
            }
        }
    elif method.output_type == ".google.api.HttpBody":  # the raw body (a tensor, an ONNX file)
        binary = {"schema": {"type": "string", "format": "binary"}}
        operation["responses"] = {
            "200": {"description": "The raw bytes.", "content": {"application/octet-stream": binary}}
        }
    else:
        operation["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}}
    operation["responses"].update(errors)
    return operation
