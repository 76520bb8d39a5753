"""The ``synthetic`` dataset of uqeval-torch: the DatasetSource contract, determinism, shifts and raters."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import distance_transform_edt

from uqeval import UQEvalError
from uqeval.contracts import DatasetSource, Sample
from uqeval_torch.data import synthetic
from uqeval_torch.data.shifts import NOISE_SCALE, shift_image
from uqeval_torch.data.synthetic import DOMAINS, ROLES, SyntheticDataset

SMALL = {"size": 32, "n_train": 10, "n_calibration": 5, "n_test": 12}
OPTIONS = ("size", "n_classes", "raters", "n_train", "n_calibration", "n_test", "shifts", "severity", "faint")
FIXED = {"shifts": "fixed"}


def draw(dataset: SyntheticDataset, role: str = "test", domain: str = "id", seed: int = 0) -> list[Sample]:
    return list(dataset.samples(role, domain, seed=seed))


def images(samples: list[Sample]) -> np.ndarray:
    return np.stack([sample.image[0] for sample in samples]).astype(float)


def labels(samples: list[Sample]) -> np.ndarray:
    return np.stack([sample.labels for sample in samples])


def mean_abs_gradient(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image, axis=-1)).mean() + np.abs(np.diff(image, axis=-2)).mean())


@pytest.fixture(scope="module")
def test_set() -> dict[str, list[Sample]]:
    """The default dataset's test images in every domain: the study's shifts."""
    dataset = SyntheticDataset()
    return {domain: draw(dataset, "test", domain) for domain in dataset.domains}


@pytest.fixture(scope="module")
def fixed_test_set() -> dict[str, list[Sample]]:
    """The test images under the dataset's own fixed shifts."""
    dataset = SyntheticDataset(shifts="fixed")
    return {domain: draw(dataset, "test", domain) for domain in dataset.domains}


# --- the contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 3])
def test_is_a_dataset_source(n_classes):
    dataset = SyntheticDataset(n_classes=n_classes)
    assert isinstance(dataset, DatasetSource)
    assert dataset.name == "synthetic"
    assert dataset.in_channels == 1
    assert dataset.n_classes == n_classes
    assert tuple(dataset.class_names) == ("background", "shape", "core")[:n_classes]
    assert tuple(dataset.domains) == ("id", "blur", "noise", "contrast", "jpeg") == DOMAINS
    assert dataset.description and "\n" not in dataset.description


def test_the_module_example_runs():
    results = doctest.testmod(synthetic)
    assert results.attempted > 0
    assert results.failed == 0


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize(("role", "domain"), [(role, "id") for role in ROLES] + [("test", d) for d in DOMAINS[1:]])
def test_samples_have_the_contract_shapes_types_and_ranges(n_classes, role, domain):
    dataset = SyntheticDataset(**SMALL, n_classes=n_classes, raters=3)
    samples = draw(dataset, role, domain)
    assert samples
    for sample in samples:
        assert isinstance(sample, Sample)
        assert (sample.role, sample.domain) == (role, domain)
        assert sample.image.shape == (1, 32, 32)
        assert sample.image.dtype == np.float32
        assert np.isfinite(sample.image).all()
        assert sample.image.min() >= 0.0
        assert sample.image.max() <= 1.0
        assert sample.labels.shape == (3, 32, 32)
        assert sample.labels.dtype == np.uint8
        assert set(np.unique(sample.labels)) <= set(range(n_classes))
    assert (labels(samples) > 0).any(), "no shape at all"


def test_three_classes_split_the_shape_into_a_core():
    """The core only splits the shapes: the same scenes and borders, and the class 2 inside them."""
    two = labels(draw(SyntheticDataset(**SMALL, n_classes=2)))
    three = labels(draw(SyntheticDataset(**SMALL, n_classes=3)))
    assert (three == 2).any()
    np.testing.assert_array_equal(three > 0, two > 0)


def test_the_image_does_not_depend_on_the_number_of_raters():
    few = draw(SyntheticDataset(**SMALL, raters=2))
    many = draw(SyntheticDataset(**SMALL, raters=6))
    np.testing.assert_array_equal(images(few), images(many))
    assert labels(many).shape[1] == 6


def test_counts_per_role_and_domain():
    dataset = SyntheticDataset(**SMALL)
    assert [len(draw(dataset, role)) for role in ROLES] == [10, 5, 12]
    for domain in DOMAINS[1:]:
        assert len(draw(dataset, "test", domain)) == 12
        assert draw(dataset, "train", domain) == []
        assert draw(dataset, "calibration", domain) == []
    assert [dataset.count(role) for role in ROLES] == [10, 5, 12]
    assert draw(dataset.configure(n_calibration=0), "calibration") == []


@pytest.mark.parametrize(
    ("role", "domain", "named"),
    [("validation", "id", "'validation'"), ("test", "fog", "'fog'"), ("Test", "id", "'Test'")],
)
def test_unknown_role_or_domain_is_an_error_when_asked(role, domain, named):
    dataset = SyntheticDataset()
    with pytest.raises(UQEvalError, match=named) as raised:
        dataset.samples(role, domain)  # raised on the call, before any iteration
    assert "calibration" in str(raised.value) or "jpeg" in str(raised.value)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_a_bad_seed_is_an_error(seed):
    with pytest.raises(UQEvalError, match="seed"):
        SyntheticDataset().samples("test", seed=seed)


# --- options ----------------------------------------------------------------------------------------


def test_unknown_option_names_it_and_the_known_ones():
    with pytest.raises(UQEvalError, match="'colour'") as raised:
        SyntheticDataset().configure(colour="red")
    assert ", ".join(OPTIONS) in str(raised.value)


def test_configure_converts_strings_and_leaves_the_original_alone():
    dataset = SyntheticDataset()
    changed = dataset.configure(size="48", n_classes=" 3", raters="2", n_test="7", shifts=" fixed", severity="0.5")
    assert (changed.size, changed.n_classes, changed.raters, changed.n_test) == (48, 3, 2, 7)
    assert (changed.shifts, changed.severity) == ("fixed", 0.5)
    assert [type(changed.options()[name]) for name in OPTIONS] == [int] * 6 + [str, float, float]
    assert changed.class_names == ("background", "shape", "core")
    assert dataset == SyntheticDataset()
    assert dataset.configure(shifts="fixed", severity=2).severity == 2.0
    assert isinstance(dataset.configure(shifts="fixed", severity=2).severity, float)
    assert dataset.configure() == dataset


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("size", "33"),
        ("size", "8"),
        ("size", "36"),
        ("size", "sixty-four"),
        ("size", "64.0"),
        ("size", 64.0),
        ("size", True),
        ("n_classes", "4"),
        ("n_classes", "1"),
        ("raters", "0"),
        ("n_train", "0"),
        ("n_calibration", "-1"),
        ("n_test", -1),
        ("severity", "0"),
        ("severity", "-1"),
        ("severity", "nan"),
        ("severity", "inf"),
        ("severity", "strong"),
        ("severity", True),
        ("severity", "2"),
        ("shifts", "albumentations"),
        ("shifts", "Study"),
        ("faint", "-0.1"),
        ("faint", "1.5"),
        ("faint", "often"),
        ("faint", True),
    ],
)
def test_bad_values_name_the_option(option, value):
    with pytest.raises(UQEvalError, match=f"'{option}'"):
        SyntheticDataset().configure(**{option: value})
    if not isinstance(value, str):
        with pytest.raises(UQEvalError, match=f"'{option}'"):
            SyntheticDataset(**{option: value})


def test_options_round_trip_through_json_and_configure():
    dataset = SyntheticDataset(
        size=24, n_classes=3, raters=5, n_train=3, n_calibration=2, n_test=4, shifts="fixed", severity=1.5
    )
    options = dataset.options()
    assert tuple(options) == OPTIONS
    stored = json.loads(json.dumps(options))
    assert SyntheticDataset().configure(**stored) == dataset
    assert SyntheticDataset().configure(**{name: str(value) for name, value in stored.items()}) == dataset
    assert SyntheticDataset(**stored) == dataset
    rebuilt = SyntheticDataset().configure(**stored)
    np.testing.assert_array_equal(images(draw(rebuilt, "test", "noise")), images(draw(dataset, "test", "noise")))


@settings(max_examples=20)
@given(
    size=st.sampled_from([16, 24, 40]),
    n_classes=st.sampled_from([2, 3]),
    raters=st.integers(1, 5),
    severity=st.one_of(st.none(), st.floats(0.05, 4.0)),
    seed=st.integers(0, 2**40),
)
def test_any_valid_options_give_valid_samples(size, n_classes, raters, severity, seed):
    shifts = {"shifts": "study"} if severity is None else {"shifts": "fixed", "severity": severity}
    dataset = SyntheticDataset(size=size, n_classes=n_classes, raters=raters, n_test=3, **shifts)
    for domain in dataset.domains:
        for sample in dataset.samples("test", domain, seed=seed):
            assert sample.image.shape == (1, size, size)
            assert np.isfinite(sample.image).all()
            if domain != "noise" or severity is not None:  # the study's noise is not clipped
                assert 0.0 <= sample.image.min() <= sample.image.max() <= 1.0
            assert sample.labels.shape == (raters, size, size)
            assert sample.labels.max() < n_classes


# --- determinism and identity -----------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["id", "noise"])
def test_the_same_seed_gives_the_same_images_and_another_seed_others(domain):
    dataset = SyntheticDataset(**SMALL)
    first, again, other = (draw(dataset, "test", domain, seed=seed) for seed in (3, 3, 4))
    assert [s.image_id for s in first] == [s.image_id for s in again] == [s.image_id for s in other]
    np.testing.assert_array_equal(images(first), images(again))
    np.testing.assert_array_equal(labels(first), labels(again))
    assert all(not np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("domain", DOMAINS)
def test_image_k_does_not_depend_on_how_many_are_drawn(domain):
    few = draw(SyntheticDataset(size=32, n_test=3), "test", domain)
    many = draw(SyntheticDataset(size=32, n_test=10), "test", domain)
    assert [s.image_id for s in few] == [s.image_id for s in many[:3]]
    np.testing.assert_array_equal(images(few), images(many[:3]))
    np.testing.assert_array_equal(labels(few), labels(many[:3]))


def test_samples_are_drawn_lazily():
    iterator = SyntheticDataset(n_test=10**9).samples("test")
    assert next(iter(iterator)).image_id == "test-000000000"


def test_roles_share_no_scene():
    dataset = SyntheticDataset(**SMALL)
    seen: dict[bytes, str] = {}
    for role in ROLES:
        for sample in draw(dataset, role):
            key = sample.image.tobytes()
            assert key not in seen, f"{sample.image_id} repeats {seen.get(key)}"
            seen[key] = sample.image_id


def test_ids_are_unique_across_roles_and_domains():
    dataset = SyntheticDataset(**SMALL)
    ids = [s.image_id for role in ROLES for domain in DOMAINS for s in dataset.samples(role, domain)]
    assert len(ids) == 10 + 5 + 12 * len(DOMAINS)
    assert len(set(ids)) == len(ids)
    assert all(isinstance(image_id, str) for image_id in ids)
    assert {"train-0000", "calibration-0004", "test-0007", "test-0007-noise", "test-0011-jpeg"} <= set(ids)


# --- the OOD shifts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", DOMAINS[1:])
def test_shifts_keep_the_labels_and_change_the_pixels(test_set, domain):
    for plain, shifted in zip(test_set["id"], test_set[domain], strict=True):
        assert shifted.image_id == f"{plain.image_id}-{domain}"
        np.testing.assert_array_equal(shifted.labels, plain.labels)
        assert not np.array_equal(shifted.image, plain.image)


@pytest.mark.parametrize("domain", DOMAINS[1:])
def test_study_shifts_are_those_of_the_shared_module(test_set, domain):
    """Each shifted image is shift_image of the ID image with the generator of its spawn key."""
    for index, (plain, shifted) in enumerate(zip(test_set["id"][:6], test_set[domain][:6], strict=True)):
        rng = np.random.default_rng(
            np.random.SeedSequence(0, spawn_key=(ROLES.index("test"), index, DOMAINS.index(domain)))
        )
        expected = shift_image(plain.image.astype(np.float64), domain, rng).astype(np.float32)
        np.testing.assert_allclose(shifted.image, expected, atol=1e-6)


def test_study_noise_is_relative_to_the_image_and_not_clipped(test_set):
    for plain, noisy in zip(test_set["id"], test_set["noise"], strict=True):
        ratio = float((noisy.image.astype(float) - plain.image).std() / plain.image.std())
        assert NOISE_SCALE[0] * 0.8 < ratio < NOISE_SCALE[1] * 1.2
    assert min(float(sample.image.min()) for sample in test_set["noise"]) < 0.25 - 0.05  # below the darkest background
    difference = images(test_set["noise"]) - images(test_set["id"])
    assert abs(difference.mean()) < 0.005


def test_study_contrast_and_jpeg_stay_within_the_image_range(test_set):
    for domain in ("contrast", "jpeg"):
        for plain, shifted in zip(test_set["id"], test_set[domain], strict=True):
            assert plain.image.min() - 1e-6 <= shifted.image.min() <= shifted.image.max() <= plain.image.max() + 1e-6
            assert not np.array_equal(plain.image, shifted.image)


def test_fixed_blur_smooths_every_image(fixed_test_set):
    for plain, blurred in zip(fixed_test_set["id"], fixed_test_set["blur"], strict=True):
        assert mean_abs_gradient(blurred.image[0]) < 0.6 * mean_abs_gradient(plain.image[0])
        assert abs(float(blurred.image.mean() - plain.image.mean())) < 0.02


def test_fixed_noise_adds_noise_of_the_configured_std(fixed_test_set):
    difference = images(fixed_test_set["noise"]) - images(fixed_test_set["id"])
    assert abs(difference.mean()) < 0.02
    # Clipping to [0, 1] takes a little off the 0.25 of severity 1.
    assert 0.2 < difference.std() <= 0.25
    weak = SyntheticDataset(shifts="fixed", severity=0.4, n_test=16)
    difference = images(draw(weak, "test", "noise")) - images(draw(weak))
    assert difference.std() == pytest.approx(0.1, rel=0.05)


def test_fixed_contrast_lowers_the_std_around_the_same_mean(fixed_test_set):
    for plain, flat in zip(fixed_test_set["id"], fixed_test_set["contrast"], strict=True):
        assert flat.image.std() == pytest.approx(0.4 * plain.image.std(), rel=0.01)
        assert flat.image.mean() == pytest.approx(plain.image.mean(), abs=1e-3)


def test_fixed_jpeg_differs_but_stays_close(fixed_test_set):
    for plain, compressed in zip(fixed_test_set["id"], fixed_test_set["jpeg"], strict=True):
        difference = np.abs(compressed.image.astype(float) - plain.image)
        assert 0.003 < difference.mean() < 0.1
        # Decoded 8-bit values.
        np.testing.assert_allclose(compressed.image * 255, np.round(compressed.image * 255), atol=1e-3)


@pytest.mark.parametrize("domain", DOMAINS[1:])
def test_severity_scales_the_fixed_shift(domain):
    distances = []
    for severity in (0.5, 1.0, 2.0):
        dataset = SyntheticDataset(size=32, n_test=8, shifts="fixed", severity=severity)
        distances.append(np.abs(images(draw(dataset, "test", domain)) - images(draw(dataset))).mean())
    assert distances[0] < distances[1] < distances[2]


# --- the raters -----------------------------------------------------------------------------------


def presence_disagreement(rater_labels: np.ndarray) -> bool:
    """Some rater marks nothing while another marks a shape."""
    marked = (rater_labels > 0).any(axis=(1, 2))
    return bool(marked.any() and not marked.all())


def test_raters_disagree_on_a_few_pixels(test_set):
    marked = labels(test_set["id"]) > 0
    disagree = marked.any(axis=1) & ~marked.all(axis=1)
    assert 0.005 < disagree.mean() < 0.2
    assert disagree.sum() < 0.8 * marked.any(axis=1).sum(), "the raters agree on most of the shapes"
    # Every rater marks shapes, and no rater copies another.
    assert marked.any(axis=(0, 2, 3)).all()
    raters = marked.shape[1]
    assert all(not np.array_equal(marked[:, i], marked[:, j]) for i in range(raters) for j in range(i))


def test_border_disagreement_lies_near_the_edge(test_set):
    near = total = 0
    for sample in test_set["id"]:
        if presence_disagreement(sample.labels):
            continue
        marked = sample.labels > 0
        disagree = marked.any(axis=0) & ~marked.all(axis=0)
        depth = distance_transform_edt(marked.any(axis=0))  # px to the outside of the union
        near += int((depth[disagree] <= 3).sum())
        total += int(disagree.sum())
    assert total > 0
    assert near > 0.75 * total


def test_raters_sometimes_disagree_about_presence(test_set):
    disagreeing = [sample.image_id for sample in test_set["id"] if presence_disagreement(sample.labels)]
    assert 0 < len(disagreeing) < len(test_set["id"]) / 2
    unanimous_background = [sample for sample in test_set["id"] if not sample.labels.any()]
    assert unanimous_background, "no image without a shape"


def test_presence_disagreement_is_on_faint_shapes(test_set):
    """Shapes some raters leave out contrast less than shapes every rater marks."""

    def contrast(sample: Sample, region: np.ndarray) -> float:
        background = distance_transform_edt(~region) > 4
        return float(sample.image[0][region].mean() - sample.image[0][background].mean())

    faint, clear = [], []
    for sample in test_set["id"]:
        marked = sample.labels > 0
        if presence_disagreement(sample.labels):  # then every shape of the image is faint
            faint.append(contrast(sample, marked.any(axis=0)))
        elif marked.all(axis=0).any():
            clear.append(contrast(sample, marked.all(axis=0)))
    assert faint
    assert np.median(faint) < 0.5 * np.median(clear)


def test_the_faint_option_sets_how_often_raters_disagree_about_presence():
    """Without faint shapes every rater marks every shape; more faint shapes, more presence disagreement."""
    counts = []
    for faint in (0.0, 0.1, 0.4, 1.0):
        dataset = SyntheticDataset(size=32, n_test=200, faint=faint)
        counts.append(sum(presence_disagreement(sample.labels) for sample in dataset.samples("test")))
    assert counts[0] == 0
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    # With every shape faint, only images without a shape (6 %) have the raters agree on presence.
    assert counts[-1] > 0.85 * 200
