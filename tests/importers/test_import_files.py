"""uqeval import files: arrays found by a pattern with {case}, {member}, {sample} and {class};
every file type read in its documented axis order, integer images scaled, gaps named."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli
from import_folders import sample_files, softmax, write_nifti
from PIL import Image

import uqeval
from uqeval import UQEvalError, open_cube
from uqeval.importers.files import Pattern, import_files


def test_per_sample_npy_files_and_png_labels(tmp_path):
    data = sample_files(tmp_path)
    summary = import_files(data["probs_pattern"], tmp_path / "s.zarr", labels=data["labels_pattern"])
    cube = open_cube(tmp_path / "s.zarr")
    assert summary.n_images == 3
    assert dict(cube["probs"].sizes) == {"image": 3, "eu": 2, "au": 3, "class": 3, "y": 6, "x": 7}
    np.testing.assert_array_equal(cube["probs"].values, data["probs"])
    np.testing.assert_array_equal(cube["labels"].values, data["labels"])
    record = cube.attrs["import"]["cases"]["c1"]
    assert record["probs"][1][2] == [data["probs_pattern"].format(case="c1", member=1, sample=2)]
    assert record["labels"][1] == data["labels_pattern"].format(case="c1", rater=1)


def test_scores_equal_those_of_the_arrays_scored_directly(tmp_path):
    cases = tuple(f"c{i}" for i in range(8))
    data = sample_files(tmp_path, cases=cases)
    listed = tmp_path / "cases.csv"
    listed.write_text("case,domain,role\nc0,id,calibration\nc1,,calibration\nc6,noise,\nc7,noise,test\n")
    import_files(data["probs_pattern"], tmp_path / "s.zarr", labels=data["labels_pattern"], cases=listed)
    direct = xr.Dataset(
        {
            "probs": (("image", "eu", "au", "class", "y", "x"), data["probs"]),
            "labels": (("image", "rater", "y", "x"), data["labels"]),
            "domain": ("image", np.array(["id"] * 6 + ["noise"] * 2, dtype=object)),
            "role": ("image", np.array(["calibration"] * 2 + ["test"] * 6, dtype=object)),
        },
        coords={"image": np.array(cases, dtype=object)},
        attrs={"schema": 1},
    )
    imported, expected = uqeval.score(tmp_path / "s.zarr"), uqeval.score(direct)
    for key in (("oodd", "noise", "eu", "auroc", "border"), ("amb", "id", "au", "ncc"), ("cal", "id", "tu", "ace")):
        assert imported.value(*key) == pytest.approx(expected.value(*key), abs=1e-12)


def test_one_file_per_class_with_8_bit_png_scaled_by_255(tmp_path):
    # Values that sum to 255 exactly over the three classes.
    rng = np.random.default_rng(0)
    first = rng.integers(0, 128, size=(2, 4, 5))
    second = rng.integers(0, 128, size=(2, 4, 5))
    values = np.stack([first, second, 255 - first - second], axis=1).astype(np.uint8)  # member, class, y, x
    for member in range(2):
        for klass in range(3):
            Image.fromarray(values[member, klass]).save(tmp_path / f"a_m{member}_c{klass}.png")
    import_files(str(tmp_path / "{case}_m{member}_c{class}.png"), tmp_path / "s.zarr")
    cube = open_cube(tmp_path / "s.zarr")
    assert dict(cube["probs"].sizes) == {"image": 1, "eu": 2, "au": 1, "class": 3, "y": 4, "x": 5}
    np.testing.assert_allclose(cube["probs"].values[0, :, 0], values / np.float32(255), rtol=1e-6)


def test_16_bit_tiff_is_scaled_by_65535(tmp_path):
    quarter = np.full((4, 5), 16384, dtype=np.uint16)
    for sample, value in enumerate((16384, 49151)):
        for klass, pixels in enumerate((np.full((4, 5), value, np.uint16), np.full((4, 5), 65535 - value, np.uint16))):
            Image.fromarray(pixels).save(tmp_path / f"a_s{sample}_c{klass}.tif")
    import_files(str(tmp_path / "{case}_s{sample}_c{class}.tif"), tmp_path / "s.zarr")
    probs = open_cube(tmp_path / "s.zarr")["probs"].values
    assert probs.shape == (1, 1, 2, 2, 4, 5)
    np.testing.assert_allclose(probs[0, 0, 0, 0], quarter / np.float32(65535), rtol=1e-6)


def test_nifti_probabilities_are_read_in_simpleitk_order_with_their_spacing(tmp_path):
    probs = softmax(np.random.default_rng(2).normal(size=(2, 3, 4, 5, 6)), axis=1).astype(np.float32)
    for member in range(2):
        # A 4D NIfTI (x, y, z, class): the classes are its fourth dim.
        write_nifti(tmp_path / f"a_m{member}.nii.gz", probs[member], spacing_zyx=(3.0, 1.0, 0.5))
    import nibabel

    assert nibabel.load(str(tmp_path / "a_m0.nii.gz")).shape == (6, 5, 4, 3)
    import_files(str(tmp_path / "{case}_m{member}.nii.gz"), tmp_path / "s.zarr")
    cube = open_cube(tmp_path / "s.zarr")
    assert dict(cube["probs"].sizes) == {"image": 1, "eu": 2, "au": 1, "class": 3, "z": 4, "y": 5, "x": 6}
    np.testing.assert_array_equal(cube["probs"].values[0, :, 0], probs)
    assert cube.attrs["spacing"] == [3.0, 1.0, 0.5]


def test_npz_files_with_one_array(tmp_path):
    probs = softmax(np.random.default_rng(4).normal(size=(2, 2, 4, 4)), axis=1).astype(np.float32)
    for member in range(2):
        np.savez_compressed(tmp_path / f"x_{member}.npz", anything=probs[member])
    import_files(str(tmp_path / "{case}_{member}.npz"), tmp_path / "s.zarr")
    np.testing.assert_array_equal(open_cube(tmp_path / "s.zarr")["probs"].values[0, :, 0], probs)
    np.savez(tmp_path / "y_0.npz", a=probs[0], b=probs[1])
    np.savez(tmp_path / "y_1.npz", a=probs[0])
    with pytest.raises(UQEvalError, match=r"y_0.npz: holds 2 arrays \('a', 'b'\); expected exactly one"):
        import_files(str(tmp_path / "{case}_{member}.npz"), tmp_path / "t.zarr")


def test_a_missing_member_or_sample_names_the_case_and_the_file(tmp_path):
    data = sample_files(tmp_path)
    (tmp_path / "preds" / "c1" / "m1_s2.npy").unlink()
    with pytest.raises(UQEvalError) as raised:
        import_files(data["probs_pattern"], tmp_path / "s.zarr")
    assert str(raised.value) == f"case 'c1': no file for member 1, sample 2 ({tmp_path}/preds/c1/m1_s2.npy)"
    assert not (tmp_path / "s.zarr").exists()


def test_a_missing_label_file_and_a_shape_mismatch_are_named(tmp_path):
    data = sample_files(tmp_path)
    (tmp_path / "labels" / "c2_r1.png").unlink()
    with pytest.raises(UQEvalError, match=r"case 'c2': no label file of rater 1 \(.*c2_r1.png\)"):
        import_files(data["probs_pattern"], tmp_path / "s.zarr", labels=data["labels_pattern"])
    np.save(tmp_path / "preds" / "c2" / "m0_s1.npy", np.full((3, 7, 6), 1 / 3, np.float32))
    with pytest.raises(UQEvalError, match=r"case 'c2': .*m0_s1.npy holds an array of shape \(3, 7, 6\) but"):
        import_files(data["probs_pattern"], tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_pattern_mistakes_are_named(tmp_path):
    with pytest.raises(UQEvalError, match=r"unknown placeholder \{fold\}"):
        import_files(str(tmp_path / "{case}_{fold}.npy"), tmp_path / "s.zarr")
    with pytest.raises(UQEvalError, match=r"has no \{case\} placeholder"):
        import_files(str(tmp_path / "m{member}.npy"), tmp_path / "s.zarr")
    with pytest.raises(UQEvalError, match="no file matches"):
        import_files(str(tmp_path / "{case}_{member}.npy"), tmp_path / "s.zarr")
    np.save(tmp_path / "a.npy", np.full((2, 3, 3), 0.5, np.float32))
    with pytest.raises(UQEvalError, match="deterministic"):
        import_files(str(tmp_path / "{case}.npy"), tmp_path / "s.zarr")


def test_a_pattern_matches_repeated_placeholders_and_sorts_numbers_as_numbers():
    pattern = Pattern("p/{case}/{case}_m{member}.npy", "--probs", ("case", "member"), ("case",))
    assert pattern.regex.fullmatch("p/a/a_m10.npy").groupdict() == {"case": "a", "member": "10"}
    assert pattern.regex.fullmatch("p/a/b_m10.npy") is None
    from uqeval.importers.files import _sorted

    assert _sorted({"10", "9", "b", "a"}) == ["9", "10", "a", "b"]


@pytest.mark.cli
def test_the_command(tmp_path):
    data = sample_files(tmp_path)
    result = run_cli(
        "import", "files", "--probs", data["probs_pattern"], "--labels", data["labels_pattern"], "--out",
        str(tmp_path / "s.zarr"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 images" in result.stderr
    (tmp_path / "preds" / "c0" / "m0_s0.npy").write_bytes(b"garbage")
    result = run_cli("import", "files", "--probs", data["probs_pattern"], "--out", str(tmp_path / "t.zarr"))
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert "m0_s0.npy: cannot be read as an .npy file" in result.stderr
