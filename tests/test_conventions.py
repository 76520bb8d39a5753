"""Tests of :mod:`uqeval.conventions`: the defaults of docs/metrics.md (Conventions), presets, validation."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from uqeval import UQEvalError
from uqeval.conventions import PRESETS, Conventions, preset, with_settings

DOCUMENTED_DEFAULTS = {
    "aggregation": "border",
    "patch_size": 10,
    "ncc_constant": "skip",
    "calibration_bins": 20,
    "ace_scope": "pooled",
    "rescale_eu": False,
    "segmentation_samples": 16,
    "seed": 0,
    "empty_iou": 1.0,
}


def test_defaults_are_the_design_defaults():
    conventions = Conventions()
    for name, value in DOCUMENTED_DEFAULTS.items():
        assert getattr(conventions, name) == value, name
        assert type(getattr(conventions, name)) is type(value), name
    assert conventions.quantile_method == "linear"
    assert preset("default") == conventions
    assert set(PRESETS) == {"default", "paper"}


def test_paper_preset_differs_in_the_study_conventions_only():
    default, paper = preset("default").to_dict(), preset("paper").to_dict()
    differing = {name: (default[name], paper[name]) for name in default if default[name] != paper[name]}
    assert differing == {
        "ncc_constant": ("skip", "zero"),
        "ood_split": ("pooled", "domain-mean"),
        "threshold_fraction": ("mean-prediction", "members"),
        "delta_both_zero": ("nan", "atan2"),
        "platt": ("smoothed", "binned-smoothed"),
        "amb_reference": ("one-hot-variance", "class-index-variance"),
        "ncc_factor": ("none", "n-1-over-n"),
        "cal_ood_delta": ("min-of-means", "domain-min-mean"),
        "all_correct_image": ("correct", "wrong"),
    }


@pytest.mark.parametrize(
    "field",
    [
        "ncc_constant",
        "ace_scope",
        "ood_split",
        "threshold_fraction",
        "delta_both_zero",
        "platt",
        "amb_reference",
        "ncc_factor",
        "cal_ood_delta",
        "all_correct_image",
        "empty_pair",
        "hungarian_matching",
    ],
)
def test_a_choice_outside_its_values_is_refused_naming_them(field):
    with pytest.raises(UQEvalError, match=f"{field} is 'sometimes'; expected '"):
        Conventions(**{field: "sometimes"})


def test_the_domain_min_mean_of_cal_needs_domain_means():
    with pytest.raises(UQEvalError, match=r"cal_ood_delta 'domain-min-mean' .* needs ood_split 'domain-mean'"):
        Conventions(cal_ood_delta="domain-min-mean")
    assert Conventions(cal_ood_delta="domain-min-mean", ood_split="domain-mean").cal_ood_delta == "domain-min-mean"


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(UQEvalError, match="'default', 'paper'"):
        preset("study")


@pytest.mark.parametrize(
    "changes",
    [
        {"ncc_constant": "nan"},
        {"ncc_constant": None},
        {"ace_scope": "per_image"},
        {"patch_size": 0},
        {"patch_size": -3},
        {"patch_size": 2.5},
        {"patch_size": True},
        {"patch_size": "10"},
        {"calibration_bins": 0},
        {"calibration_bins": 20.0},
        {"segmentation_samples": 0},
        {"seed": -1},
        {"seed": 1.5},
        {"rescale_eu": "no"},
        {"rescale_eu": 1},
        {"empty_iou": 1.5},
        {"empty_iou": -0.1},
        {"empty_iou": float("nan")},
    ],
)
def test_bad_values_are_rejected(changes):
    with pytest.raises(UQEvalError, match=next(iter(changes))):
        Conventions(**changes)
    with pytest.raises(UQEvalError, match=next(iter(changes))):
        Conventions().replace(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"ace_scope": "per-image"},
        {"ncc_constant": "zero"},
        {"patch_size": 1},
        {"calibration_bins": 1},
        {"empty_iou": 0.0},
        {"rescale_eu": True, "seed": 7},
        {"seed": 2**40},
    ],
)
def test_good_values_are_accepted(changes):
    changed = Conventions().replace(**changes)
    for name, value in changes.items():
        assert getattr(changed, name) == value
    assert Conventions(**changes) == changed


def test_replace_rejects_unknown_fields_and_leaves_the_original():
    conventions = Conventions()
    with pytest.raises(UQEvalError, match="ncc_constnat"):
        conventions.replace(ncc_constnat="zero")
    changed = conventions.replace(patch_size=4)
    assert (conventions.patch_size, changed.patch_size) == (10, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        conventions.patch_size = 4


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_dict_is_json_and_round_trips(name):
    conventions = preset(name)
    data = conventions.to_dict()
    assert set(data) == {field.name for field in dataclasses.fields(Conventions)}
    assert Conventions(**json.loads(json.dumps(data))) == conventions


def test_unknown_quantile_method_is_refused_up_front():
    with pytest.raises(UQEvalError, match="quantile_method"):
        Conventions(quantile_method="fastest")
    for method in ("linear", "lower", "hazen", "nearest"):
        assert Conventions(quantile_method=method).quantile_method == method


def test_settings_change_fields_by_their_type():
    changed = with_settings(preset("paper"), ["ace_scope=per-image", "seed=3", "rescale_eu=yes", "empty_iou=0.5"])
    assert changed == preset("paper").replace(ace_scope="per-image", seed=3, rescale_eu=True, empty_iou=0.5)
    assert with_settings(preset("default"), []) == preset("default")
    assert with_settings(preset("default"), [" patch_size = 7 "]).patch_size == 7


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("ace_scope", "expected NAME=VALUE"),
        ("=3", "expected NAME=VALUE"),
        ("colour=red", "'colour' is not a convention; the conventions are aggregation, patch_size"),
        ("replace=1", "'replace' is not a convention"),
        ("seed=three", "seed='three': expected int value"),
        ("rescale_eu=maybe", "rescale_eu='maybe': expected bool value"),
        ("ace_scope=sometimes", "ace_scope is 'sometimes'; expected 'pooled' or 'per-image'"),
        ("cal_ood_delta=domain-min-mean", "needs ood_split 'domain-mean'"),
    ],
)
def test_bad_settings_name_what_is_wrong(setting, message):
    with pytest.raises(UQEvalError, match=re.escape(message)) as raised:
        with_settings(preset("default"), [setting])
    assert raised.value.parameter == "convention"
