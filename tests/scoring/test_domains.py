"""Domains at the door of scoring: ``id`` spelled otherwise is refused, a store without ID
images is scored with one warning, and a cube's input images reach the scoring code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import note_texts, run_cli, write_synthetic_store

import uqeval
from uqeval import UQEvalError, decompose, evaluate, open_cube, score
from uqeval.scoring.sources import cube_source

SIZE = 16


def write_store(path: Path, domains: list[str], *, raters: int = 2, roles: list[str] | None = None) -> Path:
    """A small synthetic store with the given domain per image (all test images unless ``roles``)."""
    layout = list(zip(domains, roles or ["test"] * len(domains), strict=True))
    return write_synthetic_store(path, layout=layout, size=SIZE, raters=raters, chunk_images=4)


def write_store_by_hand(path: Path, domains: list[str]) -> Path:
    """A store whose domains the writer would refuse: written with CubeWriter, then renamed in place."""
    import zarr

    write_store(path, ["id"] * len(domains))
    zarr.open_group(path, mode="r+")["domain"][:] = np.asarray(domains, dtype=object)
    return path


def mentions_id(note: str) -> bool:
    return "'id'" in note or "ID" in note or "in-distribution" in note


# --------------------------------------------------------------------------- id spelled otherwise


@pytest.mark.cli
def test_cli_refuses_a_store_whose_id_is_upper_case(tmp_path):
    path = write_store_by_hand(tmp_path / "upper.zarr", ["ID"] * 12 + ["blur"] * 4)
    result = run_cli("score", str(path), "--out", str(tmp_path / "out"), "--no-plots")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert "domain 'ID' of 12 images looks like 'id' (in-distribution) but is spelled differently; write 'id'" in (
        " ".join(output.split())
    )
    assert not (tmp_path / "out" / "scores.json").exists()


@pytest.mark.parametrize("spelt", ["Id", " id", "id "])
def test_score_refuses_id_spelled_otherwise(tmp_path, spelt):
    path = write_store_by_hand(tmp_path / "cube.zarr", [spelt] * 3 + ["blur"] * 5)
    with pytest.raises(UQEvalError, match=f"^{path}: domain {spelt!r} of 3 images looks like 'id'"):
        score(path)
    dataset = open_cube(write_store(tmp_path / "ok.zarr", ["id"] * 4 + ["blur"] * 4)).load()
    dataset["domain"] = ("image", np.array([spelt] * 4 + ["blur"] * 4, dtype=object))
    with pytest.raises(UQEvalError, match=f"^dataset: domain {spelt!r} of 4 images"):
        score(dataset)


def test_evaluate_refuses_id_spelled_otherwise(tmp_path):
    dataset = open_cube(write_store(tmp_path / "cube.zarr", ["id"] * 4 + ["blur"] * 4))
    maps = decompose(np.asarray(dataset["probs"].values))
    with pytest.raises(UQEvalError) as info:
        evaluate(maps, ["ID"] * 4 + ["blur"] * 4)
    assert str(info.value) == (
        "evaluate: `domain`: domain 'ID' of 4 images looks like 'id' (in-distribution) but is spelled "
        "differently; write 'id'"
    )
    assert info.value.parameter == "domain"


# --------------------------------------------------------------------------- no ID image at all


@pytest.mark.cli
def test_cli_scores_a_store_without_id_with_one_warning(tmp_path):
    domains = ["blur", "noise"] * 6
    roles = ["calibration"] * 4 + ["test"] * 8
    path = write_store(tmp_path / "noid.zarr", domains, roles=roles)
    out = tmp_path / "out"
    result = run_cli("score", str(path), "--out", str(out), "--no-plots")
    assert result.returncode == 0, result.stdout + result.stderr
    notes = json.loads((out / "scores.json").read_text())["notes"]
    about_id = [note for note in notes if mentions_id(note)]
    assert len(about_id) == 1, notes
    warning = about_id[0]
    assert notes[0] == warning
    assert warning.startswith("warning: no image has the domain 'id' (in-distribution)")
    assert "oodd and cal are skipped" in warning
    assert "nothing is fitted" in warning
    assert "'blur', 'noise'" in warning
    # Nothing may claim a fit on ID images that do not exist.
    assert not any("fitted on" in note and "fitted on nor" not in note for note in notes), notes
    assert "4 OOD image(s) have role calibration; they are neither fitted on nor scored" in notes
    assert "warning: no image has the domain 'id'" in " ".join(result.stdout.split())


def test_no_id_and_no_labels_notes_do_not_contradict(tmp_path):
    path = write_store(tmp_path / "nolabels.zarr", ["blur", "noise"] * 4, raters=0)
    scores = score(path)
    assert note_texts(scores)[0].startswith("warning: no image has the domain 'id'")
    assert sum(mentions_id(note) for note in note_texts(scores)) == 1
    # AMB and FD need labels; CAL is skipped once, by the warning, not again for its labels.
    assert "amb: skipped, the store has no rater labels" in note_texts(scores)
    assert "fd: skipped, the store has no rater labels" in note_texts(scores)
    assert not any(note.startswith("cal:") for note in note_texts(scores))
    assert scores.results == []


@pytest.mark.parametrize(
    ("tasks", "says"),
    [
        (["oodd"], "so every image is scored as OOD: oodd is skipped (it needs ID images) and nothing is fitted"),
        (["amb", "fd"], "so every image is scored as OOD: nothing is fitted"),
    ],
)
def test_no_id_warning_names_only_the_requested_tasks_it_skips(tmp_path, tasks, says):
    path = write_store(tmp_path / "noid.zarr", ["blur"] * 8)
    scores = score(path, tasks=tasks)
    assert says in note_texts(scores)[0]
    assert {row["task"] for row in scores.results} == set(tasks) - {"oodd"}


# --------------------------------------------------------------------------- nothing to score


def test_a_store_of_calibration_images_only_is_refused(tmp_path):
    path = write_store(tmp_path / "calibration.zarr", ["id"] * 6 + ["blur"] * 2, roles=["calibration"] * 8)
    with pytest.raises(UQEvalError) as info:
        score(path)
    assert str(info.value) == (
        f"{path}: nothing to score: all 8 images have role 'calibration'; the images to score need role 'test'"
    )
    maps = decompose(np.asarray(open_cube(path)["probs"].values))
    with pytest.raises(UQEvalError, match=r"^evaluate: nothing to score: all 8 images have role 'calibration'"):
        evaluate(maps, ["id"] * 8, ["calibration"] * 8)


@pytest.mark.cli
def test_cli_refuses_a_store_of_calibration_images_only_with_one_line(tmp_path):
    path = write_store(tmp_path / "calibration.zarr", ["id"] * 4, roles=["calibration"] * 4)
    result = run_cli("score", str(path), "--out", str(tmp_path / "out"), "--no-plots")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert "nothing to score: all 4 images have role 'calibration'" in output
    assert str(path.name) in output
    assert not (tmp_path / "out" / "scores.json").exists()


# --------------------------------------------------------------------------- input images


def test_the_input_image_of_an_example_reaches_the_scoring_code(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(4, 2, SIZE, SIZE)).astype(np.float32)
    stored, path = _with_input(tmp_path, pixels)
    dataset = open_cube(path)
    for source in (cube_source(dataset, path), cube_source(dataset.load())):
        assert source.has_input
        np.testing.assert_array_equal(source.input_of(2), pixels[2])
        np.testing.assert_array_equal(source.read_input(np.array([1, 3])), pixels[[1, 3]])
    without = cube_source(stored, tmp_path / "plain.zarr")
    assert not without.has_input
    assert without.input_of(0) is None
    # Scoring a store with input images gives the same numbers as the store without them.
    assert score(path).results == score(tmp_path / "plain.zarr").results


def test_the_engine_fetches_the_input_and_labels_of_each_example_with_its_maps(tmp_path):
    pixels = np.arange(4 * SIZE * SIZE, dtype=np.float32).reshape(4, 1, SIZE, SIZE)
    _, path = _with_input(tmp_path, pixels)
    dataset = open_cube(path)
    labels = dataset["labels"].values
    for scores in (score(path), score(dataset.load())):
        assert scores.examples
        for example in scores.examples:
            np.testing.assert_array_equal(example.labels, labels[example.position])
            np.testing.assert_array_equal(example.input, pixels[example.position])
    maps = uqeval.decompose(dataset["probs"].values)
    evaluated = uqeval.evaluate(maps, dataset["domain"].values, None, labels, n_classes=2)
    assert evaluated.examples
    for example in evaluated.examples:
        np.testing.assert_array_equal(example.labels, labels[example.position])
        assert example.input is None  # maps in memory carry no input image
    unlabelled = score(dataset.drop_vars("labels"))
    assert unlabelled.examples and all(example.labels is None for example in unlabelled.examples)


def _with_input(tmp_path, pixels: np.ndarray):
    """A plain four-image store (id, id, blur, blur) and its copy with ``pixels`` as input images."""
    stored = open_cube(write_store(tmp_path / "plain.zarr", ["id", "id", "blur", "blur"]))
    path = tmp_path / "with-input.zarr"
    channels = pixels.shape[1]
    with uqeval.CubeWriter(
        path, n_classes=2, eu=3, au=4, height=SIZE, width=SIZE, raters=2, channels=channels
    ) as writer:
        writer.append(
            stored["probs"].values,
            stored["labels"].values,
            domain=list(stored["domain"].values),
            image_ids=list(stored["image"].values),
            input=pixels,
        )
    return stored, path
