"""``benchmarks/report.py`` renders every saved section, and the ``iif-linear`` section's table is its JSON's means."""

from __future__ import annotations

import statistics

import pytest

from benchmarks import iif_linear, report


def test_report_renders_every_section_from_the_saved_json():
    text = report.render()
    for name, (title, _) in report.RENDER.items():
        assert f"## {title}" in text
        if (report.OUT / f"{name}.json").exists():
            assert f"Not run yet: `python -m benchmarks.report --sections {name}`" not in text
    assert "## Not covered yet" in text


@pytest.fixture(scope="module")
def quick():
    return iif_linear.run(None, lambda m: None, quick=True)


@pytest.mark.slow
def test_iif_linear_quick_run_has_every_method_and_trial(quick):
    trials = iif_linear.QUICK["trials"]
    assert len(quick["columns"]) == 3
    for col in quick["columns"]:
        assert set(col["lds"]) == set(iif_linear.METHODS)
        for values in [*col["lds"].values(), *col["sweep"].values()]:
            assert len(values) == trials
            assert all(-1 <= v <= 1 for v in values if v == v)


def test_iif_linear_table_shows_the_means_and_the_papers_numbers(quick):
    lines = iif_linear.render(quick)
    row = next(line for line in lines if line.startswith("| influence |"))
    for i, col in enumerate(quick["columns"]):
        assert f"{statistics.fmean(col['lds']['influence']):.3f} ±" in row
        assert f"| {iif_linear.IIF_LINEAR['influence'][i]:.3f}" in row
