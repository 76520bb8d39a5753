"""``bootstrap.npz``: a run's bootstrap resamples beside its ``scores.json``, for :func:`uqeval.compare`.

One ``numpy.savez_compressed`` archive (read with ``allow_pickle=False``):

- ``n``, ``seed``, ``confidence``: the bootstrap's (as ``scores.json`` records them);
- ``result_keys`` (row, 5) str: ``task, split, measure, aggregation, metric`` of each
  row of ``results`` (float64, (row, n)), its value in each resample;
- ``entanglement_keys`` (row, 2) str: ``task, split``, with ``u_correct``, ``u_wrong``
  and ``delta`` (float64, (row, n)) the entanglement rows' values in each resample.

Resample ``b`` of two runs scored with the same seed on stores of the same (domain,
role) strata draws the same images, so their values are paired.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.report.files import write_bytes
from uqeval.scoring.bootstrap import ENTANGLEMENT_VALUES, Bootstrap

#: The file's name in a report folder.
BOOTSTRAP_FILE = "bootstrap.npz"


def write_bootstrap(bootstrap: Bootstrap, folder: Path) -> Path:
    """Write ``folder/bootstrap.npz`` (atomically, as every report file)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        n=np.int64(bootstrap.n),
        seed=np.int64(bootstrap.seed),
        confidence=np.float64(bootstrap.confidence),
        result_keys=np.array(bootstrap.result_keys, dtype=str).reshape(-1, 5),
        results=bootstrap.results,
        entanglement_keys=np.array(bootstrap.entanglement_keys, dtype=str).reshape(-1, 2),
        **{name: bootstrap.entanglement[name] for name in ENTANGLEMENT_VALUES},
    )
    return write_bytes(folder / BOOTSTRAP_FILE, buffer.getvalue())


def read_bootstrap(folder: Path) -> Bootstrap | None:
    """The resamples in ``folder/bootstrap.npz``; None when the folder has none.

    Raises
    ------
    UQEvalError
        When the file is there but is not such an archive (naming it).
    """
    path = Path(folder) / BOOTSTRAP_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            result_keys = [tuple(str(part) for part in key) for key in archive["result_keys"]]
            entanglement_keys = [tuple(str(part) for part in key) for key in archive["entanglement_keys"]]
            n = int(archive["n"])
            bootstrap = Bootstrap(
                n,
                int(archive["seed"]),
                result_keys,
                np.asarray(archive["results"], dtype=np.float64).reshape(len(result_keys), n),
                entanglement_keys,
                {
                    name: np.asarray(archive[name], dtype=np.float64).reshape(len(entanglement_keys), n)
                    for name in ENTANGLEMENT_VALUES
                },
                float(archive["confidence"]),
            )
    except (OSError, ValueError, KeyError) as error:
        raise UQEvalError(f"{path}: not a bootstrap archive written by uqeval ({error})") from None
    return bootstrap
