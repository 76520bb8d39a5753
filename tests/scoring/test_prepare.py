"""``prepare``: the one place where a preset and the aggregations of a request are resolved."""

from __future__ import annotations

import pytest

from uqeval import UQEvalError
from uqeval.conventions import PRESETS, Conventions
from uqeval.scoring.prepare import prepare


def test_the_first_aggregation_is_deltas_and_the_conventions_record_it():
    request = prepare(aggregations=["mean", "border", "mean"])
    assert request.primary == "mean"
    assert request.aggregation_names == ("mean", "border")  # each once, in the order given
    assert request.conventions == Conventions(aggregation="mean")


def test_without_aggregations_the_conventions_or_the_presets_is_the_only_one():
    assert prepare().aggregation_names == ("border",)
    assert prepare(aggregations=[]).primary == "border"
    assert prepare(conventions=Conventions(aggregation="sum")).aggregation_names == ("sum",)
    paper = prepare(preset="paper")
    assert paper.conventions == PRESETS["paper"] and paper.primary == PRESETS["paper"].aggregation


def test_a_preset_is_resolved_with_the_aggregations_given():
    request = prepare(preset="paper", aggregations="patch_max")  # one name as a string
    assert request.primary == "patch_max"
    assert request.conventions == PRESETS["paper"].replace(aggregation="patch_max")


def test_bad_requests_name_the_argument():
    with pytest.raises(UQEvalError) as caught:
        prepare(preset="nope")
    assert caught.value.parameter == "preset"
    with pytest.raises(UQEvalError) as caught:
        prepare(preset="paper", conventions=Conventions())
    assert caught.value.parameter == "preset"
    with pytest.raises(UQEvalError) as caught:
        prepare(aggregations=["border", "nope"])
    assert caught.value.parameter == "aggregations"
