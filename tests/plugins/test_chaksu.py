"""The ``chaksu`` dataset of uqeval-torch on a small fixture in the published layout.

The fixture (``write_release``) holds 300×400 RGB images in the release's folders: Remidio
Train 10 (one lacks Expert 3's cup mask, so 9 are usable: an uneven 5-fold split),
Remidio Test 3 (one with its disc at a corner), Bosch and Forus 1 in Train and 1 in Test;
extensions ``.JPG``, ``.jpg``, ``.png`` and ``.tif`` for images and ``.png``, ``.tif`` and
``.PNG`` for masks. Each expert's disc and cup are circles shifted a little from expert to
expert; Expert 1's disc and Expert 3's cup carry a stray speck, and Expert 5's cup pokes
out of its disc. Its discs are about 40 px across, so the tests scale the cameras' mean
disc diameters down (``DIAMETER``: crops of 60, 80 and 64 px) by monkeypatching
``chaksu.MEAN_DISC_DIAMETER``; one test keeps the study's values (crops of 451–896 px,
mostly zero padding). Expected crops are computed here from the circles as drawn (before
the specks), with ``np.pad``, independently of the module.
"""

from __future__ import annotations

import doctest
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import KFold

from uqeval import UQEvalError
from uqeval.contracts import DatasetSource, Sample
from uqeval_torch.data import chaksu
from uqeval_torch.data.chaksu import ChaksuDataset, kfold_split

HEIGHT, WIDTH = 300, 400
EXPERTS = [f"Expert {k}" for k in range(1, 6)]
STUDY_DIAMETER = dict(chaksu.MEAN_DISC_DIAMETER)
#: Scaled-down mean disc diameters: crop sides 60 (Bosch), 80 (Forus), 64 (Remidio; 64.5 rounds to even).
DIAMETER = {"Bosch": 30.0, "Forus": 40.0, "Remidio": 32.25}
SIDE = {"Bosch": 60, "Forus": 80, "Remidio": 64}
MASK_EXTENSIONS = [".png", ".tif", ".png", ".PNG", ".png"]
#: The image that lacks a mask, and which.
MISSING = ("Train/Remidio/IMG_0007", ("Expert 3/Cup",))
#: The image with its disc at the top-left corner.
CORNER = "Test/Remidio/corner"


@dataclass
class Truth:
    """An image of the fixture as drawn: its file and each expert's disc and cup (cleaned)."""

    path: Path
    device: str
    discs: list[np.ndarray]
    cups: list[np.ndarray]
    specks: list[tuple[int, int, int]]  # (expert, y, x) of a speck


def disk(cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def save_mask(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def write_image(
    root: Path, image_id: str, ext: str, centre: tuple[int, int], radius: int, nudge: tuple[int, int]
) -> Truth:
    """One image with its ten masks (less the one in ``MISSING``) in the published layout.

    ``nudge`` moves Expert 1's disc up and right, so that the discs' bounding box can have
    a centre at half a pixel, where the crop's corner is rounded (half to even).
    """
    split, device, stem = image_id.split("/")
    cy, cx = centre
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    image = np.stack([60 + yy * 0.2, 25 + xx * 0.15, 10 + (yy + xx) % 7], axis=-1).astype(np.uint8)
    image[disk(cy, cx, radius)] = (220, 160, 60)
    image[disk(cy + 1, cx - 1, 0.45 * radius)] = (250, 230, 150)
    path = root / split / "1.0_Original_Fundus_Images" / device / f"{stem}{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)
    truth = Truth(path, device, [], [], [])
    for k, expert in enumerate(EXPERTS):
        shift = k - 2
        disc = disk(cy + shift - (k == 0) * nudge[0], cx - shift + (k == 0) * nudge[1], radius + shift)
        cup = disk(cy + 1, cx + shift, 0.45 * radius + 0.5 * k)
        if k == 4:  # pokes out of the disc: disc := disc ∪ cup
            cup = disk(cy, cx + 0.8 * radius, 0.4 * radius)
        drawn_disc, drawn_cup = disc.copy(), cup.copy()
        if k == 0:  # a speck far from the disc would move the crop if it were kept
            y = cy + 70 if cy < 150 else cy - 70
            drawn_disc[y : y + 3, cx : cx + 3] = True
            truth.specks.append((k, y + 1, cx + 1))
        if k == 2:  # a speck outside the disc would join the disc if it were kept
            x = cx + radius + 5
            drawn_cup[cy : cy + 2, x : x + 2] = True
            truth.specks.append((k, cy, x))
        folder = root / split / "3.0_Doctors_Annotations_Binary_OD_OC" / expert / device
        for part, mask in (("Disc", drawn_disc), ("Cup", drawn_cup)):
            if image_id == MISSING[0] and f"{expert}/{part}" in MISSING[1]:
                (folder / part).mkdir(parents=True, exist_ok=True)
                continue
            save_mask(mask, folder / part / f"{stem}{MASK_EXTENSIONS[k]}")
        truth.discs.append(disc | cup)
        truth.cups.append(cup)
    return truth


def write_release(root: Path) -> dict[str, Truth]:
    """The fixture: every folder of the release, the images of the module docstring."""
    rng = np.random.default_rng(5)
    images = {}
    remidio_train = ["10", "2", "A", "b", "IMG_0001", "IMG_0002", "IMG_0003", "IMG_0007", "img_0004", "Z9"]
    exts = [".JPG", ".jpg", ".png", ".tif"]
    for k, stem in enumerate(remidio_train):
        images[f"Train/Remidio/{stem}"] = exts[k % 4]
    for stem in ("T1", "T2"):
        images[f"Test/Remidio/{stem}"] = ".JPG"
    for device in ("Bosch", "Forus"):
        images[f"Train/{device}/{device[0]}01"] = ".JPG"
        images[f"Test/{device}/{device[0]}02"] = ".png"
    truths = {}
    for image_id, ext in images.items():
        centre = (int(rng.integers(60, HEIGHT - 60)), int(rng.integers(60, WIDTH - 60)))
        nudge = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
        truths[image_id] = write_image(root, image_id, ext, centre, int(rng.integers(18, 24)), nudge)
    truths[CORNER] = write_image(root, CORNER, ".png", (12, 15), 20, (1, 1))
    # Files that are not images, or hidden, are ignored.
    (root / "Train/3.0_Doctors_Annotations_Binary_OD_OC/Expert 1/Remidio/Disc/Thumbs.db").write_bytes(b"x")
    (root / "Train/1.0_Original_Fundus_Images/Remidio/._IMG_0001.JPG").write_bytes(b"x")
    return truths


def expected(truth: Truth, side: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (3, size, size) and labels (5, size, size) computed independently from the drawn circles."""
    image = np.asarray(Image.open(truth.path).convert("RGB"))
    labels = np.stack([disc.astype(np.uint8) + cup for disc, cup in zip(truth.discs, truth.cups, strict=True)], -1)
    ys, xs = np.nonzero(np.any(truth.discs, axis=0))
    top = round(float(ys.min() + ys.max()) / 2 - side / 2)
    left = round(float(xs.min() + xs.max()) / 2 - side / 2)
    pads = ((side, side), (side, side), (0, 0))
    image = np.pad(image, pads)[top + side : top + 2 * side, left + side : left + 2 * side]
    labels = np.pad(labels, pads)[top + side : top + 2 * side, left + side : left + 2 * side]
    if size != side:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
        labels = np.stack(
            [np.asarray(Image.fromarray(r).resize((size, size), Image.Resampling.NEAREST)) for r in labels.T], -1
        ).transpose(1, 0, 2)
    pixels = image / 255
    pixels = (pixels - pixels.mean()) / pixels.std()
    return pixels.transpose(2, 0, 1), labels.transpose(2, 0, 1)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict[str, Truth]]:
    root = tmp_path_factory.mktemp("chaksu")
    return root, write_release(root)


@pytest.fixture(autouse=True)
def small_discs(monkeypatch):
    monkeypatch.setattr(chaksu, "MEAN_DISC_DIAMETER", DIAMETER)


@pytest.fixture
def copy(release, tmp_path) -> Path:
    """A copy of the fixture to break."""
    shutil.copytree(release[0], tmp_path / "root")
    return tmp_path / "root"


def everything(dataset: ChaksuDataset) -> dict[tuple[str, str], list[Sample]]:
    return {
        (role, domain): list(dataset.samples(role, domain))
        for domain in dataset.domains
        for role in ("train", "calibration", "test")
    }


# --- the contract ---------------------------------------------------------------------------------


def test_is_a_dataset_source():
    dataset = ChaksuDataset()  # the plugin's default instance: no root, and constructs
    assert isinstance(dataset, DatasetSource)
    assert dataset.name == "chaksu"
    assert (dataset.in_channels, dataset.n_classes) == (3, 3)
    assert tuple(dataset.class_names) == ("background", "disc", "cup")
    assert tuple(dataset.domains) == ("id", "bosch", "forus")
    assert dataset.description and "\n" not in dataset.description
    assert dataset.options() == {"root": "", "size": 128}


def test_docstring_examples():
    results = doctest.testmod(chaksu)
    assert results.attempted > 0
    assert results.failed == 0


def test_study_settings():
    assert STUDY_DIAMETER == {"Bosch": 225.29, "Forus": 325.02, "Remidio": 448.05}
    assert {device: round(2 * d) for device, d in STUDY_DIAMETER.items()} == {
        "Bosch": 451,
        "Forus": 650,
        "Remidio": 896,
    }


def test_configure(tmp_path):
    dataset = ChaksuDataset().configure(root=tmp_path, size="64")
    assert dataset.options() == {"root": str(tmp_path), "size": 64}
    assert dataset.configure(size=128).options() == {"root": str(tmp_path), "size": 128}
    assert ChaksuDataset(**dataset.options()) == dataset


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sized": 64}, r"unknown option 'sized' of dataset 'chaksu'; options: root, size"),
        ({"size": "big"}, r"option 'size' of dataset 'chaksu' must be an integer, got 'big'"),
        ({"size": 96}, r"option 'size' of dataset 'chaksu' must be 128 or 64, got 96"),
        ({"size": True}, r"option 'size' of dataset 'chaksu' must be an integer, got True"),
        ({"size": 64.0}, r"option 'size' of dataset 'chaksu' must be an integer, got 64.0"),
        ({"root": 3}, r"option 'root' of dataset 'chaksu' must be a folder path, got 3"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(UQEvalError, match=message):
        ChaksuDataset().configure(**options)


def test_root_is_needed_to_load(tmp_path):
    with pytest.raises(UQEvalError, match=r"option 'root' of dataset 'chaksu' is not set: .* root=PATH"):
        ChaksuDataset().samples("train")
    missing = ChaksuDataset(root=str(tmp_path / "nowhere"))  # constructs: the files are looked at on first use
    with pytest.raises(UQEvalError, match=r"option 'root' of dataset 'chaksu': folder .*nowhere does not exist"):
        missing.samples("test", "bosch")
    with pytest.raises(UQEvalError, match="is not set"):
        ChaksuDataset().skipped()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: d.samples("validation"), r"unknown role 'validation' of dataset 'chaksu'; roles: train, "),
        (lambda d: d.samples("test", "blur"), r"unknown domain 'blur' of dataset 'chaksu'; domains: id, bosch, forus"),
        (lambda d: d.samples("test", seed=-1), r"seed of dataset 'chaksu' must be a non-negative integer, got -1"),
    ],
)
def test_bad_arguments(release, call, message):
    with pytest.raises(UQEvalError, match=message):
        call(ChaksuDataset(root=str(release[0])))


@pytest.mark.parametrize("size", [64, 128])
def test_samples_follow_the_contract(release, size):
    root, _ = release
    for (role, domain), samples in everything(ChaksuDataset(root=str(root), size=size)).items():
        for sample in samples:
            assert (sample.role, sample.domain) == (role, domain)
            assert sample.image.shape == (3, size, size) and sample.image.dtype == np.float32
            assert sample.labels.shape == (5, size, size) and sample.labels.dtype == np.uint8
            assert set(np.unique(sample.labels)) <= {0, 1, 2}
            assert (sample.labels == 1).any() and (sample.labels == 2).any()
            assert abs(float(sample.image.mean())) < 1e-4 and abs(float(sample.image.std()) - 1) < 1e-4
            split, device, _ = sample.image_id.split("/")
            assert split in ("Train", "Test") and device.lower() == (domain if domain != "id" else "remidio")


# --- splits and domains ---------------------------------------------------------------------------


def test_splits(release):
    root, truths = release
    samples = everything(ChaksuDataset(root=str(root), size=64))
    ids = {key: [sample.image_id for sample in value] for key, value in samples.items()}
    names = sorted(path.name for path in (root / "Train/1.0_Original_Fundus_Images/Remidio").iterdir())
    usable = [Path(name).stem for name in names if not name.startswith(".") and name.split(".")[0] != "IMG_0007"]
    assert len(usable) == 9
    train, held_out = next(KFold(5, shuffle=True, random_state=123).split(np.arange(len(usable))))
    assert ids["train", "id"] == [f"Train/Remidio/{usable[k]}" for k in train]
    assert ids["calibration", "id"] == [f"Train/Remidio/{usable[k]}" for k in held_out]
    assert (len(ids["train", "id"]), len(ids["calibration", "id"])) == (7, 2)
    assert ids["test", "id"] == ["Test/Remidio/T1", "Test/Remidio/T2", CORNER]
    assert ids["test", "bosch"] == ["Train/Bosch/B01", "Test/Bosch/B02"]
    assert ids["test", "forus"] == ["Train/Forus/F01", "Test/Forus/F02"]
    for domain in ("bosch", "forus"):
        assert ids["train", domain] == ids["calibration", domain] == []
    all_ids = [image_id for value in ids.values() for image_id in value]
    assert len(all_ids) == len(set(all_ids)) == len(truths) - 1


@pytest.mark.parametrize("n", [*range(5, 23), 810, 1074])
def test_kfold_split_is_sklearns(n):
    folds = KFold(5, shuffle=True, random_state=123).split(np.arange(n))
    for fold, (train, held_out) in enumerate(folds):
        ours = kfold_split(n, fold=fold)
        assert np.array_equal(ours[0], train) and np.array_equal(ours[1], held_out)
    if n == 810:  # the study's 648 / 162
        assert [len(part) for part in kfold_split(n)] == [648, 162]


# --- preprocessing --------------------------------------------------------------------------------


def test_crops_match_an_independent_computation(release):
    """At size = crop side (Remidio) nothing is resized: the crop is compared pixel by pixel."""
    root, truths = release
    dataset = ChaksuDataset(root=str(root), size=64)
    checked = 0
    for role in ("train", "calibration", "test"):
        for sample in dataset.samples(role):
            image, labels = expected(truths[sample.image_id], SIDE["Remidio"], 64)
            np.testing.assert_array_equal(sample.labels, labels)
            np.testing.assert_allclose(sample.image, image, atol=1e-5)
            checked += 1
    assert checked == 12


@pytest.mark.parametrize("size", [64, 128])
def test_resized_crops_match(release, size):
    """Bosch (60 px) and Forus (80 px) crops resized to 64, and every crop to 128."""
    root, truths = release
    dataset = ChaksuDataset(root=str(root), size=size)
    for domain in ("id", "bosch", "forus"):
        for sample in dataset.samples("test", domain):
            truth = truths[sample.image_id]
            image, labels = expected(truth, SIDE[truth.device], size)
            np.testing.assert_array_equal(sample.labels, labels)
            np.testing.assert_allclose(sample.image, image, atol=1e-5)


def test_labels_keep_the_largest_component_and_cup_in_disc(release):
    root, truths = release
    for sample in ChaksuDataset(root=str(root), size=64).samples("test"):
        truth = truths[sample.image_id]
        ys, xs = np.nonzero(np.any(truth.discs, axis=0))
        top = round(float(ys.min() + ys.max()) / 2 - 32)
        left = round(float(xs.min() + xs.max()) / 2 - 32)
        cup_speck = [(y - top, x - left) for expert, y, x in truth.specks if expert == 2]
        (y, x) = cup_speck[0]
        if 0 <= y < 64 and 0 <= x < 64:  # a cup speck outside the disc is dropped, not added to the disc
            assert sample.labels[2, y, x] == 0
        # Expert 5's cup pokes out of its drawn disc: the disc grows to hold it.
        poking = sample.labels[4] == 2
        assert poking.sum() > 0
        assert np.array_equal(sample.labels[4] > 0, (expected(truth, 64, 64)[1][4] > 0))
        # A label map per expert, and the experts differ.
        assert len({sample.labels[k].tobytes() for k in range(5)}) == 5


def test_zero_padding_at_the_border(release):
    root, truths = release
    samples = {sample.image_id: sample for sample in ChaksuDataset(root=str(root), size=64).samples("test")}
    corner = samples[CORNER]
    ys, xs = np.nonzero(np.any(truths[CORNER].discs, axis=0))
    top = round(float(ys.min() + ys.max()) / 2 - 32)
    left = round(float(xs.min() + xs.max()) / 2 - 32)
    assert top < 0 and left < 0
    padding = np.zeros((64, 64), dtype=bool)
    padding[:-top] = True
    padding[:, :-left] = True
    assert (corner.labels[:, padding] == 0).all()
    raw = np.asarray(Image.open(truths[CORNER].path).convert("RGB")) / 255
    crop = np.zeros((64, 64, 3))
    crop[-top:, -left:] = raw[: 64 + top, : 64 + left]
    zero = -crop.mean() / crop.std()  # where a 0 goes under the z-score
    np.testing.assert_allclose(corner.image[:, padding], zero, atol=1e-5)
    assert (corner.image[:, ~padding] > zero + 0.01).all()  # the fixture's image is nowhere black


def test_study_diameters_pad_the_small_fixture(release, monkeypatch):
    """With the study's diameters the Remidio crop (896 px) holds the whole 300×400 image."""
    monkeypatch.setattr(chaksu, "MEAN_DISC_DIAMETER", STUDY_DIAMETER)
    root, truths = release
    sample = next(iter(ChaksuDataset(root=str(root)).samples("test")))
    image, labels = expected(truths[sample.image_id], 896, 128)
    np.testing.assert_array_equal(sample.labels, labels)
    np.testing.assert_allclose(sample.image, image, atol=1e-5)
    assert 0.7 < (sample.labels == 0).all(axis=0).mean() < 1  # mostly padding and background


# --- skipped images, determinism, laziness --------------------------------------------------------


def test_skipped_images_are_counted(release, caplog):
    root, _ = release
    dataset = ChaksuDataset(root=str(root))
    with caplog.at_level(logging.WARNING, logger="uqeval_torch.data.chaksu"):
        counts = dataset.skipped()
    assert counts == {
        "Train/Bosch": 0,
        "Train/Forus": 0,
        "Train/Remidio": 1,
        "Test/Bosch": 0,
        "Test/Forus": 0,
        "Test/Remidio": 0,
    }
    assert dataset.skipped_images() == (MISSING,)
    assert dataset.note() == (
        "dataset 'chaksu': left out 1 image for which an expert has no mask, as the study did "
        "(Train/Remidio 1); first: Train/Remidio/IMG_0007 lacks Expert 3/Cup"
    )
    assert caplog.messages == [dataset.note()]  # logged once, when the files are indexed
    dataset.note()
    assert len(caplog.messages) == 1


def test_deterministic_and_indexed_once(release, monkeypatch):
    root, _ = release
    dataset = ChaksuDataset(root=str(root), size=64)
    assert "_index" not in vars(dataset)  # nothing is read at construction
    first = everything(dataset)
    calls = []
    monkeypatch.setattr(ChaksuDataset, "_find", lambda *args: calls.append(args))
    again = everything(dataset)
    assert calls == []  # the same instance does not look at the folders again
    monkeypatch.undo()
    monkeypatch.setattr(chaksu, "MEAN_DISC_DIAMETER", DIAMETER)
    other = everything(ChaksuDataset(root=str(root), size=64))
    for key, samples in first.items():
        for a, b, c in zip(samples, again[key], other[key], strict=True):
            assert a.image_id == b.image_id == c.image_id
            assert np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)
            assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, c.labels)
    assert next(iter(dataset.samples("test", "bosch", seed=3))).image_id == "Train/Bosch/B01"


# --- bad files ------------------------------------------------------------------------------------

MASKS = "3.0_Doctors_Annotations_Binary_OD_OC"
IMAGES = "1.0_Original_Fundus_Images"


def test_missing_expert_folder(copy):
    shutil.rmtree(copy / "Test" / MASKS / "Expert 4" / "Forus")
    with pytest.raises(
        UQEvalError, match=r"expert folder .*Expert 4/Forus/Disc is missing for the Forus images of Test"
    ):
        ChaksuDataset(root=str(copy)).samples("train")


def test_missing_cup_folder(copy):
    shutil.rmtree(copy / "Train" / MASKS / "Expert 2" / "Bosch" / "Cup")
    with pytest.raises(
        UQEvalError, match=r"expert folder .*Expert 2/Bosch/Cup is missing for the Bosch images of Train"
    ):
        ChaksuDataset(root=str(copy)).samples("test", "bosch")


def test_missing_image_folder(copy):
    shutil.rmtree(copy / "Test" / IMAGES / "Bosch")
    with pytest.raises(UQEvalError, match=r"image folder .*Test/1.0_Original_Fundus_Images/Bosch is missing"):
        ChaksuDataset(root=str(copy)).samples("test")


def test_mask_of_another_shape(copy):
    save_mask(np.ones((10, 12), dtype=bool), copy / "Test" / MASKS / "Expert 2" / "Forus" / "Cup" / "F02.tif")
    samples = ChaksuDataset(root=str(copy)).samples("test", "forus")
    with pytest.raises(
        UQEvalError, match=r"mask .*Expert 2/Forus/Cup/F02.tif is 10×12 px but its image .*F02.png is 300×400"
    ):
        list(samples)


def test_unreadable_image(copy):
    (copy / "Test" / IMAGES / "Bosch" / "B02.png").write_bytes(b"not a PNG")
    samples = ChaksuDataset(root=str(copy)).samples("test", "bosch")
    with pytest.raises(UQEvalError, match=r"cannot read image .*Test/1.0_Original_Fundus_Images/Bosch/B02.png"):
        list(samples)


def test_unreadable_mask(copy):
    (copy / "Test" / MASKS / "Expert 1" / "Bosch" / "Disc" / "B02.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UQEvalError, match=r"cannot read mask .*Expert 1/Bosch/Disc/B02.png"):
        list(ChaksuDataset(root=str(copy)).samples("test", "bosch"))


def test_no_disc(copy):
    for expert in EXPERTS:
        for part in ("Disc", "Cup"):
            folder = copy / "Train" / MASKS / expert / "Forus" / part
            for path in folder.glob("F01.*"):
                save_mask(np.zeros((HEIGHT, WIDTH), dtype=bool), path)
    with pytest.raises(
        UQEvalError, match=r"no expert marks a disc in image .*Train/1.0_Original_Fundus_Images/Forus/F01.JPG"
    ):
        list(ChaksuDataset(root=str(copy)).samples("test", "forus"))


def test_same_stem_twice(copy):
    shutil.copy(copy / "Test" / IMAGES / "Remidio" / "T1.JPG", copy / "Test" / IMAGES / "Remidio" / "T1.png")
    with pytest.raises(UQEvalError, match=r"images .*T1.JPG and .*T1.png have the same stem"):
        ChaksuDataset(root=str(copy)).samples("test")


def test_too_few_remidio_training_images(copy):
    for path in (copy / "Train" / IMAGES / "Remidio").iterdir():
        if path.stem not in ("2", "A", "b", "Z9", "IMG_0007"):  # IMG_0007 lacks a mask
            path.unlink()
    with pytest.raises(UQEvalError, match=r"Remidio holds 4 usable images; the 5-fold split needs at least 5"):
        ChaksuDataset(root=str(copy)).samples("train")


def test_png_mask_wins_over_other_extensions(copy, release):
    folder = copy / "Test" / MASKS / "Expert 1" / "Remidio" / "Disc"
    for decoy in ("T1.jpg", "T1.tif"):  # unreadable: picking either would fail
        (folder / decoy).write_bytes(b"not a mask")
    ours = next(iter(ChaksuDataset(root=str(copy), size=64).samples("test")))
    _, labels = expected(release[1]["Test/Remidio/T1"], SIDE["Remidio"], 64)
    assert ours.image_id == "Test/Remidio/T1"
    np.testing.assert_array_equal(ours.labels, labels)
