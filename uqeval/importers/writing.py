"""Writing an import: one case at a time through :class:`~uqeval.cube.CubeWriter`.

Every importer lists its cases first, checking what it can from names and headers
(missing cases, shapes, keys), so that most bad folders are refused before a store
exists. :func:`write_cases` then reads one case at a time, its files decoded in
parallel threads (gzip NIfTI and compressed ``.npz`` are slow to decode), and writes
it; memory holds one case, and for a volume only the members being decoded. The store
records where each case came from (attribute :data:`IMPORT_ATTR`), which ``scores.json``
keeps in its provenance.

An interrupted import leaves a store that reads as incomplete; running the same import
again continues after the last whole case. A failed import that had written nothing
leaves no store behind.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.importers.contract import ImportSummary

#: Store attribute of an import's record: ``{"format": ..., "cases": {id: sources}}``.
IMPORT_ATTR = "import"
#: Threads that decode a case's files by default.
DEFAULT_THREADS = 4


@dataclass(frozen=True)
class Layout:
    """The store an import writes: sizes of every case's cube, and the store's attributes.

    Attributes
    ----------
    spatial : tuple of int
        ``(y, x)`` for images, ``(z, y, x)`` for volumes.
    spacing : list of float or None
        The store's ``spacing`` (mm, in the order of ``spatial``).
    attrs : dict
        Further store attributes (``model``, ``eu_method`` …).
    """

    n_classes: int
    eu: int
    au: int
    spatial: tuple[int, ...]
    raters: int = 0
    class_names: Sequence[str] | None = None
    background: int = 0
    spacing: Sequence[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    measures: tuple[str, ...] = ()
    """For a maps store: the maps it holds beside ``mean`` (``eu`` and ``au`` are then ignored)."""


@dataclass(frozen=True)
class Case:
    """One case to import: who it is, how to read its files, and which files they are.

    Attributes
    ----------
    members : tuple of callables
        One per member, each returning its samples ``(au, class, *spatial)`` as floats.
    maps : dict of callables
        For a maps store instead of ``members``: ``mean`` and each map of the layout's
        ``measures``, each returning its array.
    labels : tuple of callables
        One per rater, each returning its label map ``(*spatial)`` as integers.
    sources : dict
        The files it is read from (JSON values), recorded in the store's provenance.
    """

    case_id: str
    domain: str
    role: str
    members: tuple[Callable[[], np.ndarray], ...] = ()
    labels: tuple[Callable[[], np.ndarray], ...] = ()
    maps: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)


def _call(read: Callable[[], np.ndarray]) -> np.ndarray:
    return read()


def write_cases(
    out: Path,
    format_name: str,
    layout: Layout,
    cases: Sequence[Case],
    *,
    overwrite: bool = False,
    threads: int = DEFAULT_THREADS,
    notes: Sequence[str] = (),
) -> ImportSummary:
    """Write ``cases`` to the cube store ``out``, one at a time; resume an interrupted import.

    Parameters
    ----------
    out : Path
        The store. An incomplete store of an earlier import of the same format and cases
        is continued after its last whole case; a complete one is replaced only with
        ``overwrite``.
    format_name : str
        The importer's name, recorded with the sources.
    threads : int
        Threads decoding a case's files at once.

    Raises
    ------
    UQEvalError
        For anything the writer refuses, or a case's file that cannot be read; the
        message says what was written before.
    """
    from uqeval.cube import CubeWriter

    out = Path(out)
    if threads < 1:
        raise UQEvalError(f"--threads: {threads}; expected a positive number", parameter="threads")
    ids = [case.case_id for case in cases]
    if not ids:
        raise UQEvalError(f"{format_name}: no case to import")
    progress = CubeWriter.progress(out) if out.exists() else None
    resume = progress is not None and not progress.complete and not overwrite
    if out.exists() and not resume and not overwrite:
        raise UQEvalError(f"{out}: already exists; pass --overwrite to replace it")
    if resume:
        _check_resumable(out, format_name, ids, progress.n_images)
    existed = out.exists() and resume
    volumes = len(layout.spatial) == 3
    maps_store = bool(layout.measures)
    sizes = {"variable": "maps", "measures": layout.measures} if maps_store else {"eu": layout.eu, "au": layout.au}
    writer = CubeWriter(
        out,
        n_classes=layout.n_classes,
        **sizes,
        height=layout.spatial[-2],
        width=layout.spatial[-1],
        depth=layout.spatial[0] if volumes else None,
        raters=layout.raters,
        dtype="float32",
        chunk_images=1 if volumes else None,
        spacing=layout.spacing,
        class_names=layout.class_names,
        background=layout.background,
        attrs={**layout.attrs, IMPORT_ATTR: {"format": format_name, "cases": {}}},
        overwrite=overwrite and out.exists(),
        resume=resume,
    )
    start = writer.n_images
    record = writer.attribute(IMPORT_ATTR) or {"format": format_name, "cases": {}}
    sources = {case_id: record.get("cases", {}).get(case_id) for case_id in ids[:start]}
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool, writer:
            for case in cases[start:]:
                labels = np.stack(list(pool.map(_call, case.labels))) if case.labels else None
                if maps_store:
                    names = list(case.maps)
                    arrays = dict(zip(names, pool.map(_call, [case.maps[name] for name in names]), strict=True))
                    writer.append(
                        maps=arrays, labels=labels, domain=case.domain, role=case.role, image_ids=case.case_id
                    )
                elif volumes:
                    with writer.volume(case.case_id, domain=case.domain, role=case.role, labels=labels) as volume:
                        pending: dict[Future, int] = {pool.submit(read): e for e, read in enumerate(case.members)}
                        for future in as_completed(pending):
                            volume.write_member(pending.pop(future), future.result())
                else:
                    members = np.stack(list(pool.map(_call, case.members)))
                    writer.append(members, labels, domain=case.domain, role=case.role, image_ids=case.case_id)
                sources[case.case_id] = case.sources
                writer.set_attribute(IMPORT_ATTR, {"format": format_name, "cases": sources})
    except BaseException as error:
        written = writer.n_images
        if not existed and writer.n_images == 0:
            with contextlib.suppress(OSError):
                shutil.rmtree(out)
            if isinstance(error, UQEvalError):
                raise UQEvalError(f"{error} (no store was written)", parameter=error.parameter) from None
        elif isinstance(error, UQEvalError):
            raise UQEvalError(
                f"{error} (the store keeps the {written} case(s) written before and reads as incomplete; "
                "run the same import again to continue it)",
                parameter=error.parameter,
            ) from None
        raise
    return ImportSummary(out, writer.n_images, resumed=start, notes=tuple(notes))


def _check_resumable(out: Path, format_name: str, ids: list[str], n_done: int) -> None:
    """Refuse to continue a store that another import (format or cases) began."""
    import zarr

    group = zarr.open_group(out, mode="r")
    record = group.attrs.get(IMPORT_ATTR)
    if not isinstance(record, dict) or record.get("format") != format_name:
        began = f"an import of format {record.get('format')!r}" if isinstance(record, dict) else "no import"
        raise UQEvalError(
            f"{out}: an incomplete store that {began} began; pass --overwrite to replace it with this {format_name} "
            "import"
        )
    done = [str(value) for value in group["image"][:n_done].tolist()] if "image" in group else []
    if done != ids[: len(done)]:
        raise UQEvalError(
            f"{out}: an incomplete store whose first {len(done)} case(s) are not the first cases of this import; "
            "pass --overwrite to start again"
        )
