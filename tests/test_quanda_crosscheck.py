"""core/metrics against quanda's metric implementations (tools/quanda_check.py).

quanda lives in its own venv, ``.venv-quanda`` (``make crosscheck`` builds it): it pins numpy < 2
and never goes into the project's venv. Where that venv is absent this test is skipped, so the
normal suite installs nothing. Where it is there, the test only runs the script (about half a
minute, most of it importing quanda) and reads its JSON: no training, no fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QPY = ROOT / ".venv-quanda" / "bin" / "python"

pytestmark = pytest.mark.skipif(not QPY.exists(), reason="no .venv-quanda: run `make crosscheck` to build it "
                                                          "(quanda 0.5.0 in a venv of its own)")

# the attrex metrics that have a quanda counterpart: each must be compared where the definitions coincide
EXPECTED = {"identical-class", "identical-subclass", "backdoor-top-k", "domain-mismatch", "precision-at-k", "auroc",
            "label-poisoning", "backdoor-auroc", "backdoor-auroc-class", "detection-curve", "auprc", "spearman", "lds"}


@pytest.fixture(scope="module")
def report() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([str(QPY), "-m", "tools.quanda_check", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode in (0, 1), f"quanda_check.py failed (exit {out.returncode}):\n{out.stderr[-4000:]}"
    doc = json.loads(out.stdout)
    doc["_returncode"] = out.returncode
    return doc


def test_core_metrics_import_nothing_beyond_torch(report):
    assert report["core_metrics_extra_imports"] == []


def test_every_coinciding_comparison_agrees(report):
    rows = report["comparisons"]
    assert rows
    failed = [f"{r['metric']} vs {r['counterpart']} [{r['case']}, {r['variant']}]: |diff| = {r['abs_diff']:.3g}"
              for r in rows if r["status"] == "FAIL"]
    assert not failed, "\n".join(failed)
    for r in rows:
        assert r["status"] in ("agree", "differs")
        assert r["coincide"] == (r["status"] == "agree")
        if r["coincide"]:
            assert r["abs_diff"] <= report["tolerance"]
    assert report["ok"] and report["_returncode"] == 0


def test_every_difference_is_explained_and_checked_tie_free(report):
    rows = report["comparisons"]
    for i, r in enumerate(rows):
        if r["status"] != "differs":
            continue
        assert r["reason"], r
        if "tied" in r["reason"] or "score gap" in r["reason"]:  # ties or quanda's index offset: rerun on ranks
            nxt = [s for s in rows[i + 1:] if s["variant"] == "tie-free (ranks)" and s["metric"] == r["metric"]
                   and s["counterpart"] == r["counterpart"] and s["case"] == r["case"]]
            assert nxt and nxt[0]["status"] == "agree", r


def test_every_metric_with_a_counterpart_is_compared(report):
    agreed = {r["metric"] for r in report["comparisons"] if r["status"] == "agree"}
    assert EXPECTED <= agreed, EXPECTED - agreed
    cases = {r["case"] for r in report["comparisons"]}
    assert len(cases) >= 4 and any("ties" in c for c in cases) and any("realistic" in c for c in cases)


def test_tie_rule_matches_quanda_under_random_tie_breaking(report):
    """Averaged over random orders of the training columns, quanda's top-k picks give attrex's expectation."""
    mc = [r for r in report["comparisons"] if r["detail"].get("mc_reps")]
    assert mc
    assert all(r["detail"]["attrex_within_4se"] for r in mc), [(r["metric"], r["case"]) for r in mc]
