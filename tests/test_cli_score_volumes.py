"""Independent reviewer checks of volumes: 3D stores written with plain xarray straight from the
contract (asymmetric z, y, x; z-slab chunks; 2 and 3 classes; ignore labels), scored through the
CLI, and compared with references computed here from the definitions in docs/volumes.md with
numpy, scipy and scikit-learn (no uqeval function makes a reference value).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter
from scipy.special import expit, xlogy
from sklearn.calibration import _sigmoid_calibration
from sklearn.metrics import roc_auc_score

Z, Y, X = 6, 9, 11
EU, AU, RATERS = 3, 2, 3
EU_FLOOR = CONSTANT = 2.0**-18
PATCH = 10
MEASURES = ("au", "eu", "tu")
LAYOUT = [("id", "calibration", 6), ("id", "test", 8), ("blur", "test", 5), ("noise", "test", 6)]
SPREAD = {"id": (0.5, 1.0), "blur": (2.0, 0.4), "noise": (0.8, 2.2)}  # member (EU), sample (AU) spread


def _volume(rng: np.random.Generator, domain: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    member_spread, sample_spread = SPREAD[domain]
    base = gaussian_filter(rng.normal(size=(classes, Z, Y, X)), 1.5, axes=(1, 2, 3)) * 6
    members = member_spread * rng.normal(size=(EU, 1, classes, Z, Y, X))
    samples = sample_spread * rng.normal(size=(EU, AU, classes, Z, Y, X))
    logits = base + members + samples
    probs = np.exp(logits - logits.max(axis=2, keepdims=True))
    probs = (probs / probs.sum(axis=2, keepdims=True)).astype(np.float32)
    truth = base.argmax(axis=0)
    labels = np.repeat(truth[None], RATERS, axis=0).astype(np.uint8)
    flip = rng.random(labels.shape) < 0.15
    labels[flip] = rng.integers(0, classes, size=int(flip.sum()))
    labels[rng.random(labels.shape) < 0.05] = 255
    labels[:, 0, 0, :2] = 255  # voxels without any rater
    return probs, labels


def _build(path: Path, classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    probs, labels, domains, roles = [], [], [], []
    for domain, role, count in LAYOUT:
        for _ in range(count):
            p, lab = _volume(rng, domain, classes)
            probs.append(p)
            labels.append(lab)
            domains.append(domain)
            roles.append(role)
    ids = np.array([f"vol-{i:03d}" for i in range(len(probs))], dtype=object)
    dataset = xr.Dataset(
        {
            "probs": (("image", "eu", "au", "class", "z", "y", "x"), np.stack(probs)),
            "labels": (("image", "rater", "z", "y", "x"), np.stack(labels)),
            "domain": ("image", np.array(domains, dtype=object)),
            "role": ("image", np.array(roles, dtype=object)),
        },
        coords={"image": ids},
        attrs={
            "schema": 1,
            "class_names": [f"class{c}" for c in range(classes)],
            "background": 0,
            "spacing": [2.5, 0.8, 0.8],
        },
    )
    encoding = {
        "probs": {"chunks": (1, EU, AU, classes, 4, Y, X)},  # z-slabs of 4: the last slab is short
        "labels": {"chunks": (1, RATERS, 4, Y, X)},
    }
    dataset.to_zarr(path, zarr_format=3, mode="w", consolidated=False, encoding=encoding)
    return {"probs": np.stack(probs), "labels": np.stack(labels), "domain": np.array(domains), "role": np.array(roles)}


# --------------------------------------------------------------------------- references


def _decompose(p: np.ndarray) -> dict[str, np.ndarray]:
    p = p.astype(np.float64)
    member = p.mean(axis=1)
    mean = member.mean(axis=0)
    tu = -xlogy(mean, mean).sum(axis=0)
    au = (-xlogy(member, member).sum(axis=1)).mean(axis=0)
    eu = tu - au
    eu[eu < EU_FLOOR] = 0.0
    return {"au": au, "eu": eu, "tu": tu, "pred": mean.argmax(axis=0)}


def _border(pred: np.ndarray) -> int:
    """6-neighbour voxel pairs whose predicted class differs."""
    return int(sum((np.diff(pred, axis=axis) != 0).sum() for axis in range(pred.ndim)))


def _patch_max(u: np.ndarray) -> float:
    window = tuple(min(PATCH, size) for size in u.shape)
    return float(sliding_window_view(u, window).mean(axis=tuple(range(u.ndim, 2 * u.ndim))).max())


def _aggregate(name: str, u: np.ndarray, pred: np.ndarray) -> float:
    if name == "mean":
        return float(u.mean())
    if name == "sum":
        return float(u.sum())
    if name == "patch_max":
        return _patch_max(u)
    if name == "area":
        return float(u.sum() / max(int((pred != 0).sum()), 1))
    return float(u.sum() / max(_border(pred), 1))


def _rater_stats(labels: np.ndarray, pred: np.ndarray, classes: int):
    valid = labels != 255
    count = valid.sum(axis=0)
    has = count > 0
    safe = np.maximum(count, 1)
    g = 1.0 - sum((((labels == c) & valid).sum(axis=0) / safe) ** 2 for c in range(classes))
    w = ((labels == pred[None]) & valid).sum(axis=0) / safe
    return g, w, has


def _ncc(u: np.ndarray, g: np.ndarray, has: np.ndarray) -> float:
    u, g = u[has], g[has]
    if np.ptp(u) <= CONSTANT or np.ptp(g) <= CONSTANT:
        return np.nan
    return float(np.corrcoef(u, g)[0, 1])


def _ace(confidence: np.ndarray, w: np.ndarray) -> float:
    index = np.minimum(np.floor(confidence * 20).astype(int), 19)
    return float(np.mean([abs(w[index == k].mean() - confidence[index == k].mean()) for k in np.unique(index)]))


def _auroc(scores: np.ndarray, domains: np.ndarray, roles: np.ndarray, domain: str) -> float:
    chosen = (roles == "test") & np.isin(domains, ["id", domain])
    return float(roc_auc_score(domains[chosen] == domain, scores[chosen]))


def _row(scores: dict, task: str, split: str, measure: str, metric: str, aggregation: str = "none") -> float:
    [value] = [
        r["value"]
        for r in scores["results"]
        if (r["task"], r["split"], r["measure"], r["metric"], r["aggregation"])
        == (task, split, measure, metric, aggregation)
    ]
    return np.nan if value is None else float(value)


def _score(store: Path, out: Path, *args: str) -> dict:
    result = run_cli("score", str(store), "--json", "--no-plots", "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module", params=[2, 3], ids=["2-classes", "3-classes"])
def world(request, tmp_path_factory):
    classes = request.param
    root = tmp_path_factory.mktemp(f"volumes{classes}")
    data = _build(root / "cube.zarr", classes, seed=28 + classes)
    maps = [_decompose(p) for p in data["probs"]]
    stats = [_rater_stats(lab, m["pred"], classes) for lab, m in zip(data["labels"], maps, strict=True)]
    aggregations = ("mean", "sum", "patch_max", "area", "border")
    return {
        "classes": classes,
        "data": data,
        "maps": maps,
        "stats": stats,
        "volume": _score(root / "cube.zarr", root / "volume", "--aggregation", ",".join(aggregations)),
        "slice": _score(root / "cube.zarr", root / "slice", "--unit", "slice"),
        "aggregations": aggregations,
    }


# --------------------------------------------------------------------------- checks


@pytest.mark.cli
def test_ood_auroc_per_volume_for_every_aggregation(world):
    data, maps = world["data"], world["maps"]
    for aggregation in world["aggregations"]:
        for measure in MEASURES:
            scores = np.array([_aggregate(aggregation, m[measure], m["pred"]) for m in maps])
            for domain in ("blur", "noise"):
                expected = _auroc(scores, data["domain"], data["role"], domain)
                got = _row(world["volume"], "oodd", domain, measure, "auroc", aggregation)
                assert got == pytest.approx(expected, abs=1e-12), (aggregation, measure, domain)


@pytest.mark.cli
def test_ncc_per_volume(world):
    data, maps, stats = world["data"], world["maps"], world["stats"]
    for split in ("id", "blur", "noise"):
        chosen = np.flatnonzero((data["role"] == "test") & (data["domain"] == split))
        for measure in MEASURES:
            values = np.array([_ncc(maps[i][measure], stats[i][0], stats[i][2]) for i in chosen])
            expected = float(np.nanmean(values))
            assert _row(world["volume"], "amb", split, measure, "ncc") == pytest.approx(expected, abs=1e-6)


@pytest.mark.cli
def test_calibration_ace_pools_voxels(world):
    data, maps, stats = world["data"], world["maps"], world["stats"]
    fitting = np.flatnonzero((data["role"] == "calibration") & (data["domain"] == "id"))
    for measure in MEASURES:
        u = np.concatenate([maps[i][measure][stats[i][2]] for i in fitting])
        w = np.concatenate([stats[i][1][stats[i][2]] for i in fitting])
        a, b = _sigmoid_calibration(
            np.r_[-u, -u], np.r_[np.ones(u.size), np.zeros(u.size)], sample_weight=np.r_[w, 1 - w]
        )
        chosen = np.flatnonzero((data["role"] == "test") & (data["domain"] == "id"))
        u = np.concatenate([maps[i][measure][stats[i][2]] for i in chosen])
        w = np.concatenate([stats[i][1][stats[i][2]] for i in chosen])
        expected = _ace(expit(-b + a * u), w)  # uqeval's σ(intercept − slope·U) with slope = −a, intercept = −b
        assert _row(world["volume"], "cal", "id", measure, "ace") == pytest.approx(expected, abs=2e-4)


@pytest.mark.cli
def test_per_slice_auroc_and_ncc(world):
    data, maps, stats = world["data"], world["maps"], world["stats"]
    domains, roles = np.repeat(data["domain"], Z), np.repeat(data["role"], Z)
    for measure in MEASURES:
        scores = np.array([_aggregate("border", m[measure][z], m["pred"][z]) for m in maps for z in range(Z)])
        for domain in ("blur", "noise"):
            expected = _auroc(scores, domains, roles, domain)
            assert _row(world["slice"], "oodd", domain, measure, "auroc", "border") == pytest.approx(
                expected, abs=1e-12
            )
        chosen = np.flatnonzero((data["role"] == "test") & (data["domain"] == "id"))
        values = np.array([_ncc(maps[i][measure][z], stats[i][0][z], stats[i][2][z]) for i in chosen for z in range(Z)])
        assert _row(world["slice"], "amb", "id", measure, "ncc") == pytest.approx(float(np.nanmean(values)), abs=1e-6)
    assert world["slice"]["unit"] == "slice"
    assert world["slice"]["n_images"]["id"] == 8 * Z
