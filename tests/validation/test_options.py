from __future__ import annotations

from dataclasses import fields

import pytest

from samsvc.engine.amg import AmgOptions
from samsvc.errors import InvalidArgument
from samsvc.validation.options import RANGES, check_amg_options, check_model_name


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
