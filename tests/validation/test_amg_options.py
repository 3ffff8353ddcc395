from __future__ import annotations

from dataclasses import fields

import pytest

from samsvc.engine.amg_types import AmgOptions, prompt_count
from samsvc.errors import InvalidArgument
from samsvc.validation.amg_options import RANGES, check_amg_options, check_model_name, check_work

#: MAX_PROMPTS_PER_IMAGE's default.
DEFAULT_LIMIT = 16_384


def test_every_option_has_a_range() -> None:
    assert set(RANGES) == {f.name for f in fields(AmgOptions)}


def test_defaults_are_the_seeds() -> None:
    options = check_amg_options({})
    assert (options.points_per_side, options.pred_iou_thresh, options.stability_score_thresh) == (64, 0.90, 0.92)


def test_given_values_are_kept() -> None:
    options = check_amg_options({"points_per_side": 8, "pred_iou_thresh": 0.0, "crop_n_layers": 1})
    assert (options.points_per_side, options.pred_iou_thresh, options.crop_n_layers) == (8, 0.0, 1)


def test_bools_are_not_numbers() -> None:
    with pytest.raises(InvalidArgument):
        check_amg_options({"points_per_side": True})


def test_prefix_names_nested_fields() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_amg_options({"points_per_side": 0}, prefix="options.")
    assert caught.value.violations[0].field == "options.points_per_side"


def test_unknown_model() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_model_name("nope", ["vit_h", "vit_b"])
    assert caught.value.reason == "UNKNOWN_MODEL"
    check_model_name("vit_b", ["vit_h", "vit_b"])


@pytest.mark.parametrize(
    ("points", "layers", "downscale"),
    [(64, 0, 1), (32, 1, 2), (8, 3, 1), (19, 2, 3), (128, 3, 1), (9, 1, 8)],
)
def test_prompts_are_counted_as_segment_anything_lays_them_out(points: int, layers: int, downscale: int) -> None:
    from segment_anything.utils.amg import build_all_layer_point_grids, generate_crop_boxes

    grids = build_all_layer_point_grids(points, layers, downscale)
    _, layer_of_crop = generate_crop_boxes((600, 800), layers, 512 / 1500)
    expected = sum(len(grids[layer]) for layer in layer_of_crop)
    options = AmgOptions(points_per_side=points, crop_n_layers=layers, crop_n_points_downscale_factor=downscale)
    assert prompt_count(options) == expected


@pytest.mark.parametrize(
    "given",
    [
        {},  # the seed's defaults: points_per_side 64
        {"points_per_side": 32, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2},  # SAM's crop example
        {"points_per_side": 64, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2},
        {"points_per_side": 128},
    ],
)
def test_the_usual_settings_are_within_the_default_work_limit(given: dict[str, int]) -> None:
    assert check_work(check_amg_options(given), DEFAULT_LIMIT) <= DEFAULT_LIMIT


def test_a_request_for_too_much_work_is_refused_naming_the_limit() -> None:
    heavy = check_amg_options({"points_per_side": 128, "crop_n_layers": 3, "crop_n_points_downscale_factor": 1})
    assert prompt_count(heavy) == 1_392_640, "340 times the default's 4096 prompts: the attack"
    with pytest.raises(InvalidArgument) as refused:
        check_work(heavy, DEFAULT_LIMIT, prefix="options.")
    assert refused.value.reason == "TOO_MANY_PROMPTS"
    assert "MAX_PROMPTS_PER_IMAGE" in refused.value.message and "16384" in refused.value.message
    assert [v.field for v in refused.value.violations] == [
        "options.points_per_side",
        "options.crop_n_layers",
        "options.crop_n_points_downscale_factor",
    ]


def test_crop_layers_left_without_points_are_refused() -> None:
    """segment-anything divides by zero when a crop layer's grid has no points."""
    empty = check_amg_options({"points_per_side": 7, "crop_n_layers": 2, "crop_n_points_downscale_factor": 3})
    with pytest.raises(InvalidArgument) as refused:
        check_work(empty, DEFAULT_LIMIT)
    assert [v.field for v in refused.value.violations] == ["crop_n_points_downscale_factor"]
