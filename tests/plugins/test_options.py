"""One typed mechanism for ``KEY=VALUE`` options: datasets and AU methods declare typed
settings, and :func:`uqeval_torch.options.convert` turns a command line's strings into them."""

from __future__ import annotations

from pathlib import Path

import pytest

from uqeval import UQEvalError
from uqeval_torch.au.prob_unet import ProbUNet
from uqeval_torch.au.ssn import SSN
from uqeval_torch.data.chaksu import ChaksuDataset
from uqeval_torch.data.lidc import LIDCDataset
from uqeval_torch.data.synthetic import SyntheticDataset
from uqeval_torch.options import convert


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [("32", int, 32), (" 2.5e-3", float, 2.5e-3), (3, float, 3.0), ("true", bool, True), ("0", bool, False)],
)
def test_convert_reads_strings_and_widens_numbers(value, kind, expected):
    converted = convert("dataset 'x'", "option", value, kind)
    assert converted == expected and type(converted) is kind


def test_convert_takes_a_path_for_a_string_and_refuses_the_wrong_types():
    assert convert("dataset 'x'", "root", Path("/data"), str) == "/data"
    assert convert("dataset 'x'", "shifts", " fixed ", str) == "fixed"
    for value, kind in (("2.5", int), (True, int), ("maybe", bool), (1.5, int), (64.0, int)):
        with pytest.raises(UQEvalError, match=r"option 'option' of dataset 'x' must be"):
            convert("dataset 'x'", "option", value, kind)


def test_datasets_and_au_methods_declare_typed_options():
    assert SyntheticDataset.option_types() == {
        "size": int, "n_classes": int, "raters": int, "n_train": int, "n_calibration": int, "n_test": int,
        "shifts": str, "severity": float, "faint": float,
    }  # fmt: skip
    assert LIDCDataset.option_types() == ChaksuDataset.option_types() == {"root": str, "size": int}
    assert SSN.option_types() == {"rank": int, "epsilon": float, "mc_samples": int, "diagonal_only_epochs": int}
    assert "log_sigma_range" not in ProbUNet.option_types()  # a tuple is a constructor argument, not an option


@pytest.mark.parametrize(
    ("owner", "message"),
    [
        (SyntheticDataset(), "option 'size' of dataset 'synthetic' must be an integer, got 'big'"),
        (LIDCDataset(), "option 'size' of dataset 'lidc' must be an integer, got 'big'"),
        (ChaksuDataset(), "option 'size' of dataset 'chaksu' must be an integer, got 'big'"),
        (SSN(), "unknown option 'size' of AU method 'ssn'; options: rank, epsilon"),
    ],
)
def test_every_owner_converts_and_refuses_alike(owner, message):
    with pytest.raises(UQEvalError, match=message):
        owner.configure(size="big")


def test_configure_converts_and_keeps_the_other_settings():
    assert SyntheticDataset().configure(size="32", severity="2", shifts="fixed").options()["severity"] == 2.0
    assert LIDCDataset().configure(size="64", root=Path("/data")).options() == {"root": "/data", "size": 64}
    method = ProbUNet(log_sigma_range=(-5.0, 2.0)).configure(beta="1e-3")
    assert (method.beta, method.log_sigma_range) == (1e-3, (-5.0, 2.0))
