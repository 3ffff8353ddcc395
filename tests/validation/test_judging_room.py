"""Validation is the one place request input is judged: no other room builds an INVALID_ARGUMENT
of its own, except the label-tool adapters judging the shape of their tools' own protocols
(before translating a call into samsvc's contract, where validation judges the rest) and the
error boundary rebuilding a recorded error."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "samsvc"
#: Where else an InvalidArgument may be made, and why.
ALLOWED = {
    "gateway/cvat.py": "CVAT's Nuclio body (its base64 image field)",
    "gateway/label_studio.py": "Label Studio's /predict body (tasks, params, context)",
    "gateway/label_studio_format.py": "Label Studio's label config and result format",
    "server/statuses.py": "a failed image's recorded error, rebuilt by name",
}


def _makes_invalid_argument(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "InvalidArgument":
            return True
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "InvalidArgument":
            return True
    return False


def test_only_validation_judges_input() -> None:
    judges = set()
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        if relative.parts[0] in {"validation", "v1"} or relative.name == "errors.py":
            continue
        if _makes_invalid_argument(ast.parse(path.read_text(encoding="utf-8"))):
            judges.add(str(relative))
    assert judges == set(ALLOWED), "judge input in samsvc.validation and call it from there"


def test_the_scan_sees_a_judgement() -> None:
    assert _makes_invalid_argument(ast.parse("raise InvalidArgument.for_field('x', 'bad')"))
    assert _makes_invalid_argument(ast.parse("raise InvalidArgument('bad')"))
    assert not _makes_invalid_argument(ast.parse("try:\n    pass\nexcept InvalidArgument:\n    raise"))
