"""CSV exports (core/export.py): every row reads back with the header's cells, and no text cell is a formula."""

from __future__ import annotations

import csv
import io
import math

import pandas as pd
import pytest
from _apptest import own_data_app, wait_for_jobs
from _userdata import HOSTILE_CLASSES, npz_data
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import app_test

from core.data import build
from core.data.scenario import custom_spec
from core.export import csv_text, file_stem
from explorer import nav, session

# labels as a person's data may hold them, and the cell a spreadsheet must show for each
HOSTILE = [
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
    ("+1", "'+1"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("\rx", "'\rx"),
    ('a"b', 'a"b'),
    ("one, two", "one, two"),
    ("two\nlines", "two\nlines"),
    ("naïve ☃ 猫", "naïve ☃ 猫"),
    ("-2", "'-2"),  # a label that looks like a number is still a label
    ("", ""),
]
COLUMNS = ["id", "=label", "score"]


def table() -> tuple[str, list[list[str]]]:
    """The CSV of the hostile labels (ids, scores of both signs) and the cells expected back, header first."""
    rows = [[i, label, (-1) ** i * (i + 0.25)] for i, (label, _) in enumerate(HOSTILE)]
    expected = [["id", "'=label", "score"]]
    expected += [[str(i), shown, str((-1) ** i * (i + 0.25))] for i, (_, shown) in enumerate(HOSTILE)]
    return csv_text(COLUMNS, rows), expected


def test_csv_reads_back_to_the_escaped_cells_with_the_csv_module():
    text, expected = table()
    assert list(csv.reader(io.StringIO(text, newline=""))) == expected


def test_csv_reads_back_to_the_escaped_cells_with_pandas():
    text, expected = table()
    frame = pd.read_csv(io.StringIO(text, newline=""), dtype=str, keep_default_na=False)
    assert list(frame.columns) == expected[0]
    assert frame.values.tolist() == expected[1:]
    numbers = pd.read_csv(io.StringIO(text, newline=""), keep_default_na=False)
    assert numbers["score"].tolist() == [(-1) ** i * (i + 0.25) for i in range(len(HOSTILE))]  # numbers stay numbers


def test_a_row_of_the_wrong_length_is_refused_and_none_is_an_empty_cell():
    with pytest.raises(ValueError, match="row 2 has 2 cells for 3 columns"):
        csv_text(COLUMNS, [[1, "a", 0.5], [2, "b"]])
    assert csv_text(["a", "b"], [[None, 1]]) == "a,b\r\n,1\r\n"


def test_file_stem_keeps_a_download_name_plain():
    assert file_stem("mnist-noisy") == "mnist-noisy"
    assert file_stem("custom:[click me](http://evil.example)") == "custom-click-me-http-evil.example"
    assert file_stem("../..") == "data"


@pytest.fixture
def served(monkeypatch) -> list[MemoryMediaFileStorage]:
    """The media stores of an AppTest's runs, newest last: where a download button's file lies for the browser."""
    stores = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Kept)
    return stores


@pytest.mark.usefixtures("one_thread")
def test_the_mislabels_export_of_hostile_labels_reads_back_cell_for_cell(tmp_path, served):
    data = npz_data(tmp_path / "own.npz", [name for name, _ in HOSTILE_CLASSES])
    sc = build(custom_spec(str(data)))
    cells = dict(HOSTILE_CLASSES)  # each class name as the export must write it
    at = own_data_app(data)
    at.switch_page(nav.MISLABELS.script).run()
    wait_for_jobs(at)
    at.number_input(key=session.MISLABEL_SHOWN).set_value(200).run()  # every training point, so every class
    button = at.download_button[0]
    assert button.label == f"Export {len(sc.y_train)} as CSV"
    text = served[-1].get_file(button.proto.url.rsplit("/", 1)[1]).content.decode("utf-8")

    header = ["id", "given label", "suggested label", "score: loss", "score: representer", "score: random"]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == header and all(len(r) == len(header) for r in rows)
    assert sorted(int(r[0]) for r in rows[1:]) == list(range(len(sc.y_train)))
    for r in rows[1:]:
        assert r[1] == cells[sc.class_names[int(sc.y_train[int(r[0])])]]
        assert r[2] in cells.values()
        assert all(math.isfinite(float(v)) for v in r[3:])  # scores, written as numbers
    frame = pd.read_csv(io.StringIO(text, newline=""), dtype=str, keep_default_na=False)
    assert [list(frame.columns), *frame.values.tolist()] == rows
