"""Prediction folders written from known arrays, as nnU-Net and plain scripts write them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


#: A file whose unpickling would run code: it would write the file named in its payload.
class Trap:
    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "unpickled"))


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def write_nifti(path: Path, array_zyx: np.ndarray, spacing_zyx=(2.5, 0.8, 0.7)) -> None:
    """Write a (z, y, x) array as nibabel sees NIfTI, (x, y, z), with the voxel size in its header."""
    import nibabel

    data = array_zyx.transpose(tuple(reversed(range(array_zyx.ndim))))
    image = nibabel.Nifti1Image(data, affine=np.diag([*reversed(spacing_zyx), 1.0]))
    zooms = tuple(reversed(spacing_zyx))[: data.ndim]
    image.header.set_zooms(zooms + (1.0,) * (data.ndim - len(zooms)))
    nibabel.save(image, str(path))


def nnunet_folders(
    root: Path,
    *,
    members: int = 3,
    cases: tuple[str, ...] = ("case_000", "case_001", "case_002", "case_003"),
    shape: tuple[int, ...] = (5, 6, 7),
    n_classes: int = 3,
    raters: int = 2,
    plans: bool = True,
    seed: int = 0,
) -> dict[str, object]:
    """Member folders ``root/fold_i`` (``.npz``, segmentation, trap ``.pkl``, dataset.json,
    plans.json) and rater folders ``root/rater_r``; returns the arrays they were written from:
    ``probs`` (case, member, class, *shape) and ``labels`` (case, rater, *shape)."""
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(len(cases), members, n_classes, *shape)) * 2, axis=2).astype(np.float32)
    labels = rng.integers(0, n_classes, size=(len(cases), raters, *shape)).astype(np.uint8)
    folders = []
    for member in range(members):
        folder = root / f"fold_{member}"
        folder.mkdir(parents=True)
        folders.append(folder)
        (folder / "dataset.json").write_text(
            json.dumps(
                {
                    "labels": {name: value for value, name in enumerate(["background", "liver", "tumour"][:n_classes])},
                    "file_ending": ".nii.gz",
                }
            )
        )
        if plans:
            (folder / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
        for index, case in enumerate(cases):
            np.savez_compressed(folder / f"{case}.npz", probabilities=probs[index, member])
            segmentation = probs[index, member].argmax(axis=0).astype(np.uint8)
            write_nifti(folder / f"{case}.nii.gz", segmentation if len(shape) == 3 else segmentation[None])
            with (folder / f"{case}.pkl").open("wb") as file:
                pickle.dump(Trap(root / "UNPICKLED"), file)
    rater_folders = []
    for rater in range(raters):
        folder = root / f"rater_{rater}"
        folder.mkdir()
        rater_folders.append(folder)
        for index, case in enumerate(cases):
            rater_labels = labels[index, rater]
            write_nifti(folder / f"{case}.nii.gz", rater_labels if len(shape) == 3 else rater_labels[None])
    return {"members": folders, "raters": rater_folders, "probs": probs, "labels": labels, "cases": cases}


def sample_files(
    root: Path,
    *,
    cases: tuple[str, ...] = ("c0", "c1", "c2"),
    members: int = 2,
    samples: int = 3,
    shape: tuple[int, ...] = (6, 7),
    n_classes: int = 3,
    raters: int = 2,
    seed: int = 1,
) -> dict[str, object]:
    """``root/preds/{case}/m{member}_s{sample}.npy`` (class, *shape) and 8-bit PNG labels
    ``root/labels/{case}_r{rater}.png``; returns the arrays: ``probs`` (case, member, sample,
    class, *shape), ``labels`` (case, rater, *shape)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(len(cases), members, samples, n_classes, *shape)) * 2, axis=3)
    probs = probs.astype(np.float32)
    labels = rng.integers(0, n_classes, size=(len(cases), raters, *shape)).astype(np.uint8)
    for index, case in enumerate(cases):
        folder = root / "preds" / case
        folder.mkdir(parents=True)
        for member in range(members):
            for sample in range(samples):
                np.save(folder / f"m{member}_s{sample}.npy", probs[index, member, sample])
    (root / "labels").mkdir()
    for index, case in enumerate(cases):
        for rater in range(raters):
            Image.fromarray(labels[index, rater]).save(root / "labels" / f"{case}_r{rater}.png")
    return {
        "probs_pattern": str(root / "preds" / "{case}" / "m{member}_s{sample}.npy"),
        "labels_pattern": str(root / "labels" / "{case}_r{rater}.png"),
        "probs": probs,
        "labels": labels,
        "cases": cases,
    }


def values_folder(
    root: Path,
    *,
    shape=(4, 5, 6),
    samples: int = 3,
    raters: int = 2,
    seed: int = 5,
    classes: int = 2,
    probabilities: bool = False,
    maps: bool = True,
) -> dict:
    """A ValUES experiment folder with the splits ``id`` and ``ood``: NIfTI sample
    segmentations, rater labels and AU/EU/TU maps; with ``probabilities``, each sample's
    probabilities in ``pred_prob/`` (one file per sample and class, both from ``01``, and
    the ``_mean_<class>`` files) and the segmentations their argmax. Returns what each
    image was written from (``probs``: (sample, class, *shape) float32)."""
    rng = np.random.default_rng(seed)
    written = {}
    map_folders = (("au", "aleatoric_uncertainty"), ("eu", "epistemic_uncertainty"), ("tu", "pred_entropy"))
    for split, images in (("id", ("0001", "0002", "0003")), ("ood", ("0101", "0102"))):
        folders = ["pred_seg", "gt_seg", *(["pred_prob"] if probabilities else [])]
        for folder in [*folders, *(folder for _, folder in map_folders if maps)]:
            (root / split / folder).mkdir(parents=True)
        for image in images:
            probs = softmax(rng.normal(scale=2.0, size=(samples, classes, *shape)), axis=1).astype(np.float32)
            if probabilities:
                segs = probs.argmax(axis=1).astype(np.uint8)
            else:
                segs = rng.integers(0, classes, size=(samples, *shape)).astype(np.uint8)
            labels = rng.integers(0, classes, size=(raters, *shape)).astype(np.uint8)
            uncertainty = {name: rng.random(shape).astype(np.float32) for name in ("au", "eu", "tu")}
            for sample in range(samples):
                write_nifti(root / split / "pred_seg" / f"{image}_{sample + 1:02d}.nii.gz", segs[sample])
                for index in range(classes) if probabilities else ():
                    path = root / split / "pred_prob" / f"{image}_{sample + 1:02d}_{index + 1:02d}.nii.gz"
                    write_nifti(path, probs[sample, index])
            write_nifti(root / split / "pred_seg" / f"{image}_mean.nii.gz", segs[0])
            for index in range(classes) if probabilities else ():
                write_nifti(
                    root / split / "pred_prob" / f"{image}_mean_{index + 1:02d}.nii.gz", probs[:, index].mean(0)
                )
            for rater in range(raters):
                write_nifti(root / split / "gt_seg" / f"{image}_{rater:02d}.nii.gz", labels[rater])
            for name, folder in map_folders if maps else ():
                write_nifti(root / split / folder / f"{image}.nii.gz", uncertainty[name])
            written[f"{split}/{image}"] = {"segs": segs, "labels": labels, "probs": probs, **uncertainty}
    return written
