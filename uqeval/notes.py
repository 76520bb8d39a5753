"""What a scoring run skipped, fell back on or left undefined: :class:`Note`, made where the fact is known.

A note keeps its facts apart from its words: the task, split, measure and image count
it is about are fields, and its ``text`` names the places they go. So the report can
print notes that say the same thing of several tasks or splits once
(:func:`uqeval.report.tables.grouped_notes`) without taking sentences apart, and
``str(note)`` is the sentence ``scores.json`` keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The places a note's ``text`` may name, filled from its fields.
FIELDS = ("task", "split", "measure", "count")


@dataclass(frozen=True)
class Note:
    """One thing a run skipped, fell back on or left undefined.

    Attributes
    ----------
    kind : str
        What happened, one word or a few joined by ``-`` (``skipped``,
        ``delta-undefined``, ``constant-maps``, …); notes of one kind and one ``text``
        say the same thing.
    text : str
        The sentence, with ``{task}``, ``{split}``, ``{MEASURE}`` (the measure in
        capitals) and ``{count}`` where the fields go; other braces are doubled
        (:func:`literal`).
    task, split, measure : str or None
        The task (``oodd``, ``amb``, ``cal``, ``fd``, ``segmentation``), split and
        measure (``au``, ``eu``, ``tu``) the note is about, where it is about one.
    count : int or None
        The number of images it is about, where it counts some.
    """

    kind: str
    text: str
    task: str | None = None
    split: str | None = None
    measure: str | None = None
    count: int | None = None

    def fill(self, values: dict[str, str]) -> str:
        """The sentence with ``values`` (field name → words) in the fields' places."""
        return self.text.format(
            task=values.get("task", ""),
            split=values.get("split", ""),
            MEASURE=values.get("measure", ""),
            count=values.get("count", ""),
        )

    def field_words(self) -> dict[str, str]:
        """Each field that is set, as the words the sentence shows (the measure in capitals)."""
        words = {name: str(getattr(self, name)) for name in FIELDS if getattr(self, name) is not None}
        if "measure" in words:
            words["measure"] = words["measure"].upper()
        return words

    def __str__(self) -> str:
        return self.fill(self.field_words())


def literal(words: str) -> str:
    """``words`` to put in a note's ``text`` as they are (braces doubled).

    >>> str(Note("example", literal("domains {a}") + " of {task}", task="amb"))
    'domains {a} of amb'
    """
    return words.replace("{", "{{").replace("}", "}}")
