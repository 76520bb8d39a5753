"""The package :mod:`uqeval.cube` as the rest of uqeval, its plugins and its users import it."""

from __future__ import annotations

import subprocess
import sys

import uqeval
from uqeval import UQEvalError


def test_import_does_not_import_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, uqeval; assert 'torch' not in sys.modules"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_public_api():
    for name in ("CubeWriter", "UQEvalError", "open_cube", "validate_cube", "check_cube_values", "decompose"):
        assert name in uqeval.__all__
        assert hasattr(uqeval, name)
    assert issubclass(UQEvalError, ValueError)


def test_the_names_other_modules_import_from_uqeval_cube_are_there():
    import uqeval.cube
    from uqeval.cube import contract, read, write

    wanted = {
        "CubeWriter": write,
        "default_compressor": write,
        "CHUNK_BYTES": write,
        "open_cube": read,
        "validate_cube": read,
        "check_cube_values": read,
        "softmax": read,
        "softmax_array": read,
        "WriteProgress": contract,
        "PROGRESS_ATTR": contract,
        "SCHEMA": contract,
        "FLOAT_DTYPES": contract,
    }
    for name, module in wanted.items():
        assert getattr(uqeval.cube, name) is getattr(module, name), name
        assert name in uqeval.cube.__all__
    assert uqeval.cube.PROBS_DIMS == ("image", "eu", "au", "class", "y", "x")
    assert uqeval.cube.LABELS_DIMS == ("image", "rater", "y", "x")
    assert uqeval.cube.INPUT_DIMS == ("image", "channel", "y", "x")
    for name in ("CubeWriter", "WriteProgress", "check_cube_values", "open_cube", "validate_cube"):
        assert getattr(uqeval, name) is getattr(uqeval.cube, name)
