"""The ``lidc`` dataset of uqeval-torch on a small fixture in the published layout."""

from __future__ import annotations

import csv
import doctest
import os
import pickle
import pickletools
import random
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.model_selection import KFold

from uqeval import UQEvalError
from uqeval.contracts import DatasetSource, Sample
from uqeval_torch.data import lidc
from uqeval_torch.data.lidc import DOMAINS, ROLES, LIDCDataset, split_patients
from uqeval_torch.data.shifts import SHIFTS, shift_image

#: Patients of the fixture: not consecutive, so that sorting and numbering can be told apart.
PATIENTS = [f"LIDC-IDRI-{number:04d}" for number in (3, 7, 12, 18, 44, 101, 250, 512, 777, 1010)]
SLICES = 3
#: The columns of the collection's metadata digest, as TCIA publishes it.
COLUMNS = [
    "Series ID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
]


def series_uid(patient: int, series: int) -> str:
    return f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{100000 + 17 * patient}{series}"


def nodule_slice(rng: np.random.Generator) -> dict:
    """A CT-like crop in [0, 1] with a blob, and 4 raters' masks at different thresholds."""
    yy, xx = np.mgrid[0:128, 0:128]
    cy, cx = rng.uniform(40, 88, 2)
    radius = rng.uniform(5, 15)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    image = np.clip(0.3 + 0.05 * gaussian_filter(rng.standard_normal((128, 128)), 3) + 0.5 * blob, 0, 1)
    masks = [(blob > threshold).astype(np.uint8) for threshold in rng.uniform(0.3, 0.7, 4)]
    return {"image": image.astype(np.float32), "masks": masks}


def make_records(seed: int = 0) -> dict[str, dict]:
    """The pickle's dict: slice key → record, the patients' slices interleaved as in the real file."""
    rng = np.random.default_rng(seed)
    records = {}
    for index in range(SLICES):
        for number, patient in enumerate(PATIENTS):
            key = f"{patient.lower()}_slice{index:02d}_nodule{number % 2}"
            records[key] = {**nodule_slice(rng), "series_uid": series_uid(number, 0)}
    first = next(iter(records))
    records[first]["image"] = np.full((128, 128), 0.25, np.float32)  # a constant image
    return records


def write_metadata(path: Path, rows: list[dict] | None = None, columns: list[str] = COLUMNS) -> None:
    if rows is None:
        rows = []
        for number, patient in enumerate(PATIENTS):
            for series, modality in ((0, "CT"), (1, "DX")):
                rows.append(
                    {
                        "Series ID": series_uid(number, series),
                        "Collection": "LIDC-IDRI",
                        "3rd Party Analysis": "NO",
                        "Data Description URI": "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX",
                        "Subject ID": patient,
                        "Study UID": f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{number}",
                        "Study Description": "",
                        "Study Date": "01-01-2000",
                        "Series Description": "",
                        "Manufacturer": "GE MEDICAL SYSTEMS",
                        "Modality": modality,
                        "SOP Class Name": "CT Image Storage",
                        "SOP Class UID": "1.2.840.10008.5.1.4.1.1.2",
                        "Number of Images": "133",
                        "File Size": "69.97 MB",
                        "File Location": f"./LIDC-IDRI/{patient}/01-01-2000-{number}",
                        "Download Timestamp": "2021-03-02T11:08:23.456",
                    }
                )
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_lidc(root: Path, records: object | None = None, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    """``root`` holding ``data_lidc.pickle`` and ``LIDC-IDRI_MetaData.csv`` as published."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "data_lidc.pickle").open("wb") as handle:
        pickle.dump(make_records() if records is None else records, handle, protocol=protocol)
    write_metadata(root / "LIDC-IDRI_MetaData.csv")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_lidc(tmp_path_factory.mktemp("lidc"))


@pytest.fixture(scope="module")
def dataset(root) -> LIDCDataset:
    return LIDCDataset(root=str(root))


@pytest.fixture(scope="module")
def drawn(dataset) -> dict[tuple[str, str], list[Sample]]:
    """Every (role, domain) of the fixture, drawn once."""
    return {(role, domain): list(dataset.samples(role, domain)) for role in ROLES for domain in DOMAINS}


def patient_of(sample: Sample) -> str:
    return sample.image_id.split("/")[0]


def slice_key(sample: Sample) -> str:
    key = sample.image_id.split("/", 1)[1]
    return key if sample.domain == "id" else key.removesuffix(f"-{sample.domain}")


def reference_image(raw: np.ndarray, size: int = 128) -> np.ndarray:
    """A numpy reference of the input pipeline: pool (mean), z-score, replicate."""
    image = raw.astype(float)
    if size == 64:
        image = image.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    std = image.std()
    image = (image - image.mean()) / (std if std >= 1e-6 else 1.0)
    return np.repeat(image[None], 3, axis=0)


# --- the contract ---------------------------------------------------------------------------------


def test_is_a_dataset_source_and_lists_without_data():
    dataset = LIDCDataset()
    assert isinstance(dataset, DatasetSource)
    assert dataset.name == "lidc"
    assert dataset.in_channels == 3
    assert dataset.n_classes == 2
    assert tuple(dataset.class_names) == ("background", "nodule")
    assert tuple(dataset.domains) == ("id", *SHIFTS) == ("id", "noise", "blur", "contrast", "jpeg") == DOMAINS
    assert dataset.description and "\n" not in dataset.description
    assert dataset.options() == {"root": "", "size": 128}


def test_samples_follow_the_contract(drawn):
    for (role, domain), samples in drawn.items():
        for sample in samples:
            assert (sample.role, sample.domain) == (role, domain)
            assert sample.image.shape == (3, 128, 128) and sample.image.dtype == np.float32
            assert sample.labels.shape == (4, 128, 128) and sample.labels.dtype == np.uint8
            assert set(np.unique(sample.labels)) <= {0, 1}
            assert np.array_equal(sample.image[0], sample.image[1]) and np.array_equal(sample.image[0], sample.image[2])
            assert patient_of(sample) in PATIENTS
    ids = [sample.image_id for samples in drawn.values() for sample in samples]
    assert len(ids) == len(set(ids))


def test_images_are_z_scored_and_a_constant_one_is_zeros(drawn):
    samples = [sample for role in ROLES for sample in drawn[(role, "id")]]
    constant = next(iter(make_records()))
    for sample in samples:
        if slice_key(sample) == constant:
            np.testing.assert_array_equal(sample.image, 0.0)
        else:
            assert abs(float(sample.image.mean())) < 1e-5
            assert float(sample.image.std()) == pytest.approx(1.0, abs=1e-5)


def test_images_and_masks_are_the_pickles(drawn):
    records = make_records()
    for role in ROLES:
        for sample in drawn[(role, "id")]:
            record = records[slice_key(sample)]
            np.testing.assert_allclose(sample.image, reference_image(record["image"]), atol=1e-5)
            np.testing.assert_array_equal(sample.labels, np.stack(record["masks"]))


def test_image_ids_carry_the_patient_and_come_in_patient_then_pickle_order(drawn):
    order = list(make_records())
    for role in ROLES:
        samples = drawn[(role, "id")]
        keys = [(patient_of(sample), order.index(slice_key(sample))) for sample in samples]
        assert keys == sorted(keys)
        for sample in samples:
            assert slice_key(sample).startswith(patient_of(sample).lower())


# --- the split ------------------------------------------------------------------------------------


def test_every_slice_is_in_one_role_and_no_patient_in_two(drawn):
    patients = {role: {patient_of(sample) for sample in drawn[(role, "id")]} for role in ROLES}
    assert patients["train"].isdisjoint(patients["calibration"])
    assert patients["train"].isdisjoint(patients["test"])
    assert patients["calibration"].isdisjoint(patients["test"])
    assert set().union(*patients.values()) == set(PATIENTS)
    keys = [slice_key(sample) for role in ROLES for sample in drawn[(role, "id")]]
    assert sorted(keys) == sorted(make_records())
    # 10 patients: 2 test, the other 8 in 4 folds of 2; fold 0 is calibration.
    assert [len(patients[role]) for role in ROLES] == [6, 2, 2]
    assert [len(drawn[(role, "id")]) for role in ROLES] == [18, 6, 6]


def test_the_split_is_the_studys_checked_against_sklearns_kfold():
    patients = [f"LIDC-IDRI-{number:04d}" for number in range(1, 1012)]
    split = split_patients(list(reversed(patients)))  # the input order does not matter
    # Test: the first round(20 %) of the sorted ids shuffled by random.Random(7).
    shuffled = sorted(patients)
    random.Random(7).shuffle(shuffled)
    n_test = round(0.2 * len(patients))
    assert split["test"] == sorted(shuffled[:n_test])
    # Calibration: fold 0 of KFold(4) on the remaining ids in numpy.random.default_rng(7)'s order.
    rest = np.array(sorted(set(patients) - set(split["test"])))
    permuted = rest[np.random.default_rng(7).permutation(len(rest))]
    folds = list(KFold(n_splits=4).split(permuted))
    train_index, calibration_index = folds[0]
    assert split["calibration"] == sorted(permuted[calibration_index].tolist())
    assert split["train"] == sorted(permuted[train_index].tolist())
    fractions = np.array([len(split[role]) for role in ROLES]) / len(patients)
    np.testing.assert_allclose(fractions, [0.6, 0.2, 0.2], atol=0.005)


def test_the_split_needs_enough_patients():
    with pytest.raises(UQEvalError, match="at least 5 patients for its split, got 4"):
        split_patients(PATIENTS[:4])


# --- determinism and OOD domains ------------------------------------------------------------------


def test_a_rerun_gives_the_same_images(root, drawn):
    again = LIDCDataset(root=str(root))
    for role, domain in [("train", "id"), ("test", "noise"), ("test", "jpeg")]:
        for first, second in zip(drawn[(role, domain)], again.samples(role, domain), strict=True):
            assert first.image_id == second.image_id
            np.testing.assert_array_equal(first.image, second.image)
            np.testing.assert_array_equal(first.labels, second.labels)


def test_the_seed_changes_the_shifts_only(dataset, drawn):
    for first, second in zip(drawn[("test", "id")], dataset.samples("test", seed=1), strict=True):
        np.testing.assert_array_equal(first.image, second.image)
    for domain in SHIFTS:
        other = list(dataset.samples("test", domain, seed=1))
        assert [sample.image_id for sample in other] == [sample.image_id for sample in drawn[("test", domain)]]
        assert any(not np.array_equal(a.image, b.image) for a, b in zip(other, drawn[("test", domain)], strict=True))


@pytest.mark.parametrize("role", ["train", "calibration"])
@pytest.mark.parametrize("domain", SHIFTS)
def test_ood_domains_hold_test_images_only(drawn, role, domain):
    assert drawn[(role, domain)] == []


@pytest.mark.parametrize("domain", SHIFTS)
def test_ood_images_are_the_test_images_shifted_before_the_z_score(drawn, domain):
    records = make_records()
    shifted, plain = drawn[("test", domain)], drawn[("test", "id")]
    assert len(shifted) == len(plain) > 0
    changed = 0
    for index, (sample, original) in enumerate(zip(shifted, plain, strict=True)):
        assert sample.image_id == f"{original.image_id}-{domain}"
        np.testing.assert_array_equal(sample.labels, original.labels)
        raw = records[slice_key(original)]["image"]
        rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(index, DOMAINS.index(domain))))
        expected = reference_image(shift_image(raw[None], domain, rng)[0])
        np.testing.assert_allclose(sample.image, expected, atol=1e-5)
        changed += not np.allclose(sample.image, original.image, atol=1e-3)
    assert changed >= len(plain) - 1  # all but the constant image


# --- size 64 --------------------------------------------------------------------------------------


def test_size_64_mean_pools_the_image_and_max_pools_the_masks(root):
    dataset = LIDCDataset(root=str(root)).configure(size="64")
    assert dataset.options() == {"root": str(root), "size": 64}
    records = make_records()
    samples = list(dataset.samples("train"))
    assert len(samples) == 18
    for sample in samples:
        record = records[slice_key(sample)]
        assert sample.image.shape == (3, 64, 64) and sample.labels.shape == (4, 64, 64)
        np.testing.assert_allclose(sample.image, reference_image(record["image"], 64), atol=1e-5)
        masks = np.stack(record["masks"])
        pooled = np.maximum.reduce([masks[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])
        np.testing.assert_array_equal(sample.labels, pooled)
    test = list(dataset.samples("test", "blur"))
    assert test and all(sample.image.shape == (3, 64, 64) for sample in test)


# --- options --------------------------------------------------------------------------------------


def test_configure_converts_strings_and_keeps_the_root(tmp_path):
    dataset = LIDCDataset().configure(root=str(tmp_path), size="128")
    assert dataset.options() == {"root": str(tmp_path), "size": 128}
    assert LIDCDataset(root=tmp_path).root == str(tmp_path)
    assert LIDCDataset(root=str(tmp_path)) == dataset


@pytest.mark.parametrize("size", [32, "256", "large", 64.0, True, None])
def test_a_bad_size_is_refused_naming_the_option(size):
    with pytest.raises(UQEvalError, match="option 'size' of dataset 'lidc'"):
        LIDCDataset().configure(size=size)


def test_an_unknown_option_is_refused_listing_the_known_ones():
    with pytest.raises(UQEvalError, match="unknown option 'fold' of dataset 'lidc'; options: root, size"):
        LIDCDataset().configure(fold=1)


def test_a_bad_root_value_is_refused():
    with pytest.raises(UQEvalError, match="option 'root' of dataset 'lidc' must be a folder path"):
        LIDCDataset(root=3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"role": "validation"}, "unknown role 'validation' of dataset 'lidc'; roles: train, calibration, test"),
        ({"role": "test", "domain": "fog"}, "unknown domain 'fog' of dataset 'lidc'; domains: id, noise, blur"),
        ({"role": "test", "seed": -1}, "seed of dataset 'lidc' must be a non-negative integer, got -1"),
        ({"role": "test", "seed": 1.5}, "seed of dataset 'lidc' must be a non-negative integer"),
    ],
)
def test_bad_arguments_of_samples_are_refused(dataset, arguments, message):
    role = arguments.pop("role")
    with pytest.raises(UQEvalError, match=message):
        dataset.samples(role, **arguments)


# --- loading --------------------------------------------------------------------------------------


def test_nothing_is_read_at_construction_and_the_pickle_once(tmp_path, monkeypatch):
    calls = []
    load = lidc.load_pickle
    monkeypatch.setattr(lidc, "load_pickle", lambda path: calls.append(path) or load(path))
    dataset = LIDCDataset(root=str(tmp_path / "later"))
    write_lidc(tmp_path / "later")
    assert calls == []
    list(dataset.samples("train"))
    list(dataset.samples("test", "noise"))
    list(dataset.samples("calibration"))
    assert len(calls) == 1
    list(dataset.configure(size=64).samples("train"))  # a configured copy reads its own
    assert len(calls) == 2


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickles_of_every_protocol_load(tmp_path, protocol):
    records = make_records()
    for record in list(records.values())[:2]:
        record["image"] = record["image"].astype(np.float64)  # other dtypes, and numpy scalars, load too
        record["spacing"] = np.float64(0.7)
    dataset = LIDCDataset(root=str(write_lidc(tmp_path, records, protocol=protocol)))
    assert len(list(dataset.samples("train"))) == 18


def test_older_metadata_column_names_are_read(tmp_path):
    root = write_lidc(tmp_path)
    rows = list(csv.DictReader((root / "LIDC-IDRI_MetaData.csv").open(encoding="utf-8-sig")))
    renamed = [{"Patient Id": row["Subject ID"], "Series UID": row["Series ID"]} for row in rows]
    write_metadata(root / "LIDC-IDRI_MetaData.csv", renamed, columns=["Patient Id", "Series UID"])
    assert len(list(LIDCDataset(root=str(root)).samples("test"))) == 6


# --- errors ---------------------------------------------------------------------------------------


def test_an_unset_root_is_refused_at_samples_time_naming_the_option():
    dataset = LIDCDataset()
    with pytest.raises(UQEvalError, match=r"option 'root' of dataset 'lidc' is not set: pass --data-option root=DIR"):
        dataset.samples("train")
    with pytest.raises(UQEvalError, match="option 'root'"):
        dataset.samples("train", "noise")


def test_a_root_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(UQEvalError, match=r"option 'root' of dataset 'lidc': .*nowhere is not a folder"):
        LIDCDataset(root=str(tmp_path / "nowhere")).samples("train")


@pytest.mark.parametrize("missing", ["data_lidc.pickle", "LIDC-IDRI_MetaData.csv"])
def test_a_missing_file_is_named(tmp_path, missing):
    root = write_lidc(tmp_path)
    (root / missing).unlink()
    with pytest.raises(UQEvalError, match=rf"dataset 'lidc': .*{missing.replace('.', '[.]')} not found"):
        LIDCDataset(root=str(root)).samples("test")


def corrupt(change) -> dict:
    records = make_records()
    change(records[list(records)[4]])
    return records


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(series_uid="1.2.3.999"), r"slice '.*': series_uid '1[.]2[.]3[.]999' is not in .*MetaData"),
        (
            lambda r: r.update(image=np.zeros((64, 64), np.float32)),
            r"image has shape \(64, 64\); expected \(128, 128\)",
        ),
        (lambda r: r.update(image=np.zeros((3, 128, 128))), r"image has shape \(3, 128, 128\); expected"),
        (lambda r: r.update(image=[[0.0]]), r"image has shape \(1, 1\); expected"),
        (lambda r: r["image"].__setitem__((0, 0), np.nan), "image must hold finite numbers"),
        (lambda r: r["masks"].pop(), "3 masks; expected 4"),
        (lambda r: r["masks"].append(r["masks"][0]), "5 masks; expected 4"),
        (lambda r: r["masks"].__setitem__(2, np.zeros((128, 127))), r"mask 2 has shape \(128, 127\); expected"),
        (lambda r: r["masks"].__setitem__(1, r["masks"][1] * 255), "mask 1 is not binary"),
        (lambda r: r.update(masks="four"), "masks is a str; expected a list of 4 arrays"),
        (lambda r: r.pop("series_uid"), "has no series_uid"),
        (lambda r: r.update(series_uid=17), "series_uid is a int; expected a string"),
    ],
)
def test_a_bad_slice_is_named_with_its_fault(tmp_path, change, message):
    records = corrupt(change)
    root = write_lidc(tmp_path, records)
    with pytest.raises(UQEvalError, match=message) as raised:
        LIDCDataset(root=str(root)).samples("train")
    assert "data_lidc.pickle: slice 'lidc-idri-0044_slice00_nodule0'" in str(raised.value)


@pytest.mark.parametrize("payload", [[1, 2, 3], {}, "slices"])
def test_a_pickle_that_is_not_a_dict_of_slices_is_refused(tmp_path, payload):
    root = write_lidc(tmp_path, payload)
    with pytest.raises(UQEvalError, match=r"data_lidc[.]pickle: expected a non-empty dict of slice key"):
        LIDCDataset(root=str(root)).samples("train")


def test_a_truncated_pickle_is_refused(tmp_path):
    root = write_lidc(tmp_path)
    data = (root / "data_lidc.pickle").read_bytes()
    (root / "data_lidc.pickle").write_bytes(data[: len(data) // 2])
    with pytest.raises(UQEvalError, match=r"data_lidc[.]pickle: not a readable pickle"):
        LIDCDataset(root=str(root)).samples("train")


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["Series ID", "Collection"], "no column 'Subject ID'; the metadata needs 'Subject ID' and 'Series ID'"),
        (["Subject ID", "Modality"], "no column 'Series ID'"),
    ],
)
def test_metadata_without_its_columns_is_refused(tmp_path, columns, message):
    root = write_lidc(tmp_path)
    write_metadata(root / "LIDC-IDRI_MetaData.csv", columns=columns)
    with pytest.raises(UQEvalError, match=message) as raised:
        LIDCDataset(root=str(root)).samples("train")
    assert "LIDC-IDRI_MetaData.csv" in str(raised.value)


# --- security -------------------------------------------------------------------------------------


class Exploit:
    """What a malicious pickle does: a reduce that runs a shell command when loaded."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    records = make_records()
    records[next(iter(records))]["image"] = Exploit(f"touch {sentinel}")
    root = write_lidc(tmp_path / "data", records)
    opcodes = list(pickletools.genops((root / "data_lidc.pickle").read_bytes()))
    assert os.system.__module__ in {str(argument) for _, argument, _ in opcodes}  # a plain load would call it
    with pytest.raises(UQEvalError, match=r"data_lidc.pickle: refused to load the global (posix|nt|os)\.system"):
        LIDCDataset(root=str(root)).samples("train")
    assert not sentinel.exists()


def test_any_other_global_is_refused_without_importing_it(tmp_path):
    root = write_lidc(tmp_path)
    (root / "data_lidc.pickle").write_bytes(b"\x80\x02cno_such_module_for_uqeval\nNamed\n)R.")
    with pytest.raises(UQEvalError, match=r"refused to load the global no_such_module_for_uqeval[.]Named"):
        LIDCDataset(root=str(root)).samples("train")


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02cbuiltins\neval\nq\x00X\x0e\x00\x00\x00print('owned')q\x01\x85q\x02Rq\x03.",
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
    ],
)
def test_handwritten_exploits_are_refused(tmp_path, payload):
    root = write_lidc(tmp_path)
    (root / "data_lidc.pickle").write_bytes(payload)
    with pytest.raises(
        UQEvalError, match=r"data_lidc[.]pickle: (refused to load the global builtins[.]eval|not a readable pickle)"
    ):
        LIDCDataset(root=str(root)).samples("train")


def test_module_docstrings_run():
    assert doctest.testmod(lidc, optionflags=doctest.ELLIPSIS).failed == 0


def test_ragged_metadata_rows_are_tolerated(tmp_path):
    root = write_lidc(tmp_path)
    path = root / "LIDC-IDRI_MetaData.csv"
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    lines.insert(2, '"1.2.3.4",LIDC-IDRI,NO,,LIDC-IDRI-9999,1.2,,,,,,,,,,,,extra,fields')
    lines.insert(3, "1.2.3.5,LIDC-IDRI")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(list(LIDCDataset(root=str(root)).samples("calibration"))) == 6
