"""uqeval import nnunet: member folders become one ensemble, labels in the probabilities' axis
order, nothing unpickled, every bad folder one clear error and no store that reads as complete."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import run_cli
from import_folders import nnunet_folders, write_nifti

import uqeval
from uqeval import UQEvalError, open_cube
from uqeval.cube import CubeWriter
from uqeval.importers.nnunet import import_nnunet


def test_members_become_an_ensemble_with_the_labels_in_simpleitk_order(tmp_path):
    data = nnunet_folders(tmp_path, shape=(5, 6, 7))  # z, y, x all different
    summary = import_nnunet(data["members"], tmp_path / "s.zarr", labels=data["raters"])
    cube = open_cube(tmp_path / "s.zarr")
    assert summary.n_images == 4 and summary.resumed == 0 and summary.notes == ()
    assert cube["probs"].dims == ("image", "eu", "au", "class", "z", "y", "x")
    assert dict(cube["probs"].sizes) == {"image": 4, "eu": 3, "au": 1, "class": 3, "z": 5, "y": 6, "x": 7}
    np.testing.assert_array_equal(cube["probs"].values[:, :, 0], data["probs"])
    # The NIfTI labels were written as nibabel sees them, (x, y, z): they come back as (z, y, x).
    np.testing.assert_array_equal(cube["labels"].values, data["labels"])
    assert list(cube["image"].values) == list(data["cases"])
    assert cube.attrs["spacing"] == [2.5, 0.8, 0.7]
    assert cube.attrs["class_names"] == ["background", "liver", "tumour"]
    assert cube.attrs["eu_method"] == "ensemble"
    record = cube.attrs["import"]
    assert record["format"] == "nnunet"
    assert record["cases"]["case_002"]["members"] == [str(folder / "case_002.npz") for folder in data["members"]]
    assert record["cases"]["case_002"]["labels"] == [str(folder / "case_002.nii.gz") for folder in data["raters"]]


def test_pkl_files_are_never_unpickled(tmp_path):
    data = nnunet_folders(tmp_path, cases=("a",))
    import_nnunet(data["members"], tmp_path / "s.zarr")
    assert not (tmp_path / "UNPICKLED").exists()
    # The trap works: unpickling it would have written the file.
    import pickle

    with (data["members"][0] / "a.pkl").open("rb") as file:
        pickle.load(file)
    assert (tmp_path / "UNPICKLED").read_text() == "unpickled"


def test_scores_equal_those_of_the_arrays_scored_directly(tmp_path):
    data = nnunet_folders(tmp_path, cases=tuple(f"c{i}" for i in range(8)), shape=(4, 6, 5), raters=2)
    cases = tmp_path / "cases.csv"
    cases.write_text("case,domain,role\nc0,id,calibration\nc1,id,calibration\nc6,blur,test\nc7,blur,test\n")
    import_nnunet(data["members"], tmp_path / "s.zarr", labels=data["raters"], cases=cases)
    domains = ["id"] * 6 + ["blur"] * 2
    roles = ["calibration"] * 2 + ["test"] * 6
    direct = xr.Dataset(
        {
            "probs": (("image", "eu", "au", "class", "z", "y", "x"), data["probs"][:, :, None]),
            "labels": (("image", "rater", "z", "y", "x"), data["labels"]),
            "domain": ("image", np.array(domains, dtype=object)),
            "role": ("image", np.array(roles, dtype=object)),
        },
        coords={"image": np.array(data["cases"], dtype=object)},
        attrs={"schema": 1},
    )
    imported = uqeval.score(tmp_path / "s.zarr", preset="paper")
    expected = uqeval.score(direct, preset="paper")
    for task, split, measure, metric, aggregation in (
        ("oodd", "blur", "eu", "auroc", "border"),
        ("amb", "id", "au", "ncc", None),
        ("cal", "id", "tu", "ace", None),
    ):
        assert imported.value(task, split, measure, metric, aggregation) == pytest.approx(
            expected.value(task, split, measure, metric, aggregation), abs=1e-12
        )


def test_without_plans_json_simpleitk_is_assumed_and_said(tmp_path):
    data = nnunet_folders(tmp_path, cases=("a", "b"), plans=False)
    summary = import_nnunet(data["members"], tmp_path / "s.zarr", labels=data["raters"])
    assert len(summary.notes) == 1 and "SimpleITKIO" in summary.notes[0] and "(z, y, x)" in summary.notes[0]
    np.testing.assert_array_equal(open_cube(tmp_path / "s.zarr")["labels"].values, data["labels"])


def test_a_2d_prediction_becomes_a_2d_image(tmp_path):
    data = nnunet_folders(tmp_path, cases=("a", "b"), shape=(1, 6, 7))
    import_nnunet(data["members"], tmp_path / "s.zarr", labels=data["raters"])
    cube = open_cube(tmp_path / "s.zarr")
    assert cube["probs"].dims == ("image", "eu", "au", "class", "y", "x")
    np.testing.assert_array_equal(cube["probs"].values[:, :, 0], data["probs"][:, :, :, 0])
    np.testing.assert_array_equal(cube["labels"].values, data["labels"][:, :, 0])
    assert cube.attrs["spacing"] == [0.8, 0.7]


def test_png_labels_of_2d_predictions(tmp_path):
    from PIL import Image

    data = nnunet_folders(tmp_path, cases=("a",), shape=(1, 6, 7), raters=0)
    folder = tmp_path / "png_rater"
    folder.mkdir()
    labels = np.random.default_rng(3).integers(0, 3, size=(6, 7)).astype(np.uint8)
    Image.fromarray(labels).save(folder / "a.png")
    import_nnunet(data["members"], tmp_path / "s.zarr", labels=[folder])
    np.testing.assert_array_equal(open_cube(tmp_path / "s.zarr")["labels"].values[0, 0], labels)


def test_cases_file_sets_domains_and_roles_and_class_names_override(tmp_path):
    data = nnunet_folders(tmp_path, cases=("a", "b", "c"))
    cases = tmp_path / "cases.csv"
    cases.write_text("case,domain,role\nb,scanner2,test\na,id,calibration\n")
    import_nnunet(data["members"], tmp_path / "s.zarr", cases=cases, class_names="bg,organ,lesion")
    cube = open_cube(tmp_path / "s.zarr")
    assert list(cube["domain"].values) == ["id", "scanner2", "id"]
    assert list(cube["role"].values) == ["calibration", "test", "test"]
    assert cube.attrs["class_names"] == ["bg", "organ", "lesion"]


def _interrupting(monkeypatch, case: str, error: BaseException) -> None:
    """Make reading ``case`` of the second member raise ``error`` (Ctrl-C, a damaged file)."""
    from uqeval.importers import nnunet

    original = nnunet.read_npz

    def read(path, key=None):
        if path.name == f"{case}.npz" and path.parent.name == "fold_1":
            raise error
        return original(path, key)

    monkeypatch.setattr(nnunet, "read_npz", read)


def test_an_interrupted_import_resumes_after_the_last_whole_case(tmp_path, monkeypatch):
    data = nnunet_folders(tmp_path)
    with monkeypatch.context() as patch:
        _interrupting(patch, "case_002", KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            import_nnunet(data["members"], tmp_path / "s.zarr")
    assert CubeWriter.progress(tmp_path / "s.zarr").n_images == 2
    with pytest.raises(UQEvalError, match="incomplete"):
        open_cube(tmp_path / "s.zarr")
    summary = import_nnunet(data["members"], tmp_path / "s.zarr")
    assert (summary.n_images, summary.resumed) == (4, 2)
    cube = open_cube(tmp_path / "s.zarr")
    np.testing.assert_array_equal(cube["probs"].values[:, :, 0], data["probs"])
    assert list(cube.attrs["import"]["cases"]) == list(data["cases"])


def test_a_file_that_fails_midway_leaves_an_incomplete_store_and_says_so(tmp_path, monkeypatch):
    data = nnunet_folders(tmp_path)
    _interrupting(monkeypatch, "case_001", UQEvalError("case_001.npz: cannot be read"))
    with pytest.raises(UQEvalError) as raised:
        import_nnunet(data["members"], tmp_path / "s.zarr")
    assert str(raised.value) == (
        "case_001.npz: cannot be read (the store keeps the 1 case(s) written before and reads as incomplete; "
        "run the same import again to continue it)"
    )
    with pytest.raises(UQEvalError, match="incomplete"):
        open_cube(tmp_path / "s.zarr")
    _interrupting(monkeypatch, "case_000", UQEvalError("case_000.npz: cannot be read"))
    other = tmp_path / "t.zarr"
    with pytest.raises(UQEvalError, match=r"cannot be read \(no store was written\)"):
        import_nnunet(data["members"], other)
    assert not other.exists()


def test_a_store_that_another_import_began_is_not_resumed(tmp_path, monkeypatch):
    data = nnunet_folders(tmp_path)
    with monkeypatch.context() as patch:
        _interrupting(patch, "case_002", KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            import_nnunet(data["members"], tmp_path / "s.zarr")
    with pytest.raises(UQEvalError, match="cannot resume: `probs` holds cubes of shape"):
        import_nnunet(data["members"][:2], tmp_path / "s.zarr")  # fewer members
    for folder in data["members"]:
        (folder / "case_000.npz").rename(folder / "case_zzz.npz")
    with pytest.raises(UQEvalError, match="are not the first cases of this import; pass --overwrite"):
        import_nnunet(data["members"], tmp_path / "s.zarr")
    assert import_nnunet(data["members"], tmp_path / "s.zarr", overwrite=True).resumed == 0


def test_a_complete_store_is_replaced_only_with_overwrite(tmp_path):
    data = nnunet_folders(tmp_path, cases=("a",))
    import_nnunet(data["members"], tmp_path / "s.zarr")
    with pytest.raises(UQEvalError, match="already exists; pass --overwrite"):
        import_nnunet(data["members"], tmp_path / "s.zarr")
    assert import_nnunet(data["members"], tmp_path / "s.zarr", overwrite=True).n_images == 1


def _bad(tmp_path, change) -> str:
    """The message of importing folders spoilt by ``change``; no store is left behind."""
    data = nnunet_folders(tmp_path, cases=("a", "b"))
    arguments = {"members": data["members"], "out": tmp_path / "s.zarr", "labels": data["raters"]}
    arguments.update(change(data) or {})
    with pytest.raises(UQEvalError) as raised:
        import_nnunet(**arguments)
    assert not (tmp_path / "s.zarr").exists()
    return str(raised.value)


def test_a_missing_case_is_named_with_its_member(tmp_path):
    message = _bad(tmp_path, lambda data: (data["members"][2] / "b.npz").unlink())
    assert "fold_2: lacks case 'b' (b.npz), which" in message and "fold_0 holds" in message


def test_a_shape_mismatch_names_the_member_the_case_and_both_shapes(tmp_path):
    def change(data):
        np.savez_compressed(data["members"][1] / "b.npz", probabilities=np.full((3, 5, 6, 6), 1 / 3, np.float32))

    message = _bad(tmp_path, change)
    assert "case 'b': member" in message and "fold_1 has probabilities of shape (3, 5, 6, 6)" in message
    assert "fold_0 has (3, 5, 6, 7)" in message


def test_a_wrong_key_is_named(tmp_path):
    def change(data):
        np.savez_compressed(data["members"][0] / "a.npz", softmax=np.full((3, 5, 6, 7), 1 / 3, np.float32))

    assert "a.npz: holds the array(s) 'softmax', not 'probabilities'" in _bad(tmp_path, change)


def test_sigmoid_outputs_are_refused_with_the_reason(tmp_path):
    def change(data):
        np.savez_compressed(data["members"][0] / "a.npz", probabilities=np.full((3, 5, 6, 7), 0.9, np.float32))

    message = _bad(tmp_path, change)
    assert "sum to 2.7..2.7 over the classes, not 1: sigmoid (region-based) outputs are refused" in message


def test_region_based_training_is_refused_from_dataset_json(tmp_path):
    def change(data):
        dataset = {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}
        (data["members"][0] / "dataset.json").write_text(json.dumps(dataset))

    message = _bad(tmp_path, change)
    assert "trained region-based (regions 'whole')" in message and "sigmoid" in message


def test_an_unreadable_label_file_is_named(tmp_path):
    def change(data):
        (data["raters"][1] / "a.nii.gz").write_bytes(b"not a nifti file")

    message = _bad(tmp_path, change)
    assert "rater_1/a.nii.gz: cannot be read as NIfTI" in message


def test_missing_labels_and_unknown_cases_are_named(tmp_path):
    assert "--labels" in _bad(tmp_path, lambda data: (data["raters"][0] / "b.nii.gz").unlink())
    listed = tmp_path / "cases.csv"
    listed.write_text("case,domain,role\nzz,id,test\n")
    message = _bad(tmp_path / "x", lambda data: {"cases": listed})
    assert "lists case 'zz', which the prediction folder" in message


def test_labels_of_another_shape_are_named(tmp_path):
    def change(data):
        write_nifti(data["raters"][0] / "b.nii.gz", np.zeros((7, 6, 5), np.uint8))

    assert "labels of shape (7, 6, 5) (in the probabilities' axis order) but the probabilities are (5, 6, 7)" in (
        _bad(tmp_path, change)
    )


def test_without_nibabel_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    data = nnunet_folders(tmp_path, cases=("a",))
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(UQEvalError, match=r"needs nibabel, which is not installed: pip install 'uqeval\[import\]'"):
        import_nnunet(data["members"], tmp_path / "s.zarr", labels=data["raters"])


@pytest.mark.cli
def test_the_command_imports_and_bad_folders_exit_2_with_one_line(tmp_path):
    data = nnunet_folders(tmp_path, cases=("a", "b"))
    members = [str(folder) for folder in data["members"]]
    raters = [argument for folder in data["raters"] for argument in ("--labels", str(folder))]
    result = run_cli("import", "nnunet", *members, "--out", str(tmp_path / "s.zarr"), *raters)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and "2 images" in result.stderr
    assert zarr.open_group(tmp_path / "s.zarr").attrs["import"]["format"] == "nnunet"
    (data["members"][1] / "b.npz").unlink()
    result = run_cli("import", "nnunet", *members, "--out", str(tmp_path / "t.zarr"), *raters)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "lacks case 'b'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "t.zarr").exists()
