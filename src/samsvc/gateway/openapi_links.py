"""What the OpenAPI document adds to the protos' shapes so that a reader, Swagger UI's "Try it
out" and a fuzzer reach the API's work instead of its refusals: an example image for every image
field (an 8x8 PNG every model accepts), and links from each answer carrying an id (`image_id`,
`job_id`) to the operations whose path takes that id (OpenAPI 3 `links`)."""

from __future__ import annotations

from typing import Any

#: An 8x8 grey-blue PNG, base64: small enough for every limit, a real image to every decoder.
EXAMPLE_IMAGE = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mOs6FnAgA0wMeAAg1MCAEvHAbTJBi//AAAAAElFTkSuQmCC"
)
#: Bytes fields that hold an image, by name.
IMAGE_FIELDS = frozenset({"image", "images"})
#: Ids an answer can carry that other operations take in their path.
LINKED_IDS = ("image_id", "job_id")
#: Answers whose id field is not one another operation takes: SegmentResponse.job_id names the
#: call in logs (the design document's field), not a stored job.
UNLINKED_ANSWERS = frozenset({"samsvc.v1.SegmentResponse"})
#: Only the canonical routes are linked (the design document's aliases are the same operations).
CANONICAL_PREFIX = "/api/v1/"


def add_links(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Give each canonical operation whose JSON answer has a LINKED_IDS field a link to each
    canonical operation with a path parameter of that name, filled from the answer."""
    takers: dict[str, list[str]] = {name: [] for name in LINKED_IDS}
    for path, operations in paths.items():
        if not path.startswith(CANONICAL_PREFIX):
            continue
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in takers:
                    takers[parameter["name"]].append(operation["operationId"])
    for path, operations in paths.items():
        if not path.startswith(CANONICAL_PREFIX):
            continue
        for operation in operations.values():
            answer = operation["responses"]["200"].get("content", {}).get("application/json", {})
            ref = answer.get("schema", {}).get("$ref", "")
            answer_name = ref.rsplit("/", 1)[-1]
            if answer_name in UNLINKED_ANSWERS:
                continue
            fields = schemas.get(answer_name, {}).get("properties", {})
            links = {
                target: {"operationId": target, "parameters": {name: f"$response.body#/{name}"}}
                for name in LINKED_IDS
                if name in fields
                for target in sorted(takers[name])
                if target != operation["operationId"]
            }
            if links:
                operation["responses"]["200"]["links"] = links
