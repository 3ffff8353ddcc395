"""Prompt checks: counts, finite in-range coordinates, well-formed boxes and mask logits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from samsvc.engine.prompts import LOW_RES, PromptSpec
from samsvc.errors import FieldViolation
from samsvc.validation.options import invalid_parameters

MAX_PROMPTS = 64
MAX_POINTS_PER_PROMPT = 64
MASK_LOGITS_BYTES = LOW_RES * LOW_RES * 4


def check_prompts(prompts: Sequence[Any], max_side: int) -> list[PromptSpec]:
    """PromptSpecs from protobuf Prompt messages; every problem named by its field path."""
    violations: list[FieldViolation] = []
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        violations.append(FieldViolation("prompts", f"must hold 1 to {MAX_PROMPTS} prompts; got {len(prompts)}"))
    specs: list[PromptSpec] = []
    for i, prompt in enumerate(prompts[:MAX_PROMPTS]):
        where = f"prompts[{i}]"
        has_box = prompt.HasField("box")
        if not prompt.points and not has_box and not prompt.mask_logits:
            violations.append(FieldViolation(where, "needs points, a box or mask_logits"))
            continue
        if len(prompt.points) > MAX_POINTS_PER_PROMPT:
            violations.append(FieldViolation(f"{where}.points", f"at most {MAX_POINTS_PER_PROMPT} points"))
        points = []
        for j, point in enumerate(prompt.points):
            for axis in ("x", "y"):
                value = getattr(point, axis)
                if not math.isfinite(value) or not 0 <= value <= max_side:
                    violations.append(FieldViolation(f"{where}.points[{j}].{axis}", f"must be in [0, {max_side}]"))
            points.append((point.x, point.y, 0 if point.background else 1))
        box = None
        if has_box:
            b = prompt.box
            values = (b.x0, b.y0, b.x1, b.y1)
            if not all(math.isfinite(v) and 0 <= v <= max_side for v in values):
                violations.append(FieldViolation(f"{where}.box", f"coordinates must be in [0, {max_side}]"))
            elif b.x1 <= b.x0 or b.y1 <= b.y0:
                violations.append(FieldViolation(f"{where}.box", "needs x0 < x1 and y0 < y1"))
            box = values
        logits = None
        if prompt.mask_logits:
            if len(prompt.mask_logits) != MASK_LOGITS_BYTES:
                violations.append(
                    FieldViolation(f"{where}.mask_logits", f"must be {MASK_LOGITS_BYTES} bytes (256x256 float32)")
                )
            else:
                logits = np.frombuffer(prompt.mask_logits, dtype="<f4").reshape(1, LOW_RES, LOW_RES).astype(np.float32)
                if not np.isfinite(logits).all():
                    violations.append(FieldViolation(f"{where}.mask_logits", "must be finite"))
        specs.append(PromptSpec(points=tuple(points), box=box, mask_logits=logits))
    if violations:
        raise invalid_parameters(violations)
    return specs
