"""The headline's one-line readings of Δ."""

from __future__ import annotations

import math

import pytest

from uqeval.report.readings import delta_reading, headline_rows


def entanglement(task="oodd", split="ood", correct="eu", wrong="au", u_correct=0.9, u_wrong=0.5, delta=0.3) -> dict:
    return {
        "task": task,
        "split": split,
        "correct": correct,
        "wrong": wrong,
        "u_correct": u_correct,
        "u_wrong": u_wrong,
        "delta": delta,
    }


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (0.85, "EU detects the shift far better than AU"),
        (0.5, "EU detects the shift far better than AU"),
        (0.3, "EU detects the shift somewhat better than AU"),
        (0.05, "EU detects the shift no better than AU"),
        (-0.05, "EU detects the shift no better than AU"),
        (-0.4, "AU detects the shift better than EU"),
    ],
)
def test_the_reading_follows_delta(delta, words):
    reading = delta_reading(entanglement(delta=delta))
    assert reading.startswith(f"on ood, {words} (AUROC ")
    assert ("entangled" in reading) == (delta < 0 and abs(delta) >= 0.1)


def test_an_undefined_delta_says_so():
    assert "Δ is undefined" in delta_reading(entanglement(delta=math.nan))
    assert "Δ is undefined" in delta_reading(entanglement(delta=None))


def test_lower_is_better_and_several_wrong_measures_are_named():
    reading = delta_reading(entanglement("cal", "ood", "tu", "au/eu", 0.01, 0.03, 0.7))
    assert reading == "on ood, TU is calibrated far better than AU/EU (ACE 0.010 vs 0.030; lower is better)"


def test_a_below_chance_auroc_is_read_as_such():
    reading = delta_reading(entanglement(u_correct=0.2, u_wrong=0.1, delta=0.3))
    assert "below 0.5, EU ranks OOD images as less uncertain" in reading


def test_each_task_is_read_on_its_headline_split():
    rows = [
        entanglement("oodd", "blur"),
        entanglement("oodd", "ood"),
        entanglement("amb", "blur", "au", "eu"),
        entanglement("amb", "id", "au", "eu"),
        entanglement("fd", "all", "tu", "eu"),
    ]
    chosen = headline_rows(rows)
    assert list(chosen) == ["oodd", "amb", "fd"]
    assert [chosen[task]["split"] for task in chosen] == ["ood", "id", "all"]
    assert delta_reading(chosen["fd"]).startswith("on all test images, TU detects failures")
