"""The sample-cube store: its contract, a validated reader and a resumable, atomic writer.

A cube store is a zarr group holding, per image, the softmax probabilities of every
member (``eu``) and sample (``au``) of a model, optionally the raters' label maps and the
input image, and the image's domain and role (docs/cube.md, schema 1); an image is a 2D
``(y, x)`` grid or a ``(z, y, x)`` volume. The writer writes zarr v3; the reader reads
zarr v3 and v2.

- :mod:`uqeval.cube.contract`: variables, dims, dtypes, attributes and rules, once;
- :mod:`uqeval.cube.read`: :func:`open_cube`, :func:`validate_cube`, :func:`check_cube_values`;
- :mod:`uqeval.cube.write`: :class:`CubeWriter`.
"""

from uqeval.cube.contract import (
    FLOAT_DTYPES,
    INPUT,
    LABELS,
    LOGITS,
    PROBS,
    PROGRESS_ATTR,
    SCHEMA,
    SPACING_ATTR,
    SPATIAL_DIMS,
    VOLUME_DIMS,
    WriteProgress,
    store_spatial_dims,
)
from uqeval.cube.read import check_cube_values, open_cube, softmax, softmax_array, validate_cube
from uqeval.cube.write import CHUNK_BYTES, CubeWriter, VolumeWriter, default_compressor

#: Dims of the probabilities (and logits), the labels and the input images, in order.
PROBS_DIMS = PROBS.dims
LABELS_DIMS = LABELS.dims
INPUT_DIMS = INPUT.dims

__all__ = [
    "CHUNK_BYTES",
    "FLOAT_DTYPES",
    "INPUT",
    "INPUT_DIMS",
    "LABELS",
    "LABELS_DIMS",
    "LOGITS",
    "PROBS",
    "PROBS_DIMS",
    "PROGRESS_ATTR",
    "SCHEMA",
    "SPACING_ATTR",
    "SPATIAL_DIMS",
    "VOLUME_DIMS",
    "CubeWriter",
    "VolumeWriter",
    "WriteProgress",
    "check_cube_values",
    "default_compressor",
    "open_cube",
    "softmax",
    "softmax_array",
    "store_spatial_dims",
    "validate_cube",
]
