"""multipart/form-data uploads (the `curl -F` form of Segment and SubmitBatch) as the JSON body
the transcoder would have taken: files as base64 under the request's image field, other fields
by name, unknown names left for protobuf's JSON parser to name in its error."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from python_multipart.multipart import MultipartParser, parse_options_header

_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


@dataclass(frozen=True)
class Upload:
    """One multipart form: text fields (a name may repeat) and files."""

    fields: list[tuple[str, str]]
    files: list[tuple[str, bytes]]


def parse_multipart(content_type: str, body: bytes) -> Upload:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValueError("multipart/form-data without a boundary")
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, bytes]] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, data=bytearray(), header_name=b"", header_value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header_name"].lower()] = state["header_value"]
        state["header_name"], state["header_value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def on_part_end() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition:
            files.append((name, bytes(state["data"])))
        else:
            fields.append((name, state["data"].decode("utf-8", "replace")))

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return Upload(fields, files)


def _json_value(field: FieldDescriptor, text: str) -> Any:
    """A form string as the JSON value protobuf's JSON mapping expects for `field`."""
    if field.type == FieldDescriptor.TYPE_BOOL and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    return text


def form_to_json(upload: Upload, descriptor: Descriptor, file_field: str, nested: str = "") -> dict[str, Any]:
    """The JSON body the transcoder would take, from a form: files (base64) under `file_field`,
    other fields by name; names unknown to the request go to the `nested` message (options)."""
    body: dict[str, Any] = {}
    target = descriptor.fields_by_name[file_field]
    encoded = [base64.b64encode(data).decode("ascii") for name, data in upload.files if name == file_field]
    if encoded:
        body[file_field] = encoded if target.is_repeated else encoded[0]
    nested_descriptor = descriptor.fields_by_name[nested].message_type if nested else None
    for name, text in upload.fields:
        if name in descriptor.fields_by_name:
            body[name] = _json_value(descriptor.fields_by_name[name], text)
        elif nested_descriptor is not None and name in nested_descriptor.fields_by_name:
            body.setdefault(nested, {})[name] = _json_value(nested_descriptor.fields_by_name[name], text)
        else:
            body[name] = text  # protobuf's parser names the unknown field in its error
    return body
