"""Write the error reference of the documentation site (docs/reference/errors.md) from the code:
every `reason` an error can carry (its google.rpc.ErrorInfo reason), the status it comes with and
the modules that raise it, found by reading the source (each `reason="..."` of an error, and the
reasons validation's helpers take by position), so the page lists what the code raises and
nothing else. `--check` fails when the committed page differs (the suite runs it).

    uv run python scripts/docs_errors.py [--check]
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from generated_page import run

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "samsvc"
PAGE = ROOT / "docs" / "reference" / "errors.md"
REASON = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")
#: Helpers and limits that take the reason by position: name -> (the error they raise, its index).
POSITIONAL_HELPERS = {
    "_bad": ("InvalidArgument", 2),
    "_refused": ("InvalidArgument", 2),
    "KeyedLimit": ("ResourceExhausted", 3),
}
#: Helpers that take `reason=` but name no error class themselves.
HELPER_CLASSES = {
    "bad_request": "InvalidArgument",
    "refusal": "ResourceExhausted",
    "_rejected": "ResourceExhausted",
    "_error_body": "InvalidArgument",
}

INTRO = """# Errors and their reasons

Every error is a gRPC status whose details carry one `google.rpc.ErrorInfo` (domain `samsvc`, a
`reason` from the table below, and metadata such as the limit that was passed), plus a
`google.rpc.BadRequest` naming each bad field for `INVALID_ARGUMENT` and a `google.rpc.RetryInfo`
where waiting helps. Through the gateway the same status is a JSON body `{code, message,
details}` with the HTTP status Envoy maps it to (400, 401, 403, 404, 409, 429, 503, ...). The
Python client raises one `ClientError` subclass per status with `.reason`, `.violations` and
`.retry_after_s`.

When to retry: `UNAVAILABLE` (after a pause; the client's channel does it for you) and
`RESOURCE_EXHAUSTED` (after its RetryInfo delay). Never retry `INVALID_ARGUMENT`,
`FAILED_PRECONDITION`, `NOT_FOUND`, `PERMISSION_DENIED` or `UNAUTHENTICATED` unchanged: the same
request gets the same answer. Batch submissions carry a `request_id`, so a retried submit never
makes a second job.

This page is generated from the source (`uv run python scripts/docs_errors.py`): each reason the
code can raise, with its status and where it is raised.

| reason | status | raised in |
|---|---|---|
"""


def _error_classes() -> dict[str, str]:
    """Error class -> its gRPC status name (samsvc.server.statuses), and each default reason."""
    from google.rpc import code_pb2

    from samsvc.server.statuses import STATUS_CODES

    return {cls.__name__: code_pb2.Code.Name(code) for cls, code in STATUS_CODES.items()}


def _class_of(call: ast.Call, classes: dict[str, str]) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in classes:
        return func.value.id  # InvalidArgument.for_field(...)
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if name in classes:
        return name
    if name in POSITIONAL_HELPERS:
        return POSITIONAL_HELPERS[name][0]
    return HELPER_CLASSES.get(name)


def collect() -> dict[str, tuple[set[str], set[str]]]:
    """Reason -> (statuses, modules)."""
    classes = _error_classes()
    found: dict[str, tuple[set[str], set[str]]] = {}

    def add(reason: str, cls: str | None, module: str) -> None:
        statuses, modules = found.setdefault(reason, (set(), set()))
        statuses.add(classes.get(cls or "", "(several)"))
        modules.add(module)

    templates: list[tuple[str, str | None, str]] = []
    subjects: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        if relative.parts[0] == "v1" or relative.parts[0] == "client":
            continue
        module = "samsvc." + ".".join(relative.with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # Reasons made from a subject (f"INVALID_{subject}", f"{subject}_FORBIDDEN"): the
            # templates, and every subject a caller or a default gives.
            if isinstance(node, ast.arguments):
                names = [a.arg for a in node.args[len(node.args) - len(node.defaults) :]]
                for name, default in zip(names, node.defaults, strict=True):
                    if name == "subject" and isinstance(default, ast.Constant) and isinstance(default.value, str):
                        subjects.add(default.value)
                    if name == "reason" and isinstance(default, ast.JoinedStr):
                        templates.append((ast.unparse(default), "InvalidArgument", module))
            if not isinstance(node, ast.Call):
                continue
            cls = _class_of(node, classes)
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "subject" and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    subjects.add(value.value)
                if keyword.arg == "reason" and isinstance(value, ast.JoinedStr):
                    templates.append((ast.unparse(value), cls or "InvalidArgument", module))
                constant = value.value if isinstance(value, ast.Constant) else None
                if keyword.arg == "reason" and isinstance(constant, str) and REASON.match(constant):
                    add(constant, cls, module)
            name = node.func.id if isinstance(node.func, ast.Name) else ""
            if name in POSITIONAL_HELPERS:
                helper_class, index = POSITIONAL_HELPERS[name]
                arg = node.args[index] if len(node.args) > index else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and REASON.match(arg.value):
                    add(arg.value, helper_class, module)
    for template, cls, module in templates:
        for subject in sorted(subjects):
            add(template[2:-1].replace("{subject}", subject), cls, module)
    from samsvc import errors

    for cls_name in classes:
        default = getattr(errors, cls_name).default_reason
        add(default, cls_name, "samsvc.errors (the default)")
    return found


def render() -> str:
    rows = []
    for reason, (statuses, modules) in sorted(collect().items()):
        shown = ", ".join(f"`{m}`" for m in sorted(modules))
        rows.append(f"| `{reason}` | {', '.join(sorted(statuses))} | {shown} |\n")
    return INTRO + "".join(rows)


def main() -> int:
    return run(PAGE, render, "docs_errors.py", __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
