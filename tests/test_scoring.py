"""The streaming scorer :func:`uqeval.score`: exact, batch-independent, one pass, bounded memory.

Every number of ``score(store)`` is checked against :func:`uqeval.evaluate` on the
whole cube decomposed in memory (the in-memory reference), for each convention that
changes the pipeline and for batches of one chunk as well as one batch for the store.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import note_texts, write_synthetic_store
from sklearn.metrics import roc_curve as sklearn_roc_curve

import uqeval.scoring.batch
import uqeval.scoring.store_reader
from uqeval import UQEvalError, decompose, evaluate, open_cube, save_report, score, validate_cube
from uqeval.conventions import Conventions, preset
from uqeval.names import SAMPLE_AGGREGATION
from uqeval.ownership import REPORT_MARK
from uqeval.results import METRIC_COLUMNS, SCORES_SCHEMA, Scores
from uqeval.scoring.sample_rows import NO_SAMPLES, ONE_MEMBER
from uqeval.synth import image_plan

SIZE = 32
EU, AU = 3, 4
RATERS = 3
CHUNK = 4
N_IMAGES = 24
#: One batch per chunk (a batch never splits a chunk) and one batch for the whole store.
TINY, HUGE = 1, 2**40
SPILL_PREFIX = "uqeval-spill-"
TOP_LEVEL_KEYS = (
    "schema",
    "store",
    "model",
    "provenance",
    "conventions",
    "numerics",
    "n_images",
    "results",
    "entanglement",
    "collapse",
    "notes",
)


# --------------------------------------------------------------------------- stores


def write_store(path: Path, *, scenario: str = "disentangled", seed: int = 0, **options) -> Path:
    """This module's synthetic stores: 24 images of 32×32, 3 members × 4 samples, 3 raters,
    4 images per chunk, with a model identity (see :func:`helpers.write_synthetic_store`)."""
    defaults = {"size": SIZE, "eu": EU, "au": AU, "raters": RATERS, "chunk_images": CHUNK, "n_images": N_IMAGES}
    identity = {"au_method": "test-au", "eu_method": "test-eu", "model": f"test-{scenario}", "dataset": "test"}
    return write_synthetic_store(
        path, scenario=scenario, image_seed=seed, **(defaults | options), **identity, seed=seed
    )


def reference(source: Path | xr.Dataset, *, segmentation: bool = False, **options):
    """:func:`evaluate` on the whole cube decomposed in memory: what ``score`` must equal."""
    dataset = open_cube(source) if isinstance(source, Path) else validate_cube(source)
    probs = np.asarray(dataset["probs"].values)
    labels = np.asarray(dataset["labels"].values) if "labels" in dataset else None
    return evaluate(
        decompose(probs),
        dataset["domain"].values,
        dataset["role"].values,
        labels,
        n_classes=probs.shape[3],
        background=int(dataset.attrs.get("background", 0)),
        cubes=probs if segmentation else None,
        **options,
    )


def same_value(actual, expected, tolerance: float = 1e-12) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        if actual is None or expected is None:
            return actual is expected
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        return abs(actual - expected) <= tolerance * max(1.0, abs(expected))
    return actual == expected


def assert_rows_equal(actual: list[dict], expected: list[dict], tolerance: float = 1e-12) -> None:
    """The same rows in the same order; floats equal up to ``tolerance`` (NaN equals NaN)."""
    assert len(actual) == len(expected), (len(actual), len(expected))
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got.keys() == want.keys(), (index, got, want)
        for key in want:
            assert same_value(got[key], want[key], tolerance), (index, key, got, want)


def assert_same_scores(actual, expected, tolerance: float = 1e-12) -> None:
    """The same rows and notes; against a :func:`reference` of maps alone, which has no
    samples, ``actual``'s rows of the sample scores (tested in
    tests/scoring/test_sample_rows.py) are left out, and ``expected``'s note that says so."""
    results, notes, expected_notes = actual.results, actual.notes, expected.notes
    if expected.images.sample_scores is None and actual.images.sample_scores is not None:
        results = [row for row in results if row["aggregation"] != SAMPLE_AGGREGATION]
        notes = [note for note in notes if str(note) != ONE_MEMBER]
        expected_notes = [note for note in expected_notes if str(note) != NO_SAMPLES]
    assert_rows_equal(results, expected.results, tolerance)
    assert_rows_equal(actual.entanglement, expected.entanglement, tolerance)
    assert_rows_equal(actual.collapse, expected.collapse, tolerance)
    assert notes == expected_notes
    assert actual.n_images == expected.n_images


def spill_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{SPILL_PREFIX}*")) if folder.exists() else []


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """24 images (ID with calibration images, OOD blur and noise), 4 images per chunk; two
    images have unanimous raters (a constant ground-truth map)."""
    return write_store(tmp_path_factory.mktemp("scoring") / "cube.zarr", unanimous=lambda index, _: index in (3, 8))


@pytest.fixture(scope="module")
def cube(store):
    """The store's arrays, loaded whole (for the references)."""
    dataset = open_cube(store)
    return {
        "probs": np.asarray(dataset["probs"].values),
        "labels": np.asarray(dataset["labels"].values),
        "domain": dataset["domain"].values,
        "role": dataset["role"].values,
        "ids": dataset["image"].values,
    }


@pytest.fixture(scope="module")
def default_scores(store) -> Scores:
    return score(store)


# --------------------------------------------------------------------------- 1. exact, any batching

AGGREGATIONS = ("threshold", "patch_max", "mean", "sum", "area")
SETTINGS = {
    "default": ({}, {}),
    "aggregations": ({"aggregations": AGGREGATIONS}, {"aggregations": AGGREGATIONS}),
    "rescale_eu": ({"conventions": Conventions(rescale_eu=True)}, {"conventions": Conventions(rescale_eu=True)}),
    "ace_per_image": (
        {"conventions": Conventions(ace_scope="per-image")},
        {"conventions": Conventions(ace_scope="per-image")},
    ),
    "preset_paper": ({"preset": "paper"}, {"conventions": preset("paper")}),
    "segmentation": ({"segmentation": True}, {"segmentation": True}),
    "threshold_primary": (
        {"conventions": Conventions(aggregation="threshold"), "aggregations": ("border",)},
        {"conventions": Conventions(aggregation="threshold"), "aggregations": ("border",)},
    ),
    "oodd_only": ({"tasks": ("oodd",)}, {"tasks": ("oodd",)}),
}


@pytest.fixture(scope="module")
def references(store):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = reference(store, **SETTINGS[name][1])
        return cache[name]

    return get


@pytest.mark.parametrize("batch_bytes", [TINY, HUGE], ids=["chunk-per-batch", "one-batch"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_score_equals_in_memory_evaluate(store, references, setting, batch_bytes):
    options, _ = SETTINGS[setting]
    scores = score(store, batch_bytes=batch_bytes, **options)
    expected = references(setting)
    assert_same_scores(scores, expected)
    # Per-image statistics too, image for image (store order, not batch order).
    for measure in ("au", "eu", "tu"):
        np.testing.assert_array_equal(scores.images.means[measure], expected.images.means[measure])
        for aggregation, by_measure in expected.images.scores.items():
            np.testing.assert_allclose(
                scores.images.scores[aggregation][measure], by_measure[measure], rtol=1e-12, atol=0
            )
    assert scores.fitted.to_dict() == expected.fitted.to_dict()


def test_settings_change_the_numbers(references):
    """The settings above are not no-ops on this store (else the equality proves little)."""
    default = references("default")
    for setting in ("rescale_eu", "ace_per_image", "preset_paper", "segmentation", "aggregations"):
        assert references(setting).results != default.results, setting
    assert any(row["aggregation"] == "threshold" for row in references("aggregations").results)
    assert any(row["task"] == "segmentation" for row in references("segmentation").results)


def test_batching_does_not_change_any_number(store):
    sizes = open_cube(store)["probs"]
    image_bytes = int(np.prod([sizes.sizes[d] for d in sizes.dims[1:]])) * sizes.dtype.itemsize
    runs = {}
    for batch_bytes in (TINY, int(2.5 * CHUNK * image_bytes), HUGE):
        calls = []
        runs[batch_bytes] = score(
            store,
            batch_bytes=batch_bytes,
            aggregations=("border", "threshold"),
            segmentation=True,
            progress=lambda phase, done, total, calls=calls: calls.append((phase, done, total)),
        )
        score_calls = [call for call in calls if call[0] == "score"]
        assert score_calls[-1][1:] == (N_IMAGES, N_IMAGES)
        if batch_bytes == TINY:
            assert len(score_calls) == N_IMAGES // CHUNK  # really one chunk per batch
        if batch_bytes == HUGE:
            assert len(score_calls) <= 2  # fitting chunks and the rest
    baseline = runs[HUGE]
    for batch_bytes, scores in runs.items():
        assert_same_scores(scores, baseline, tolerance=0.0)
        assert_rows_equal(scores.image_rows(), baseline.image_rows(), tolerance=0.0)
        assert [e.image_id for e in scores.examples] == [e.image_id for e in baseline.examples], batch_bytes


def test_progress_counts_every_image(store):
    calls = []
    score(store, batch_bytes=TINY, progress=lambda *call: calls.append(call))
    phases = {phase for phase, _, _ in calls}
    assert phases <= {"score", "calibrate"}
    for phase in phases:
        done = [d for p, d, _ in calls if p == phase]
        assert done == sorted(done)
        assert all(total == N_IMAGES for p, _, total in calls if p == phase)
    assert [d for p, d, _ in calls if p == "score"][-1] == N_IMAGES


# --------------------------------------------------------------------------- 2. kinds of stores


def test_no_labels_skips_amb_and_cal(tmp_path):
    path = write_store(tmp_path / "nolabels.zarr", raters=0)
    scores = score(path, segmentation=True, aggregations=("border", "threshold"))
    assert {row["task"] for row in scores.results} == {"oodd"}
    assert "amb: skipped, the store has no rater labels" in note_texts(scores)
    assert "cal: skipped, the store has no rater labels" in note_texts(scores)
    assert "pq: skipped, the store has no rater labels" in note_texts(scores)
    assert any(note.startswith("segmentation: skipped") for note in note_texts(scores))
    assert_same_scores(scores, reference(path, segmentation=True, aggregations=("border", "threshold")))
    assert "ncc_au" not in scores.image_rows()[0]


def test_no_ood_images_skips_oodd(tmp_path):
    layout = [("id", "calibration" if i % 3 == 0 else "test") for i in range(12)]
    path = write_store(tmp_path / "idonly.zarr", layout=layout)
    scores = score(path)
    assert not any(row["task"] == "oodd" for row in scores.results)
    assert any(note.startswith("oodd: skipped") and "OOD" in note for note in note_texts(scores))
    assert {row["task"] for row in scores.results} == {"amb", "cal", "fd", "pq"}
    assert_same_scores(scores, reference(path))


def test_no_id_images(tmp_path):
    layout = [("blur" if i % 2 else "noise", "test") for i in range(8)]
    path = write_store(tmp_path / "oodonly.zarr", layout=layout)
    scores = score(path)
    # One warning, first, says that nothing is ID and what that skips; no other note repeats it.
    warning = note_texts(scores)[0]
    assert warning.startswith("warning: no image has the domain 'id'")
    assert "oodd and cal are skipped" in warning
    assert "'blur', 'noise'" in warning
    assert not any(note.startswith(("oodd:", "cal:", "no calibration images")) for note in note_texts(scores))
    assert not any(row["task"] in ("oodd", "cal") for row in scores.results)
    assert_same_scores(scores, reference(path))
    with pytest.raises(UQEvalError, match="no ID images"):
        score(path, aggregations=("border", "threshold"))


def test_no_calibration_role_falls_back_to_id_test_images(tmp_path):
    layout = [(domain, "test") for domain, _ in image_plan(16)]
    path = write_store(tmp_path / "nocal.zarr", layout=layout)
    scores = score(path, aggregations=("border", "threshold"))
    assert any(note.startswith("no calibration images") for note in note_texts(scores))
    assert scores.fitted.images_from == "test"
    assert_same_scores(scores, reference(path, aggregations=("border", "threshold")))


def test_one_member_treats_samples_as_members(tmp_path):
    path = write_store(tmp_path / "noeu.zarr", scenario="no-eu", eu=1, au=AU)
    scores = score(path, aggregations=("border", "threshold"))
    assert scores.eu_convention == "samples-as-members"
    assert_same_scores(scores, reference(path, aggregations=("border", "threshold")))
    # No pair of members for pairwise Dice: NaN, no rows, one note; the CoV is over the samples.
    assert np.isnan(scores.images.sample_scores["pairwise_dice"]).all()
    assert {row["measure"] for row in scores.results if row["aggregation"] == "samples"} == {"cov"}
    assert [str(note) for note in scores.notes].count(ONE_MEMBER) == 1
    # EU is the mutual information over the samples, not zero.
    assert max(row["mean_eu"] for row in scores.image_rows()) > 0


def test_logits_store_scores_like_its_softmax(tmp_path):
    logits = write_store(tmp_path / "logits.zarr", variable="logits", dtype="float32")
    probs = write_store(tmp_path / "probs.zarr", from_logits=True, dtype="float32")
    assert "logits" in zarr.open_group(logits, mode="r") and "probs" not in zarr.open_group(logits, mode="r")
    from_logits = score(logits, batch_bytes=TINY, aggregations=("border", "threshold"))
    from_probs = score(probs, batch_bytes=TINY, aggregations=("border", "threshold"))
    assert_same_scores(from_logits, from_probs, tolerance=0.0)
    assert_rows_equal(from_logits.image_rows(), from_probs.image_rows(), tolerance=0.0)
    assert_same_scores(from_logits, reference(logits, aggregations=("border", "threshold")))


def test_dataset_source_equals_its_store(store, default_scores):
    loaded = xr.open_zarr(store, consolidated=False).load()
    from_memory = score(loaded, batch_bytes=TINY)
    assert from_memory.store is None
    assert_same_scores(from_memory, default_scores, tolerance=0.0)
    assert_rows_equal(from_memory.image_rows(), default_scores.image_rows(), tolerance=0.0)
    lazy = score(xr.open_zarr(store, consolidated=False), batch_bytes=TINY)
    assert_same_scores(lazy, default_scores, tolerance=0.0)


def test_dataset_from_numpy_with_fixed_width_strings(cube, default_scores):
    """A Dataset a user builds in memory: fixed-width numpy unicode for ids, domain and role."""
    dataset = xr.Dataset(
        {
            "probs": (("image", "eu", "au", "class", "y", "x"), cube["probs"]),
            "labels": (("image", "rater", "y", "x"), cube["labels"]),
            "domain": ("image", np.asarray(cube["domain"], dtype="U5")),
            "role": ("image", np.asarray(cube["role"], dtype="U11")),
        },
        coords={"image": np.asarray(cube["ids"], dtype="U9")},
        attrs={"schema": 1, "au_method": "test-au"},
    )
    scores = score(dataset)
    assert_same_scores(scores, default_scores, tolerance=0.0)
    assert [row["image"] for row in scores.image_rows()] == [str(i) for i in cube["ids"]]


# --------------------------------------------------------------------------- 3. the spill folder


@pytest.mark.parametrize("source", ["path", "dask-backed Dataset"])
def test_spill_folder_is_used_then_removed(store, tmp_path, source):
    scratch = tmp_path / "scratch"
    seen: list[list[str]] = []

    def progress(phase, done, total):
        seen.append([p.name for p in spill_folders(scratch) if any(p.iterdir())])

    cube = store if source == "path" else open_cube(store)  # a Dataset may be larger than memory too
    score(cube, scratch=scratch, batch_bytes=TINY, aggregations=("border", "threshold"), progress=progress)
    assert any(seen), "the per-image maps were never spilled to the scratch folder"
    assert spill_folders(scratch) == []
    assert not scratch.exists() or list(scratch.iterdir()) == []


def test_default_scratch_is_the_temporary_folder(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []
    score(store, batch_bytes=TINY, progress=lambda *call: seen.append(bool(spill_folders(tmp_path))))
    assert any(seen)
    assert spill_folders(tmp_path) == []


@pytest.fixture(scope="module")
def late_nan_store(tmp_path_factory) -> Path:
    """The store with one NaN in image 21 (of 24): found only after several batches are spilled."""
    path = write_store(tmp_path_factory.mktemp("nan") / "late-nan.zarr")
    probs = zarr.open_group(path, mode="r+")["probs"]
    image = probs[21]
    image[1, 2, 0, 5, 7] = np.nan
    probs[21] = image
    return path


@pytest.mark.parametrize("scratch", ["given", "default"])
def test_error_midway_names_the_image_and_removes_the_spill(late_nan_store, tmp_path, monkeypatch, scratch):
    folder = tmp_path / "scratch"
    if scratch == "default":
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calls = []
    with pytest.raises(UQEvalError) as caught:
        score(
            late_nan_store,
            scratch=folder if scratch == "given" else None,
            batch_bytes=TINY,
            progress=lambda *call: calls.append(call),
        )
    message = str(caught.value)
    assert f"'{open_cube(late_nan_store)['image'].values[21]}'" in message
    assert "NaN" in message
    assert str(late_nan_store) in message
    assert calls, "the error should come after some batches were scored"
    assert spill_folders(folder) == [] and spill_folders(tmp_path) == []


def test_any_exception_in_the_fit_removes_the_spill(store, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(uqeval.scoring.batch, "image_statistics", broken)
    with pytest.raises(RuntimeError, match="boom"):
        score(store, scratch=tmp_path, batch_bytes=TINY)
    assert spill_folders(tmp_path) == []


# --------------------------------------------------------------------------- 4. dask.distributed


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as local_cluster:
        yield local_cluster


@pytest.mark.parametrize(
    "options",
    [{}, {"aggregations": ("threshold",), "segmentation": True}, {"bootstrap": 40, "seed": 3}],
    ids=["default", "threshold-segmentation", "bootstrap"],
)
def test_scheduler_gives_the_local_numbers(store, cluster, options, tmp_path):
    local = score(store, batch_bytes=TINY, **options)
    remote = score(store, batch_bytes=TINY, scheduler=cluster.scheduler_address, scratch=tmp_path, **options)
    assert {"pavpu", "augrc", "eaugrc", "nll_ts"} <= {row["metric"] for row in remote.results}
    assert {"pairwise_dice", "cov"} <= {row["measure"] for row in remote.results}
    if "bootstrap" in options:  # the same seed gives the same intervals on the cluster
        intervals = [(row["ci_low"], row["ci_high"]) for row in remote.results + remote.entanglement]
        assert intervals == [(row["ci_low"], row["ci_high"]) for row in local.results + local.entanglement]
        assert all(not np.isnan(low) for low, _ in intervals[:10])
    assert_same_scores(remote, local, tolerance=0.0)
    assert_rows_equal(remote.image_rows(), local.image_rows(), tolerance=0.0)
    assert [e.image_id for e in remote.examples] == [e.image_id for e in local.examples]
    assert spill_folders(tmp_path) == []


def test_scheduler_refuses_a_dataset(store, cluster):
    with pytest.raises(UQEvalError, match="pass a store path, not data in memory") as raised:
        score(xr.open_zarr(store, consolidated=False).load(), scheduler=cluster.scheduler_address)
    assert raised.value.parameter == "scheduler"
    assert "--" not in str(raised.value)  # the library names no CLI flag


def test_unreachable_scheduler_fails_with_a_clear_error(store):
    pytest.importorskip("distributed")
    started = time.monotonic()
    with pytest.raises(UQEvalError, match=r"^scheduler tcp://127\.0\.0\.1:1: cannot connect") as raised:
        score(store, scheduler="tcp://127.0.0.1:1")
    assert raised.value.parameter == "scheduler"
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------- 5. Scores


@pytest.fixture(scope="module")
def nan_store(tmp_path_factory) -> Path:
    """Unanimous raters on the noise domain: NCC there is undefined (NaN), as is its Δ."""
    return write_store(
        tmp_path_factory.mktemp("scores") / "unanimous.zarr", unanimous=lambda _, domain: domain == "noise"
    )


@pytest.fixture(scope="module")
def nan_scores(nan_store) -> Scores:
    return score(nan_store, aggregations=("border", "threshold"))


def test_to_dict_is_scores_json(nan_scores, nan_store):
    content = nan_scores.to_dict()
    assert tuple(content) == TOP_LEVEL_KEYS
    assert content["schema"] == SCORES_SCHEMA == "uqeval.scores/1"
    assert content["store"] == str(nan_store.resolve())
    assert content["model"]["au_method"] == "test-au" and content["model"]["eu_method"] == "test-eu"
    assert content["conventions"] == Conventions().to_dict()
    assert content["numerics"] == {
        "eu_floor": 2.0**-18,
        "constant_tolerance": 2.0**-18,
        "rank_tolerance": {"auroc": 1e-3, "ncc": 1e-4, "ace": 1e-3, "aurc": 1e-3},
    }
    assert content["n_images"] == {"id": 8, "blur": 6, "noise": 6}
    text = json.dumps(content, allow_nan=False)  # NaN would raise
    assert json.loads(text) == content
    nan_rows = [i for i, row in enumerate(nan_scores.results) if math.isnan(row["value"])]
    assert nan_rows, "the unanimous domain should give an undefined NCC"
    for index in nan_rows:
        assert content["results"][index]["value"] is None
    assert any(row["delta"] is None for row in content["entanglement"])
    for got, want in zip(content["results"], nan_scores.results, strict=True):
        assert same_value(got["value"], None if math.isnan(want["value"]) else want["value"], 0.0)


def test_to_dataframe(nan_scores):
    frame = nan_scores.to_dataframe()
    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert len(frame) == len(nan_scores.results)
    assert frame.to_dict("records")[0] == nan_scores.results[0]


def test_image_rows_match_an_independent_recomputation(default_scores, cube):
    rows = default_scores.image_rows()
    assert len(rows) == N_IMAGES
    assert [row["image"] for row in rows] == list(cube["ids"])
    assert [row["domain"] for row in rows] == list(cube["domain"])
    assert [row["role"] for row in rows] == list(cube["role"])
    for index in (0, 5, 13, 22):
        probs = cube["probs"][index].astype(np.float64)
        members = probs.mean(axis=1)  # (eu, class, y, x)
        mean = members.mean(axis=0)

        def entropy(p):
            return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0), axis=-3)

        tu = entropy(mean)
        au = entropy(members).mean(axis=0)
        eu = np.maximum(tu - au, 0)
        row = rows[index]
        for name, values in (("au", au), ("eu", eu), ("tu", tu)):
            assert row[f"mean_{name}"] == pytest.approx(values.mean(), rel=1e-5, abs=1e-7)
        pred = np.argmax(mean, axis=0)
        border = np.sum(pred[1:] != pred[:-1]) + np.sum(pred[:, 1:] != pred[:, :-1])
        assert row["border_au"] == pytest.approx(au.sum() / max(border, 1), rel=1e-5)
        labels = cube["labels"][index]
        variance = sum(((labels == c).astype(np.float64)).var(axis=0) for c in range(2))
        assert row["ncc_au"] == pytest.approx(np.corrcoef(variance.ravel(), au.ravel())[0, 1], abs=1e-5)


def test_pavpu_and_augrc_rows_match_numpy_definitions(default_scores, cube):
    """PAvPU per measure on the CAL splits and AUGRC/E-AUGRC of each FD split, from the
    decomposed maps, the raters and the image scores by plain numpy (the definitions of
    docs/metrics.md: τ at the calibration accuracy, the fd-shifts trapezoid)."""
    maps = decompose(cube["probs"])
    labels = cube["labels"]
    pred = np.asarray(maps["pred"])
    valid = (labels != 255).sum(axis=1)
    agree = ((labels == pred[:, None]) & (labels != 255)).sum(axis=1)
    counted = valid > 0
    right = 2 * agree >= valid
    calibration = (cube["role"] == "calibration") & (cube["domain"] == "id")
    level = right[calibration][counted[calibration]].mean()
    rows = default_scores.image_rows()
    for measure in ("au", "eu", "tu"):
        u = np.asarray(maps[measure])
        tau = np.quantile(u[calibration][counted[calibration]], level)
        assert default_scores.fitted.pavpu_thresholds[measure] == pytest.approx(float(tau), abs=0)
        for split in ("id", "blur", "noise", "ood"):
            images = cube["role"] == "test"
            images &= cube["domain"] != "id" if split == "ood" else cube["domain"] == split
            keep = counted[images]
            good = (right[images] & (u[images] < tau)) | (~right[images] & (u[images] >= tau))
            assert default_scores.value("cal", split, measure, "pavpu") == pytest.approx(good[keep].mean(), abs=1e-15)
        for split in ("id", "all"):
            images = cube["role"] == "test"
            if split == "id":
                images &= cube["domain"] == "id"
            scores = np.array([row[f"border_{measure}"] for row in rows])[images]
            risks = np.array([row["failure_risk"] for row in rows])[images]

            def area(order_by, risks=risks):
                order = np.argsort(order_by, kind="stable")
                ends = np.r_[np.flatnonzero(np.diff(order_by[order]) != 0), len(order) - 1]
                coverage = np.r_[0, ends + 1] / len(order)
                return np.trapezoid(np.r_[0, np.cumsum(risks[order])[ends]] / len(order), coverage)

            value = default_scores.value("fd", split, measure, "augrc")
            assert value == pytest.approx(area(scores), abs=1e-14)
            excess = default_scores.value("fd", split, measure, "eaugrc")
            assert excess == pytest.approx(area(scores) - area(risks), abs=1e-14)


def test_save_writes_the_report_atomically(nan_scores, tmp_path):
    written = save_report(nan_scores, tmp_path / "report")
    names = {path.name for path in written}
    expected = {
        "scores.json",
        "metrics.csv",
        "entanglement.csv",
        "images.csv",
        "fitted.json",
        "roc.png",
        "reliability.png",
        "maps.png",
        "roc.svg",
        "reliability.svg",
        "maps.svg",
        "report.html",
    }
    assert names == expected
    # No temporary files left; the mark of a complete report beside them.
    assert {path.name for path in (tmp_path / "report").iterdir()} == {*expected, REPORT_MARK}
    assert json.loads((tmp_path / "report" / "scores.json").read_text()) == nan_scores.to_dict()
    with open(tmp_path / "report" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(nan_scores.results)
    for got, want in zip(rows, nan_scores.results, strict=True):
        assert tuple(got) == METRIC_COLUMNS
        for column in METRIC_COLUMNS[:-1]:
            assert got[column] == want[column]
        value = float("nan") if got["value"] == "" else float(got["value"])
        assert same_value(value, want["value"], 0.0)
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(tmp_path / "report" / "metrics.csv", keep_default_na=False, na_values=[""])
    pandas.testing.assert_frame_equal(frame, nan_scores.to_dataframe(), check_dtype=False)
    images = pandas.read_csv(tmp_path / "report" / "images.csv")
    assert len(images) == N_IMAGES
    assert list(images["image"]) == [row["image"] for row in nan_scores.image_rows()]
    fitted = json.loads((tmp_path / "report" / "fitted.json").read_text())
    assert fitted["images_from"] == "calibration" and set(fitted["thresholds"]) == {"au", "eu", "tu"}
    for name in ("roc.png", "reliability.png", "maps.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_without_plots(default_scores, tmp_path):
    written = save_report(default_scores, tmp_path, plots=False)
    assert sorted(written) == sorted(path for path in tmp_path.iterdir() if path.name != REPORT_MARK)
    assert not list(tmp_path.glob("*.png"))
    assert {path.name for path in tmp_path.iterdir()} == {
        "scores.json",
        "metrics.csv",
        "entanglement.csv",
        "images.csv",
        "fitted.json",
        "report.html",
        REPORT_MARK,
    }


def test_roc_curves_equal_scikit_learn(nan_scores):
    rows = nan_scores.image_rows()
    domains = np.array([row["domain"] for row in rows])
    test = np.array([row["role"] == "test" for row in rows])
    for aggregation in (None, "threshold"):
        curves = nan_scores.roc_curves(aggregation)
        assert set(curves) == {"blur", "noise"}
        column = aggregation or "border"
        for domain, by_measure in curves.items():
            chosen = test & np.isin(domains, ["id", domain])
            for measure, (fpr, tpr) in by_measure.items():
                values = np.array([row[f"{column}_{measure}"] for row in rows])[chosen]
                want_fpr, want_tpr, _ = sklearn_roc_curve(domains[chosen] == domain, values, drop_intermediate=False)
                np.testing.assert_allclose(fpr, want_fpr, rtol=0, atol=1e-15)
                np.testing.assert_allclose(tpr, want_tpr, rtol=0, atol=1e-15)
    pooled = nan_scores.roc_curves(pooled=True)  # the split Δ uses: every OOD test image a positive
    assert list(pooled) == ["blur", "noise", "ood"]
    values = np.array([row["border_eu"] for row in rows])[test]
    want_fpr, want_tpr, _ = sklearn_roc_curve(domains[test] != "id", values, drop_intermediate=False)
    np.testing.assert_allclose(pooled["ood"]["eu"][0], want_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pooled["ood"]["eu"][1], want_tpr, rtol=0, atol=1e-15)
    auroc = np.trapezoid(pooled["ood"]["eu"][1], pooled["ood"]["eu"][0])
    assert auroc == pytest.approx(nan_scores.value("oodd", "ood", "eu", "auroc"), abs=1e-12)


# --------------------------------------------------------------------------- 6. one pass, bounded memory


@pytest.fixture(scope="module")
def store40(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("memory") / "forty.zarr", n_images=40)


@pytest.mark.parametrize("chunks_per_batch", [1, 2, 3])
def test_memory_is_bounded_by_the_batch_and_the_cube_is_read_once(store40, monkeypatch, chunks_per_batch):
    batches: list[int] = []
    reads: list[np.ndarray] = []
    original_decompose = uqeval.scoring.batch.decompose_batch
    original_read = uqeval.scoring.store_reader.read_store

    def recording_decompose(cubes, *args, **kwargs):
        batches.append(len(cubes))
        return original_decompose(cubes, *args, **kwargs)

    def recording_read(*args, **kwargs):
        values, labels = original_read(*args, **kwargs)
        reads.append(values)
        return values, labels

    monkeypatch.setattr(uqeval.scoring.batch, "decompose_batch", recording_decompose)
    monkeypatch.setattr(uqeval.scoring.store_reader, "read_store", recording_read)
    image_bytes = EU * AU * 2 * SIZE * SIZE * 2  # float16
    batch_bytes = chunks_per_batch * CHUNK * image_bytes
    scores = score(store40, batch_bytes=batch_bytes, aggregations=("border", "threshold"))
    assert max(batches) <= chunks_per_batch * CHUNK
    assert sum(batches) == 40  # every image decomposed once
    assert sum(len(values) for values in reads) == 40  # the cube is read once
    assert len(reads) == len(batches)
    assert_same_scores(scores, reference(store40, aggregations=("border", "threshold")))


# --------------------------------------------------------------------------- the zero-normaliser convention


def test_images_scored_by_the_zero_normaliser_convention_are_counted_in_a_note(store):
    """``area`` and ``border`` divide by 1 where an image predicts no foreground or no
    border; the notes count those test images per split, from the prediction alone."""
    dataset = xr.open_zarr(store, consolidated=False).load()
    probs = dataset["probs"].values.copy()
    roles, domains = dataset["role"].values, dataset["domain"].values
    test = np.flatnonzero(roles == "test")
    flat = test[[0, 1, 2, -1]]  # three images of one split and the last test image
    probs[flat] = 0.05 / (probs.shape[3] - 1)
    probs[flat, :, :, 0] = 0.95  # background everywhere: A = 0 and B = 0
    dataset["probs"].values = probs
    scores = score(dataset, aggregations=["border", "area", "mean"])

    # An independent count: the mean prediction's argmax, its foreground and its border.
    pred = probs.mean(axis=(1, 2)).argmax(axis=1)
    no_border = ~((pred[:, 1:] != pred[:, :-1]).any(axis=(1, 2)) | (pred[:, :, 1:] != pred[:, :, :-1]).any(axis=(1, 2)))
    no_foreground = ~(pred != 0).any(axis=(1, 2))
    expected = []
    for aggregation, images, what in (
        ("border", no_border, "have no predicted border (B = 0): their score is ΣU, not ΣU / B"),
        ("area", no_foreground, "have no predicted foreground (A = 0): their score is ΣU, not ΣU / A"),
    ):
        for split in ("id", *sorted(set(domains[test]) - {"id"})):
            count = int((images & (roles == "test") & (domains == split)).sum())
            if count:
                expected.append(f"{count} {split} test image(s) {what} (aggregation {aggregation!r})")
    fallbacks = [text for text in note_texts(scores) if "test image(s) have no predicted" in text]
    assert sorted(fallbacks) == sorted(expected)
    assert sum(int(text.split()[0]) for text in fallbacks) >= 2 * len(flat)

    # Their score is the raw sum ΣU; the mean is left alone.
    rows = {row["image"]: row for row in scores.image_rows()}
    maps = decompose(probs[flat])
    for position, image in enumerate(dataset["image"].values[flat]):
        total = float(maps["tu"].values[position].sum(dtype=np.float64))
        assert rows[image]["border_tu"] == pytest.approx(total, rel=1e-6)
        assert rows[image]["area_tu"] == pytest.approx(total, rel=1e-6)
    untouched = score(store, aggregations=["mean"])
    assert not [text for text in note_texts(untouched) if "have no predicted" in text]


@pytest.fixture(scope="module")
def volume_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("volumes") / "volumes.zarr"
    return uqeval.make_synthetic_cube(path, "disentangled", n_images=12, shape=(5, 16, 20), eu=3, au=2, raters=3)


@pytest.mark.parametrize("unit", ["volume", "slice"])
def test_volumes_score_alike_from_the_store_in_memory_and_on_a_cluster(volume_store, cluster, unit, tmp_path):
    """Volumes (and their slices) score the same streamed in small batches, in one batch, from a
    Dataset held in memory and on a cluster. Volumes larger than a batch are read in z-slabs,
    whose sums agree with the whole volume's to float rounding, and exactly on a cluster."""
    options = {"aggregations": ("border", "patch_max", "threshold"), "unit": unit}
    local = score(volume_store, batch_bytes=TINY, **options)
    whole = score(volume_store, **options)
    in_memory = score(xr.open_zarr(volume_store, consolidated=False).load(), **options)
    remote = score(volume_store, batch_bytes=TINY, scheduler=cluster.scheduler_address, scratch=tmp_path, **options)
    rounding = 1e-9 if unit == "volume" else 0.0
    for other, tolerance in ((whole, rounding), (in_memory, rounding), (remote, 0.0)):
        assert_same_scores(other, local, tolerance=tolerance)
        assert_rows_equal(other.image_rows(), local.image_rows(), tolerance=tolerance)
    assert len(local.image_rows()) == 12 * (5 if unit == "slice" else 1)
    assert all(example.z is not None for example in local.examples) == (unit == "volume")
    # PAvPU's τ, fitted from counts in two looks, whether streamed, whole or on a cluster.
    assert set(local.fitted.pavpu_thresholds) == {"au", "eu", "tu"}
    for other in (whole, in_memory, remote):
        assert other.fitted.pavpu_thresholds == local.fitted.pavpu_thresholds
