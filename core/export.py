"""Tables for a person to download and open in a spreadsheet: CSV that reads back to the same cells, never a formula.

Every CSV attrex writes goes through :func:`csv_text`. Python's :mod:`csv` writer quotes a cell
that holds a comma, a quote (doubled inside) or a line break, so every row reads back with as
many cells as the header. A text cell that a spreadsheet would take for a formula (it begins
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return: OWASP's list for CSV injection)
gets an apostrophe in front, which the spreadsheet shows as text and does not evaluate.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """``value`` as it is written to a CSV cell: a string beginning with one of :data:`FORMULA_START` with an
    apostrophe in front, anything else unchanged.

    Only strings are changed. A number attrex computed (an id, a score) stays a number that a spreadsheet
    can sort and sum, a negative one with its minus sign: the writer turns it into its digits, which no
    spreadsheet reads as a formula. A label or a text from a person's data is a string, whatever it
    looks like (the label ``-2`` is written ``'-2``).
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A CSV document (RFC 4180: quoted where needed, lines ended by CRLF) of a header row ``columns`` and
    ``rows``, each cell written by :func:`cell`, the header's too; ``None`` is an empty cell. Raises
    ``ValueError`` on a row whose length differs from the header's."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([cell(c) for c in columns])
    for n, row in enumerate(rows, 1):
        if len(row) != len(columns):
            raise ValueError(f"row {n} has {len(row)} cells for {len(columns)} columns")
        writer.writerow([cell(v) for v in row])
    return out.getvalue()


def file_stem(text: str) -> str:
    """``text`` (a scenario's name, which may hold a person's folder name) fit for a download's file name:
    every run of characters other than letters, digits, ``.``, ``_`` and ``-`` becomes one ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "data"
