"""The contract: each variable's dims built from the spatial dims, and each rule that the reader
and the writer both apply, stated once."""

from __future__ import annotations

import numpy as np
import pytest
from cube_stores import SHAPE, make_labels, make_probs

from uqeval import CubeWriter, UQEvalError, open_cube
from uqeval.cube import contract
from uqeval.names import IGNORE_LABEL


def test_every_array_variable_is_image_first_and_pixels_last():
    for spec in (*contract.VALUES, *contract.EXTRAS):
        assert spec.dims[0] == contract.IMAGE_DIM
        assert spec.dims[-len(contract.SPATIAL_DIMS) :] == contract.SPATIAL_DIMS
    assert contract.PROBS.dims == (contract.IMAGE_DIM, *contract.CUBE_DIMS, *contract.SPATIAL_DIMS)
    assert contract.LOGITS.dims == contract.PROBS.dims and contract.LOGITS.name == "logits"
    assert contract.PROBS.dims[contract.CLASS_AXIS] == "class"
    assert (contract.IMAGE_DIM, *contract.SPATIAL_DIMS) == contract.SHARED_DIMS


def test_image_shape_follows_the_dims():
    sizes = {"eu": 2, "au": 3, "class": 4, "y": 5, "x": 6, "rater": 7, "channel": 1}
    assert contract.PROBS.image_shape(sizes) == (2, 3, 4, 5, 6)
    assert contract.LABELS.image_shape(sizes) == (7, 5, 6)
    assert contract.INPUT.image_shape(sizes) == (1, 5, 6)
    assert contract.LABELS.axis == {"image": 0, "rater": 1, "y": 2, "x": 3}


def test_labels_are_a_class_index_or_ignore():
    labels = np.array([[0, 2, IGNORE_LABEL], [3, -1, 1]], dtype=np.int16)
    np.testing.assert_array_equal(
        contract.invalid_labels(labels, n_classes=3), [[False, False, False], [True, True, False]]
    )
    assert contract.first_invalid_label(labels, n_classes=3) == ((1, 0), 3)
    assert contract.first_invalid_label(labels, n_classes=4) == ((1, 1), -1)
    assert contract.first_invalid_label(np.array([IGNORE_LABEL, 0], dtype=np.uint8), n_classes=2) is None
    assert contract.pixel_text((3, 4)) == "y=3, x=4"


@pytest.mark.parametrize(
    ("value", "valid"),
    [(0, True), (2, True), (np.int64(1), True), (3, False), (-1, False), (True, False), ("0", False), (1.0, False)],
)
def test_background_is_a_class_index(value, valid):
    assert contract.is_class_index(value, n_classes=3) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [(["a", "b"], True), (("a",), True), (np.array(["a", "b"]), True), ([], True), ("ab", False), ([1, "b"], False)],
)
def test_class_names_are_strings(value, valid):
    assert contract.are_class_names(value) is valid


def test_write_progress_is_recorded_and_read_back():
    progress = contract.WriteProgress(n_images=5, complete=False)
    assert contract.WriteProgress.recorded({contract.PROGRESS_ATTR: progress.record()}) == progress
    assert contract.WriteProgress.recorded({}) is None
    assert contract.WriteProgress.recorded({contract.PROGRESS_ATTR: "done"}) is None


def test_the_writer_writes_what_the_reader_reads_as_the_contract_says(tmp_path):
    path = tmp_path / "cube.zarr"
    with CubeWriter(path, **SHAPE, raters=2, channels=1) as writer:
        writer.append(make_probs(3), labels=make_labels(3), input=np.zeros((3, 1, 4, 5)))
    cube = open_cube(path)
    for spec in (contract.PROBS, *contract.EXTRAS):
        assert cube[spec.name].dims == spec.dims
    assert cube[contract.LABELS.name].dtype == np.dtype(contract.LABELS.stored_dtype)
    assert cube[contract.INPUT.name].dtype == np.dtype(contract.INPUT.stored_dtype)
    for spec in contract.STRINGS:
        assert cube[spec.name].dims == spec.dims
    assert set(contract.ATTRIBUTES) | {"schema"} <= set(cube.attrs)
    assert cube.attrs["schema"] == contract.SCHEMA
    assert list(cube.attrs["class_names"]) == contract.default_class_names(3)
    assert cube.attrs["background"] == contract.DEFAULT_BACKGROUND
    assert cube.role.values.tolist() == [contract.ROLE.default] * 3


# --------------------------------------------------------------------------- domains


@pytest.mark.parametrize("spelt", ["ID", "Id", "iD", "id ", " id", "\tID\n", "\x00id", "i\x7fd"])
def test_id_spelled_otherwise_is_refused_with_both_spellings(spelt):
    domains = np.array(["id", spelt, "blur", spelt, spelt], dtype=object)
    with pytest.raises(UQEvalError) as info:
        contract.check_domains(domains, "store.zarr")
    assert str(info.value) == (
        f"store.zarr: domain {spelt!r} of 3 images looks like 'id' (in-distribution) but is spelled differently; "
        "write 'id'"
    )


def test_one_misspelt_image_and_no_source_name():
    with pytest.raises(UQEvalError, match=r"^domain 'ID' of 1 image looks like 'id'"):
        contract.check_domains(["ID"], "")


#: Look-alikes of ``id`` that no case or whitespace rule catches, and the code point the
#: message must name so that the user sees how the name differs.
LOOK_ALIKES = {
    "i\u200bd": "U+200B ZERO WIDTH SPACE",
    "\ufeffid": "U+FEFF ZERO WIDTH NO-BREAK SPACE",
    "i\u00add": "U+00AD SOFT HYPHEN",
    "id\u200e": "U+200E LEFT-TO-RIGHT MARK",
    "\uff49\uff44": "U+FF49 FULLWIDTH LATIN SMALL LETTER I",
    "\uff29\uff24": "U+FF29 FULLWIDTH LATIN CAPITAL LETTER I",
    "\U0001d422\U0001d41d": "U+1D422 MATHEMATICAL BOLD SMALL I",
    "\u0456d": "U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I",
    "\u0406D": "U+0406 CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I",
    "i\u0501": "U+0501 CYRILLIC SMALL LETTER KOMI DE",
    "\u03b9d": "U+03B9 GREEK SMALL LETTER IOTA",
    "\u0131d": "U+0131 LATIN SMALL LETTER DOTLESS I",
    "\u0130d": "U+0130 LATIN CAPITAL LETTER I WITH DOT ABOVE",
    "i\u0307d": "U+0307 COMBINING DOT ABOVE",
    "id\u00a0": "U+00A0 NO-BREAK SPACE",
    "\u3000id": "U+3000 IDEOGRAPHIC SPACE",
    "\x85id": "U+0085 a control character",
}


@pytest.mark.parametrize("spelt", LOOK_ALIKES)
def test_a_look_alike_of_id_is_refused_and_its_odd_characters_named(spelt):
    with pytest.raises(UQEvalError) as info:
        contract.check_domains(["id", spelt, "blur"], "store.zarr")
    message = str(info.value)
    assert message.startswith(f"store.zarr: domain {spelt!r} (")
    assert LOOK_ALIKES[spelt] in message
    assert message.endswith("of 1 image looks like 'id' (in-distribution) but is spelled differently; write 'id'")


@pytest.mark.parametrize("reserved", ["ood", "all"])
def test_the_names_of_pooled_splits_are_refused(reserved):
    with pytest.raises(UQEvalError) as info:
        contract.check_domains(["id", reserved, reserved], "store.zarr")
    assert str(info.value).startswith(f"store.zarr: domain {reserved!r} of 2 images is a reserved name: ")
    assert contract.RESERVED_DOMAINS[reserved] in str(info.value)


@pytest.mark.parametrize(
    ("spelt", "reserved"),
    [
        ("OOD", "ood"),
        (" ood", "ood"),
        ("All", "all"),
        ("\u043e\u043ed", "ood"),
        ("\u0430ll", "all"),
        ("o\u200bod", "ood"),
    ],
)
def test_look_alikes_of_the_reserved_names_are_refused(spelt, reserved):
    with pytest.raises(UQEvalError, match=f"looks like {reserved!r}, the split of ") as info:
        contract.check_domains([spelt], "w")
    assert str(info.value).startswith(f"w: domain {spelt!r}")


@pytest.mark.parametrize(
    "domains", [["id", "blur"], ["ood-id", "idx", "i d", "IDs", "noise", "oods", "ball"], [], np.array(["id"])]
)
def test_other_domains_pass(domains):
    contract.check_domains(domains, "store.zarr")  # raises nothing


def test_the_key_folds_what_a_reader_cannot_see():
    assert contract.domain_key("\uff29\u200b\u0406D ") == "iid"
    assert contract.domain_key("i d") == "i d"
    assert contract.domain_key("Blur") == "blur"
    assert contract.spelled_out("blur") == "'blur'"
    assert contract.spelled_out("\u0456d") == "'\u0456d' (U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I)"


@pytest.mark.parametrize("domain", ["ood", "all", "\uff49\uff44", "i\u200bd", "\u0456d", "OOD"])
def test_the_reader_applies_the_writers_rule(tmp_path, domain):
    import zarr

    path = tmp_path / "cube.zarr"
    with CubeWriter(path, **SHAPE) as writer:
        writer.append(make_probs(1), domain="id")
        with pytest.raises(UQEvalError) as refused:
            writer.append(make_probs(1), domain=domain)
        writer.append(make_probs(1), domain="blur")
    zarr.open_group(path, mode="r+")["domain"][:] = np.asarray(["id", domain], dtype=object)
    with pytest.raises(UQEvalError) as read:
        open_cube(path)
    assert str(read.value) == f"{path}: {str(refused.value).removeprefix('CubeWriter.append: ')}"
