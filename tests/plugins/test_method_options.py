"""AU method options: ``configure``/``options`` on the reference methods, ``--au-option`` in train and study."""

from __future__ import annotations

import json
import re

import pytest
from helpers import run_cli

from uqeval.errors import UQEvalError
from uqeval_torch.au.diffusion import Diffusion
from uqeval_torch.au.prob_unet import ProbUNet
from uqeval_torch.au.softmax import Softmax
from uqeval_torch.au.ssn import SSN
from uqeval_torch.run import RunSettings, components, configured_au
from uqeval_torch.study import StudyOptions, plan_study


def test_options_are_the_scalar_constructor_settings():
    assert ProbUNet().options() == {
        "latent_dim": 6, "beta": 5e-4, "warmup_epochs": 32, "width_scale": 0.75, "fusion_layers": 4
    }  # fmt: skip
    assert SSN().options() == {"rank": 10, "epsilon": 1e-5, "mc_samples": 10, "diagonal_only_epochs": 10}
    assert Diffusion().options() == {"input_scale": 0.1, "steps": 10}
    assert Softmax().options() == {}


def test_configure_converts_strings_and_keeps_the_rest():
    method = ProbUNet(latent_dim=4, log_sigma_range=(-5.0, 2.0))
    changed = method.configure(beta="2.5e-3", warmup_epochs=" 8")
    assert (changed.beta, changed.warmup_epochs, changed.latent_dim) == (2.5e-3, 8, 4)
    assert type(changed.beta) is float and type(changed.warmup_epochs) is int
    assert method.beta == 5e-4, "configure returns a copy"
    assert ProbUNet().configure(beta=1).beta == 1.0
    assert type(ProbUNet().configure(beta=1).beta) is float


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        (ProbUNet(), {"gamma": 1}, "unknown option 'gamma' of AU method 'prob_unet'; options: latent_dim, beta"),
        (ProbUNet(), {"beta": "lots"}, "option 'beta' of AU method 'prob_unet' must be a number, got 'lots'"),
        (ProbUNet(), {"beta": "-1"}, "AU method 'prob_unet': beta must not be negative"),
        (ProbUNet(), {"latent_dim": "2.5"}, "option 'latent_dim' of AU method 'prob_unet' must be an integer"),
        (ProbUNet(), {"latent_dim": True}, "option 'latent_dim' of AU method 'prob_unet' must be an integer, got True"),
        (SSN(), {"rank": "0"}, "AU method 'ssn': rank must be at least 1"),
        (Softmax(), {"beta": "1"}, "unknown option 'beta' of AU method 'softmax'; options: none"),
    ],
)
def test_bad_options_name_the_method_and_the_option(method, options, message):
    with pytest.raises(UQEvalError) as raised:
        method.configure(**options)
    assert message in str(raised.value)


def test_a_third_party_method_without_configure_takes_no_options():
    class Plain:
        name = "plain"

    with pytest.raises(UQEvalError, match="AU method 'plain' takes no options"):
        configured_au(Plain(), {"beta": 1})


def test_run_settings_carry_the_options_to_the_method():
    settings = RunSettings(au="prob_unet", eu="none", data="synthetic", au_options={"beta": 2.5e-3})
    assert components(settings).au.beta == 2.5e-3
    assert components(RunSettings(au="prob_unet", eu="none", data="synthetic")).au.beta == 5e-4
    bad = RunSettings(au="prob_unet", eu="none", data="synthetic", au_options={"gamma": 1})
    with pytest.raises(UQEvalError) as raised:
        components(bad)
    assert raised.value.parameter == "au-option"


@pytest.mark.cli
def test_train_records_typed_options_and_refuses_bad_ones(tmp_path):
    run = tmp_path / "run"
    common = ["train", "--au", "prob_unet", "--eu", "none", "--data", "synthetic", "--out", str(run), "--quiet"]
    tiny = ["--size", "tiny", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    tiny += ["--data-option", "size=16", "--data-option", "n_train=4"]
    trained = run_cli(*common, *tiny, "--au-option", "beta=2.5e-3", "--au-option", "warmup_epochs=4")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((run / "run.json").read_text())["au_options"] == {"beta": 2.5e-3, "warmup_epochs": 4}
    bad = run_cli(*common, *tiny, "--au-option", "gamma=1")
    assert bad.returncode == 2
    assert "--au-option: unknown option 'gamma' of AU method 'prob_unet'" in bad.stderr
    assert "Traceback" not in bad.stderr
    malformed = run_cli(*common, *tiny, "--au-option", "beta")
    assert malformed.returncode == 2
    assert "--au-option 'beta': expected KEY=VALUE" in malformed.stderr


def test_the_study_passes_a_methods_options_to_its_runs_only():
    options = StudyOptions(au_options=("prob_unet.beta=2.5e-3", "ssn.rank=4"))
    plan = plan_study("out", au=["prob_unet", "ssn", "softmax"], eu=["ensemble"], options=options)
    flags = {step.name: step.command for step in plan.phase("train")}
    assert flags["train-prob_unet+ensemble-seed-0"][-2:] == ("--au-option", "beta=2.5e-3")
    assert flags["train-ssn+ensemble-seed-0"][-2:] == ("--au-option", "rank=4")
    assert "--au-option" not in flags["train-softmax+ensemble-seed-0"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("beta=2.5e-3", "expected METHOD.KEY=VALUE"),
        ("prob_unet.beta", "expected METHOD.KEY=VALUE"),
        ("diffusion.steps=5", "'diffusion' is not an AU method of this study (prob_unet)"),
    ],
)
def test_bad_study_options_are_refused(value, message):
    with pytest.raises(UQEvalError, match=re.escape(message)) as raised:
        plan_study("out", au=["prob_unet"], eu=["none"], options=StudyOptions(au_options=(value,)))
    assert raised.value.parameter == "au-option"
