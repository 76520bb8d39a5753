"""Per-split sums of the per-image calibration tables, folded in image order as batches arrive.

A calibration table holds bins × 3 numbers per image (1.4 KB for three measures at 20
bins), more than everything else scoring keeps of an image together. The pooled
scope needs only their sums per split, so each batch's tables are folded into those
sums as soon as every image before the batch is folded, and then dropped: the tables
held at any time are those of batches that arrived ahead of an earlier one (batches
read in parallel, or the fitted-on batches scored before the batches between them).

The sums are added image after image in source order, as ``tables[chosen].sum(axis=0)``
adds them, so that they are the same to the last bit however the batches arrive.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from uqeval.scoring.batches import runs


class OrderedSums:
    """Per measure and split, the sum of the images' calibration tables, in image order.

    Parameters
    ----------
    splits : mapping
        Split name → (image,) bool, the images it holds.
    n_images : int
    """

    def __init__(self, splits: Mapping[str, np.ndarray], n_images: int) -> None:
        self.splits = dict(splits)
        self.n_images = n_images
        self._sums: dict[str, dict[str, np.ndarray]] = {}
        self._next = 0
        self._waiting: dict[int, tuple[int, dict[str, np.ndarray]]] = {}

    def add(self, indices: np.ndarray, tables: Mapping[str, np.ndarray]) -> None:
        """The tables (image, bins, 3) per measure of the images at sorted positions ``indices``."""
        for offset, start, stop in runs(indices):
            run = {measure: table[offset : offset + stop - start] for measure, table in tables.items()}
            self._waiting[start] = (stop, run)
        while self._next in self._waiting:
            start = self._next
            stop, run = self._waiting.pop(start)
            for measure, table in run.items():
                sums = self._sums.setdefault(measure, {})
                for split, chosen in self.splits.items():
                    rows = table[chosen[start:stop]]
                    if split not in sums:
                        sums[split] = np.zeros(table.shape[1:])
                    # The sum so far first, then each row: sequential, as one sum over every row.
                    sums[split] = np.concatenate([sums[split][None], rows]).sum(axis=0)
            self._next = stop

    @property
    def waiting(self) -> int:
        """Images whose tables are held, waiting for an earlier batch."""
        return sum(stop - start for start, (stop, _) in self._waiting.items())

    def sums(self) -> dict[str, dict[str, np.ndarray]]:
        """``sums[measure][split]``: (bins, 3); empty when no table was added.

        Raises
        ------
        AssertionError
            When some images' tables never came (a gap in the positions added).
        """
        if (self._sums or self._waiting) and self._next != self.n_images:
            raise AssertionError(f"calibration tables folded up to image {self._next} of {self.n_images}")
        return self._sums
