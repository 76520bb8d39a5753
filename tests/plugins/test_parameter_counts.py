"""Full-size parameter counts of the four AU methods against the study's.

The study's code (JakobLC/DiffUncertainty, ``um/models/diff_unet2D_module.py``) built on
LIDC (grey replicated to 3 channels, 2 classes) gives exactly these counts; the paper
rounds them to 15.78 / 15.80 / 15.81 / 16.89 M.
"""

from __future__ import annotations

import pytest

from uqeval_torch.au.diffusion import Diffusion
from uqeval_torch.au.prob_unet import ProbUNet
from uqeval_torch.au.softmax import Softmax
from uqeval_torch.au.ssn import SSN
from uqeval_torch.backbone import Backbone, parameter_count

#: The study's code's counts, 3 input channels and 2 classes.
STUDY = {
    "softmax": (Softmax(), 15_787_042),
    "ssn": (SSN(), 15_793_528),
    "diffusion": (Diffusion(), 15_808_354),
    "prob_unet": (ProbUNet(), 16_894_076),
}
#: The allowed relative difference; ours are exact.
TOLERANCE = 1e-3


@pytest.mark.parametrize("name", list(STUDY))
def test_full_size_parameter_counts(name):
    method, study = STUDY[name]
    count = parameter_count(method.build(Backbone("full"), in_channels=3, n_classes=2))
    assert abs(count - study) / study <= TOLERANCE
    assert count == study


def test_prob_unet_parts_match_the_study():
    model = ProbUNet().build(Backbone("full"), in_channels=3, n_classes=2)
    parts = {name: parameter_count(getattr(model, name)) for name in ("unet", "prior", "posterior", "fusion")}
    assert parts == {"unet": 9_302_786, "prior": 3_793_644, "posterior": 3_794_220, "fusion": 3_426}


def test_dropout_adds_no_parameters():
    plain = parameter_count(Softmax().build(Backbone("full"), in_channels=3, n_classes=2))
    dropped = parameter_count(Softmax().build(Backbone("full"), in_channels=3, n_classes=2, dropout=0.2))
    assert plain == dropped
