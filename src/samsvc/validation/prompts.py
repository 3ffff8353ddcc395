"""Prompt checks: counts, finite coordinates inside the image, well-formed boxes and mask
logits, and refinement of an image session's previous answer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from samsvc.engine.prompt_types import LOW_RES, PromptSpec
from samsvc.errors import FieldViolation
from samsvc.validation.amg_options import invalid_parameters

MAX_PROMPTS = 64
MAX_POINTS_PER_PROMPT = 64
MASK_LOGITS_BYTES = LOW_RES * LOW_RES * 4


def check_prompts(
    prompts: Sequence[Any],
    width: int,
    height: int,
    previous: Sequence[npt.NDArray[np.float32]] | None = None,
) -> list[PromptSpec]:
    """PromptSpecs from protobuf Prompt messages on a `width` x `height` image (EXIF orientation
    applied); every problem named by its field path. `previous` is an image session's last
    answer (best logits per prompt), which `refine_previous` prompts take as their mask logits;
    None when the request has no session."""
    bounds = {"x": width, "y": height}
    violations: list[FieldViolation] = []
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        violations.append(FieldViolation("prompts", f"must hold 1 to {MAX_PROMPTS} prompts; got {len(prompts)}"))
    specs: list[PromptSpec] = []
    for i, prompt in enumerate(prompts[:MAX_PROMPTS]):
        where = f"prompts[{i}]"
        has_box = prompt.HasField("box")
        refine = bool(prompt.refine_previous)
        if not prompt.points and not has_box and not prompt.mask_logits and not refine:
            violations.append(FieldViolation(where, "needs points, a box, mask_logits or refine_previous"))
            continue
        if refine and previous is None:
            violations.append(FieldViolation(f"{where}.refine_previous", "needs an image session (image_id)"))
        if refine and prompt.mask_logits:
            violations.append(FieldViolation(f"{where}.refine_previous", "cannot be combined with mask_logits"))
        if len(prompt.points) > MAX_POINTS_PER_PROMPT:
            violations.append(FieldViolation(f"{where}.points", f"at most {MAX_POINTS_PER_PROMPT} points"))
        points = []
        for j, point in enumerate(prompt.points):
            for axis, limit in bounds.items():
                value = getattr(point, axis)
                if not math.isfinite(value) or not 0 <= value <= limit:
                    violations.append(
                        FieldViolation(f"{where}.points[{j}].{axis}", f"must be in [0, {limit}] (inside the image)")
                    )
            points.append((point.x, point.y, 0 if point.background else 1))
        box = None
        if has_box:
            b = prompt.box
            values = (b.x0, b.y0, b.x1, b.y1)
            limits = (width, height, width, height)
            if not all(math.isfinite(v) and 0 <= v <= top for v, top in zip(values, limits, strict=True)):
                violations.append(
                    FieldViolation(
                        f"{where}.box", f"x must be in [0, {width}] and y in [0, {height}] (inside the image)"
                    )
                )
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
        elif refine and previous is not None and i < len(previous):
            logits = previous[i]
        elif refine and previous is not None and not prompt.points and not has_box:
            violations.append(
                FieldViolation(f"{where}.refine_previous", "the session has no previous answer to this prompt")
            )
        specs.append(PromptSpec(points=tuple(points), box=box, mask_logits=logits))
    if violations:
        raise invalid_parameters(violations)
    return specs
