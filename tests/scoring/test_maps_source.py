"""Scoring a maps store: the maps as given, no decomposition; the same scores as the cube the
maps came from, whether the store was written by CubeWriter or by xarray, images or volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli, write_synthetic_store

import uqeval
from uqeval import CubeWriter, UQEvalError, open_cube
from uqeval.names import SAMPLE_AGGREGATION
from uqeval.scoring.given_measures import ABSENT_KIND
from uqeval.scoring.sample_rows import NO_SAMPLES
from uqeval.tasks import TASKS


def maps_store_of(cube_path, path, *, chunk_images=4, measures=("au", "eu", "tu")):
    """The maps uqeval computes from the cube at ``cube_path``, written as a maps store
    (of ``measures`` alone)."""
    cube = open_cube(cube_path)
    maps = uqeval.decompose(cube["probs"].values)
    spatial = {dim: cube.sizes[dim] for dim in ("z", "y", "x") if dim in cube.sizes}
    with CubeWriter(
        path,
        n_classes=cube.sizes["class"],
        depth=spatial.get("z"),
        height=spatial["y"],
        width=spatial["x"],
        raters=cube.sizes["rater"],
        variable="maps",
        chunk_images=chunk_images,
        measures=measures,
    ) as writer:
        writer.append(
            maps={name: np.asarray(maps[name]) for name in ("mean", *measures)},
            labels=cube["labels"].values,
            domain=list(cube["domain"].values),
            role=list(cube["role"].values),
            image_ids=list(cube["image"].values),
        )
    return maps, cube


def comparable(scores) -> str:
    """Everything a run reports but its provenance, store path and notes, and the rows of
    the sample scores (a maps store has no samples)."""
    record = scores.to_dict()
    for name in ("provenance", "store", "notes", "model"):
        record.pop(name)
    record["results"] = [row for row in record["results"] if row["aggregation"] != SAMPLE_AGGREGATION]
    return json.dumps(record, sort_keys=True)


@pytest.mark.parametrize("shape", [None, (4, 8, 10)])
def test_scores_equal_those_of_the_cube_the_maps_came_from(tmp_path, shape):
    cube_path = tmp_path / "cube.zarr"
    if shape is None:
        write_synthetic_store(cube_path, n_images=24, size=12)
    else:
        uqeval.make_synthetic_cube(cube_path, "disentangled", n_images=24, shape=shape, eu=3, au=2, raters=2)
    maps_store_of(cube_path, tmp_path / "maps.zarr")
    from_cube = uqeval.score(cube_path, aggregations=["border", "mean", "threshold"])
    from_maps = uqeval.score(tmp_path / "maps.zarr", aggregations=["border", "mean", "threshold"])
    assert comparable(from_maps) == comparable(from_cube)
    assert from_maps.value("oodd", "ood", "eu", "auroc", "border") == from_cube.value("oodd", "ood", "eu", "auroc")
    # The sample scores need the samples: the cube has their rows, the maps store one note instead.
    assert {row["measure"] for row in from_cube.results if row["aggregation"] == SAMPLE_AGGREGATION} == {
        "pairwise_dice",
        "cov",
    }
    assert not [row for row in from_maps.results if row["aggregation"] == SAMPLE_AGGREGATION]
    assert [str(note) for note in from_maps.notes if note.kind == "skipped"] == [NO_SAMPLES]
    assert from_maps.images.sample_scores is None
    assert [
        note for note in from_maps.notes if note.kind != "maps-given" and str(note) != NO_SAMPLES
    ] == from_cube.notes
    [given] = [note for note in from_maps.notes if note.kind == "maps-given"]
    assert "taken as given" in given.text and "no EU floor" in given.text
    assert from_maps.eu_convention == "maps-as-given"


def test_a_maps_store_written_with_xarray_scores_as_the_cube(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    cube = open_cube(cube_path)
    maps = uqeval.decompose(cube["probs"].values)
    dataset = xr.Dataset(
        {
            "mean": (("image", "class", "y", "x"), np.asarray(maps["mean"])),
            **{name: (("image", "y", "x"), np.asarray(maps[name])) for name in ("au", "eu", "tu")},
            "labels": (("image", "rater", "y", "x"), cube["labels"].values),
            "domain": ("image", np.asarray(cube["domain"].values, dtype=object)),
            "role": ("image", np.asarray(cube["role"].values, dtype=object)),
        },
        coords={"image": np.asarray(cube["image"].values, dtype=object)},
        attrs={"schema": 1},
    )
    dataset.to_zarr(tmp_path / "x.zarr", zarr_format=3, consolidated=False)
    expected = comparable(uqeval.score(cube_path))
    assert comparable(uqeval.score(tmp_path / "x.zarr")) == expected
    assert comparable(uqeval.score(dataset)) == expected  # in memory


SCORED = {"aggregations": ["border", "mean", "threshold"], "tasks": ["oodd", "amb", "cal", "fd"]}


def same(first, second) -> bool:
    """Equal, NaN equal to NaN (as ``scores.json`` writes them)."""
    return json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def expected_without(full, given):
    """What a store that gives only ``given`` should report: ``full``'s rows of those
    measures, its Δ of the tasks whose measures it all gives, its collapse with AU and EU."""
    with_delta = [task for task in TASKS if TASKS[task].has_delta]
    kept = [task for task in with_delta if {TASKS[task].correct, *TASKS[task].wrong} <= set(given)]
    return {
        "results": [row for row in full.results if row["measure"] in given],
        "entanglement": [row for row in full.entanglement if row["task"] in kept],
        "collapse": full.collapse if {"au", "eu"} <= set(given) else [],
        "left_out": [task for task in with_delta if task not in kept],
    }


@pytest.mark.parametrize(
    ("given", "shape"),
    [(("au",), None), (("eu",), None), (("au", "eu"), None), (("tu",), None), (("au", "tu"), (4, 8, 10))],
)
def test_a_store_of_some_measures_scores_the_rows_they_allow_as_the_full_store(tmp_path, given, shape):
    cube_path = tmp_path / "cube.zarr"
    if shape is None:
        write_synthetic_store(cube_path, n_images=24, size=12)
    else:
        uqeval.make_synthetic_cube(cube_path, "disentangled", n_images=24, shape=shape, eu=3, au=2, raters=2)
    maps_store_of(cube_path, tmp_path / "full.zarr")
    maps_store_of(cube_path, tmp_path / "some.zarr", measures=given)
    full = uqeval.score(tmp_path / "full.zarr", **SCORED)
    some = uqeval.score(tmp_path / "some.zarr", **SCORED)
    expected = expected_without(full, given)

    assert same(some.results, expected["results"])
    assert same(some.entanglement, expected["entanglement"])
    assert same(some.collapse, expected["collapse"])
    assert some.measures == tuple(measure for measure in ("au", "eu", "tu") if measure in given)
    assert f"measures      {', '.join(some.measures)}" in repr(some)
    if not some.entanglement:
        assert "Δ: none (no task was scored on ID, pooled OOD or all test images with every measure it" in repr(some)
    # One note per task whose Δ is left out, naming what it compares and what is missing.
    absent = [note for note in some.notes if note.kind == ABSENT_KIND and note.task is not None]
    assert [note.task for note in absent] == expected["left_out"]
    for note in absent:
        assert f"Δ left out: it compares {TASKS[note.task].correct.upper()} with" in str(note)
        missing = {TASKS[note.task].correct, *TASKS[note.task].wrong} - set(given)
        assert all(measure.upper() in str(note).split("has no")[1] for measure in missing)
    collapse_notes = [note for note in some.notes if note.kind == ABSENT_KIND and note.task is None]
    assert len(collapse_notes) == (0 if {"au", "eu"} <= set(given) else 1)
    # Every other note is one the full store makes too, and none is about a missing measure;
    # the note on AUROCs below 0.5 names measures one by one, the given ones only.
    others = [note for note in some.notes if note.kind not in (ABSENT_KIND, "auroc-below-chance")]
    assert all(note in full.notes for note in others)
    for note in (note for note in some.notes if note.kind == "auroc-below-chance"):
        named = {measure for measure in ("au", "eu", "tu") if f"{measure.upper()} with " in str(note)}
        assert named and named <= set(given)
        # Each measure's part is the full store's.
        whole = next(str(n) for n in full.notes if n.kind == "auroc-below-chance")
        for measure in named:
            part = str(note).split(f"{measure.upper()} with ")[1].split(")")[0]
            assert part in whole
    assert all(note.measure in (None, *given) for note in some.notes)

    # Per image, fits and curves: the given measures' values, nothing of the others.
    full_rows, some_rows = full.image_rows(), some.image_rows()
    for full_row, some_row in zip(full_rows, some_rows, strict=True):
        assert same(
            some_row,
            {
                key: value
                for key, value in full_row.items()
                if not key.endswith(("_au", "_eu", "_tu")) or key.rsplit("_", 1)[1] in given
            },
        )
    fitted = some.fitted.to_dict()
    assert set(fitted["platt"]) == set(given) and set(fitted["thresholds"]) == set(given)
    assert fitted["platt"] == {m: v for m, v in full.fitted.to_dict()["platt"].items() if m in given}
    assert {measure for _, measure in some.reliability} == set(given)
    assert set(some.roc_curves()["blur"]) == set(given)
    for example in some.examples:
        assert all((getattr(example, measure) is None) == (measure not in given) for measure in ("au", "eu", "tu"))


def test_a_store_of_some_measures_scores_alike_from_memory_and_on_disk(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    maps_store_of(cube_path, tmp_path / "some.zarr", measures=("eu", "tu"))
    on_disk = uqeval.score(tmp_path / "some.zarr")
    in_memory = uqeval.score(open_cube(tmp_path / "some.zarr").load())
    assert comparable(in_memory) == comparable(on_disk)
    assert [str(note) for note in in_memory.notes] == [str(note) for note in on_disk.notes]


def test_eu_rescaling_without_au_or_eu_is_refused(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=8, size=8)
    maps_store_of(cube_path, tmp_path / "m.zarr", measures=("eu", "tu"))
    with pytest.raises(
        UQEvalError, match=r"EU rescaling \(r = ΣAU / ΣEU\) needs AU and EU, and the maps store has no AU"
    ):
        uqeval.score(tmp_path / "m.zarr", conventions=uqeval.Conventions(rescale_eu=True))


@pytest.mark.cli
def test_uqeval_score_reports_a_store_of_some_measures(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    maps_store_of(cube_path, tmp_path / "au.zarr", measures=("au",))
    result = run_cli("score", str(tmp_path / "au.zarr"), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert "Δ left out: it compares EU with AU, and the maps store has no EU map" in result.stdout
    assert "Epistemic collapse" not in result.stdout and "Entanglement" not in result.stdout
    assert "│ AU" in result.stdout and "│ EU" not in result.stdout and "│ TU" not in result.stdout
    report = tmp_path / "report"
    assert {"metrics.csv", "entanglement.csv", "images.csv", "scores.json", "maps.png", "roc.png"} <= {
        path.name for path in report.iterdir()
    }
    written = json.loads((report / "scores.json").read_text())
    assert {row["measure"] for row in written["results"]} == {"au", "mean"} and written["entanglement"] == []
    assert "mean_au" in (report / "images.csv").read_text() and "mean_eu" not in (report / "images.csv").read_text()
    shown = run_cli("inspect", str(tmp_path / "au.zarr"))
    assert shown.returncode == 0, shown.stderr
    assert "maps store (AU as given)" in shown.stdout


@pytest.mark.cli
def test_a_store_of_mean_and_no_measure_is_one_clear_error(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=8, size=8)
    maps = uqeval.decompose(open_cube(cube_path)["probs"].values)
    dataset = xr.Dataset({"mean": (("image", "class", "y", "x"), np.asarray(maps["mean"]))}, attrs={"schema": 1})
    dataset.to_zarr(tmp_path / "m.zarr", zarr_format=3, consolidated=False)
    result = run_cli("score", str(tmp_path / "m.zarr"), "--no-plots")
    assert result.returncode == 2
    assert "has `mean` but none of `au`, `eu` and `tu`; a maps store gives at least one" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.cli
def test_uqeval_score_says_the_maps_were_taken_as_given(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    maps_store_of(cube_path, tmp_path / "maps.zarr")
    result = run_cli("score", str(tmp_path / "maps.zarr"), "--no-plots")
    assert result.returncode == 0, result.stderr
    assert "taken as given" in result.stdout


def test_a_maps_store_scored_on_a_cluster_gives_the_local_numbers(tmp_path):
    distributed = pytest.importorskip("distributed")  # the cluster extra, which `make` installs
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    maps_store_of(cube_path, tmp_path / "maps.zarr", chunk_images=2)
    local = uqeval.score(tmp_path / "maps.zarr", batch_bytes=4096)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = uqeval.score(
            tmp_path / "maps.zarr", batch_bytes=4096, scheduler=cluster.scheduler_address, scratch=tmp_path
        )
    assert {"pavpu", "augrc", "eaugrc"} <= {row["metric"] for row in local.results}
    assert comparable(remote) == comparable(local)


@pytest.mark.parametrize("measures", [("au", "eu", "tu"), ("eu",)])
def test_volumes_of_a_maps_store_larger_than_a_batch_are_read_in_slabs(tmp_path, measures):
    """A maps store's volumes stream in z-slabs like a cube's: the same scores, to float
    rounding; a store of some measures too (their stand-ins come with each slab)."""
    cube_path = tmp_path / "cube.zarr"
    uqeval.make_synthetic_cube(cube_path, "disentangled", n_images=16, shape=(6, 8, 10), eu=3, au=2, raters=2)
    maps_store_of(cube_path, tmp_path / "maps.zarr", chunk_images=1, measures=measures)
    options = {"aggregations": ["border", "patch_max"], "tasks": ["oodd", "amb", "cal", "fd", "pq"]}
    whole = uqeval.score(tmp_path / "maps.zarr", **options)
    streamed = uqeval.score(tmp_path / "maps.zarr", batch_bytes=64, **options)

    def key(row):
        return row["task"], row["split"], row["measure"], row["metric"], row.get("aggregation")

    expected = {key(row): row["value"] for row in whole.results}
    assert len(expected) == len(streamed.results)
    assert {row["measure"] for row in streamed.results} == {*measures, "mean"}  # pq scores the mean prediction
    for row in streamed.results:
        value = expected[key(row)]
        assert value == pytest.approx(row["value"], rel=1e-9, abs=1e-12, nan_ok=True), row
