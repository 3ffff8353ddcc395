"""Request parameters of automatic mask generation: defaults filled, every range checked.

All violations of a request are reported together, each naming its field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from samsvc.engine.amg_types import MASKS_PER_PROMPT, AmgOptions, prompt_count
from samsvc.errors import FieldViolation, InvalidArgument

#: Bounds of the integer parameters (inclusive).
MAX_POINTS_PER_SIDE = 128
MAX_POINTS_PER_BATCH = 1024
MAX_CROP_N_LAYERS = 3
MAX_CROP_N_POINTS_DOWNSCALE_FACTOR = 8
MAX_STABILITY_SCORE_OFFSET = 10.0


@dataclass(frozen=True)
class _Range:
    low: float
    high: float
    integer: bool = False
    high_open: bool = False
    boolean: bool = False

    def problem(self, value: Any) -> str | None:
        if self.boolean:
            return None if isinstance(value, bool) else "must be true or false"
        if self.integer:
            if isinstance(value, bool) or not isinstance(value, int):
                return "must be an integer"
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return "must be a finite number"
        above = value >= self.high if self.high_open else value > self.high
        if value < self.low or above:
            closing = ")" if self.high_open else "]"
            low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
            return f"must be in [{low}, {high}{closing}; got {value}"
        return None


#: One range per AmgOptions field (tests check none is missing).
RANGES: dict[str, _Range] = {
    "points_per_side": _Range(1, MAX_POINTS_PER_SIDE, integer=True),
    "points_per_batch": _Range(1, MAX_POINTS_PER_BATCH, integer=True),
    "pred_iou_thresh": _Range(0.0, 1.0),
    "stability_score_thresh": _Range(0.0, 1.0),
    "stability_score_offset": _Range(0.0, MAX_STABILITY_SCORE_OFFSET),
    "box_nms_thresh": _Range(0.0, 1.0),
    "crop_n_layers": _Range(0, MAX_CROP_N_LAYERS, integer=True),
    "crop_nms_thresh": _Range(0.0, 1.0),
    "crop_overlap_ratio": _Range(0.0, 1.0, high_open=True),
    "crop_n_points_downscale_factor": _Range(1, MAX_CROP_N_POINTS_DOWNSCALE_FACTOR, integer=True),
    "min_mask_region_area": _Range(0, 2**31 - 1, integer=True),
    "use_m2m": _Range(0, 1, boolean=True),
}


def check_amg_options(
    given: dict[str, Any],
    prefix: str = "",
    defaults: AmgOptions | None = None,
    family_check: Callable[[AmgOptions, str], list[FieldViolation]] | None = None,
) -> AmgOptions:
    """AmgOptions from the parameters a request set (unset ones are absent from `given` and
    take `defaults`: the model family's); `family_check` names options the model's family
    cannot honour.

    Raises InvalidArgument listing every bad field (named `prefix + name`).
    """
    violations: list[FieldViolation] = []
    for name, value in given.items():
        limits = RANGES.get(name)
        if limits is None:
            violations.append(FieldViolation(prefix + name, "is not a mask generation parameter"))
            continue
        problem = limits.problem(value)
        if problem is not None:
            violations.append(FieldViolation(prefix + name, problem))
    if violations:
        raise invalid_parameters(violations)
    options = dataclasses.replace(defaults or AmgOptions(), **given)
    if family_check is not None:
        violations = family_check(options, prefix)
        if violations:
            raise invalid_parameters(violations)
    return options


def check_work(options: AmgOptions, max_prompts: int, prefix: str = "") -> int:
    """The prompts `options` make (the request's work, counted before any pixel is decoded);
    INVALID_ARGUMENT (TOO_MANY_PROMPTS) naming the limit when above MAX_PROMPTS_PER_IMAGE."""
    last = int(options.points_per_side / options.crop_n_points_downscale_factor**options.crop_n_layers)
    if last < 1:
        # segment-anything divides by zero on an empty point grid.
        raise invalid_parameters(
            [
                FieldViolation(
                    prefix + "crop_n_points_downscale_factor",
                    f"leaves no points in crop layer {options.crop_n_layers}: points_per_side "
                    f"{options.points_per_side} / {options.crop_n_points_downscale_factor}**{options.crop_n_layers}"
                    " must be at least 1",
                )
            ]
        )
    prompts = prompt_count(options)
    if prompts <= max_prompts:
        return prompts
    layers = options.crop_n_layers
    how = f"points_per_side {options.points_per_side}"
    if layers:
        how += f" over {layers} crop layers (downscale {options.crop_n_points_downscale_factor})"
    description = (
        f"{how} make {prompts} prompts (up to {prompts * MASKS_PER_PROMPT} masks); "
        f"the limit is {max_prompts} (MAX_PROMPTS_PER_IMAGE)"
    )
    fields = ["points_per_side"] + (["crop_n_layers", "crop_n_points_downscale_factor"] if layers else [])
    violations = [FieldViolation(prefix + name, description) for name in fields]
    raise InvalidArgument(
        f"too much work for one image: {description}", violations=violations, reason="TOO_MANY_PROMPTS"
    )


def check_model_name(name: str, known: list[str], field: str = "model_type", shown: list[str] | None = None) -> None:
    """InvalidArgument unless `name` is a registered model; the message offers `shown` (the
    models the caller may use; default all)."""
    if name not in known:
        choices = ", ".join(known if shown is None else shown) or "none (this key may use no model)"
        raise InvalidArgument.for_field(
            field, f"unknown model {name!r}; choose one of {choices}", reason="UNKNOWN_MODEL"
        )


def invalid_parameters(violations: list[FieldViolation]) -> InvalidArgument:
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgument(f"invalid parameters: {summary}", violations=violations, reason="INVALID_PARAMETER")
