"""Strings from a store or the command line, shown as text and nothing more.

Image ids, domains, model names and paths come from whoever wrote the store or typed
the command. Wherever the report shows one, it goes through a function here, so that it
stays inert text:

- :func:`printable` writes a control character (C0, DEL, C1) or a bidirectional
  override as its escape (``\\x1b``, ``\\u202e``), so that no character reaches a
  terminal raw, breaks a table's layout or makes an SVG invalid XML;
- :func:`shortened` also cuts a long string to a bound, with a visible ``…``;
- :func:`labelled` is a terminal line of a styled label and such a string, and
  :func:`markup_text` makes a string safe to put between Rich markup tags (``[/]`` is
  shown, not parsed);
- :func:`figure_text` makes it safe for a matplotlib label (``$`` is a dollar sign,
  not the start of mathtext);
- :func:`spreadsheet_text` keeps a spreadsheet from reading a CSV cell as a formula.

Ordinary names (letters, digits, ``-``, ``_``, spaces) pass through every function
unchanged.
"""

from __future__ import annotations

import hashlib
import re

from rich.markup import escape
from rich.text import Text

#: The marker of a string cut short.
ELLIPSIS = "…"
#: Characters of a name (a model, group or domain) that tables and figures show.
NAME_CHARACTERS = 40
#: Characters of a name that ``scores.json`` keeps under ``model`` and a comparison in
#: every row (``ranks.csv``, ``points.csv``, ``comparison.json``); ``scores.json``
#: keeps the whole name once, under ``provenance``.
KEPT_NAME_CHARACTERS = 200

#: Bidirectional formatting characters: they reorder what a terminal shows
#: (right-to-left overrides, embeddings, isolates and marks).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_UNSAFE = re.compile(
    "[" + "".join(re.escape(c) for c in _BIDI) + "\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]",
)
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
#: First characters that make a spreadsheet read a cell as a formula (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_HASH_CHARACTERS = 8


def _escaped(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``str(value)`` with every control character and bidirectional override escaped.

    C0 controls (NUL, ESC, tab, newline, …), DEL, C1 controls, the line and paragraph
    separators, the bidirectional formatting characters and lone surrogates (which
    UTF-8 cannot encode) are written as Python
    writes them in a string literal (``\\x1b``, ``\\n``, ``\\u202e``); everything else,
    other languages' letters included, is kept.

    >>> printable("blur")
    'blur'
    >>> printable("a\\x1b[31mb\\x00")
    'a\\\\x1b[31mb\\\\x00'
    """
    text = str(value)
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda match: _escaped(match.group()), text)


def shortened(value: object, limit: int = NAME_CHARACTERS) -> str:
    """:func:`printable` text of at most ``limit`` characters.

    A longer one keeps its start and ends in ``…#`` and 8 hexadecimal digits of a hash
    of the whole string, so that two long names that start alike stay apart.

    >>> shortened("disentangled")
    'disentangled'
    >>> shortened("x" * 100, 20)
    'xxxxxxxxxx…#02a82d32'
    """
    text = str(value)
    shown = printable(text)
    if len(shown) <= limit:
        return shown
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_HASH_CHARACTERS // 2).hexdigest()
    marker = f"{ELLIPSIS}#{digest}"
    head = shown[: max(limit - len(marker), 1)]
    # Do not leave half an escape (``\\x1``) before the marker.
    head = re.sub(r"\\(x[0-9a-f]?|u[0-9a-f]{0,3}|)$", "", head)
    return head + marker


def markup_text(value: object, limit: int | None = NAME_CHARACTERS) -> str:
    """``value`` as text to put between Rich markup tags (``f"[cyan]{...}[/]"``):
    :func:`shortened` (or :func:`printable` when ``limit`` is None), then with ``[``
    escaped. (A trailing backslash is doubled so that it cannot escape the next tag;
    at the end of a line, use :func:`labelled`.)

    >>> markup_text("[/]")
    '\\\\[/]'
    """
    return escape(printable(value) if limit is None else shortened(value, limit))


def labelled(label: str, style: str, value: object, *rest: str) -> Text:
    """A terminal line: ``label`` in ``style``, a space, ``value`` as :func:`printable`
    text (never Rich markup), then ``rest`` as it is.

    >>> labelled("error:", "bold red", "[/] is \\x1b").plain
    'error: [/] is \\\\x1b'
    """
    return Text.assemble((label, style), " ", printable(value), *rest)


def figure_text(value: object, limit: int | None = NAME_CHARACTERS) -> str:
    """``value`` as text for a matplotlib label: :func:`shortened` (or :func:`printable`
    when ``limit`` is None), with ``$`` escaped so that it is not read as mathtext.

    >>> figure_text("$x$")
    '\\\\$x\\\\$'
    """
    text = printable(value) if limit is None else shortened(value, limit)
    return text.replace("$", r"\$")


def spreadsheet_text(text: str) -> str:
    """A CSV text cell that a spreadsheet shows as text, never runs as a formula.

    A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading ``'`` (the OWASP rule against CSV injection), unless the whole
    cell is a plain number such as ``-0.5``, which is no formula.

    >>> spreadsheet_text('=HYPERLINK("http://evil.example")')
    '\\'=HYPERLINK("http://evil.example")'
    >>> spreadsheet_text("-0.5"), spreadsheet_text("blur")
    ('-0.5', 'blur')
    """
    if text.startswith(_FORMULA_START) and _NUMBER.fullmatch(text) is None:
        return "'" + text
    return text
