"""Importers: predictions already on disk, turned into a store that ``uqeval score`` reads.

``uqeval import FORMAT ... --out STORE`` runs the importer of ``FORMAT``, contributed
through the hook ``uqeval_importers`` (the built-in ones as any plugin's):

- :mod:`uqeval.importers.nnunet`: nnU-Net v2 prediction folders, one per member;
- :mod:`uqeval.importers.files`: arrays found by a file pattern (``{case}``, ``{member}``, …);
- :mod:`uqeval.importers.values`: ValUES study folders, as a cube store (from ``pred_prob/``) or a maps store;

Shared parts: :mod:`~uqeval.importers.contract` (:class:`Importer`,
:class:`ImportSummary`), :mod:`~uqeval.importers.arrays` (reading files, axis order),
:mod:`~uqeval.importers.cases` (the ``--cases`` CSV) and
:mod:`~uqeval.importers.writing` (one case at a time through ``CubeWriter``, resumable,
with provenance). docs/import.md describes each format.
"""

from uqeval.importers.contract import Importer, ImportSummary

__all__ = ["ImportSummary", "Importer"]
