"""Every example of docs/extending.md runs as it stands, and the method example keeps the contract.

An example is a ```python block right after a ``<!-- example: NAME -->`` line. Each runs in a
fresh interpreter from the repository root (its registrations stay out of this process), on the
suite's cache, where the default MNIST model is already trained.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)\n```", re.S)


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text(encoding="utf-8")))


def run(code: str, tmp_path: Path) -> str:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_page_has_its_examples():
    assert set(examples()) == {"method", "task", "arch", "corruption", "page"}


@pytest.mark.parametrize("name", ["task", "arch", "corruption"])
def test_an_example_runs(name, default_trained, tmp_path):
    out = run(examples()[name], tmp_path)
    if name == "task":  # the headline, computed again here from the example's printout
        values = dict(line.split() for line in out.strip().splitlines())
        assert 0 <= float(values["representer"]) <= 1 and 0 <= float(values["random"]) <= 1
    if name == "corruption":
        assert "180 flipped" in out  # 30% of the 600 sevens of the balanced 6,000


def test_the_method_example_runs_and_keeps_the_contract(default_trained, tmp_path):
    """The example, then tests/test_contract.py in the same interpreter: the example's method is registered, so the
    contract's parametrisation over the registry includes it."""
    contract = ("\n\nimport pytest\nimport sys\n"
                "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_contract.py', '-k', 'feature-sim']))\n")
    out = run(examples()["method"] + contract, tmp_path)
    assert "1 passed" in out, out


def test_the_page_example_shows_the_methods_top_self_influence(default_trained, default_mnist):
    """The page in AppTest on the default scenario: its eight points are the representer's largest self-scores,
    computed here without the app."""
    import numpy as np
    from _apptest import wait_for_jobs
    from streamlit.testing.v1 import AppTest

    from core.methods import TrainingData, create

    at = AppTest.from_string(examples()["page"] + "\nrender()\n", default_timeout=240)
    at.run()
    wait_for_jobs(at)
    shown = [int(c.value.split("#")[1].split(",")[0]) for c in at.caption if c.value.startswith("training #")]
    scores = create("representer", default_trained, TrainingData.of(default_mnist)).fit().self_scores().numpy()
    assert shown == np.argsort(-scores, kind="stable")[:8].tolist()
