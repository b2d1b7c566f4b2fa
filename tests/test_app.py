"""The app, driven headlessly by Streamlit's AppTest (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")


@pytest.fixture
def app(mnist_trained) -> AppTest:
    """The app on the default scenario, whose model the session has already trained into its cache."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [s.value for s in at.subheader]
    return "\n".join(parts)


def test_explore_page_shows_the_default_scenario_and_its_model(app, mnist_trained):
    assert app.title[0].value == "Explore · mnist"
    assert app.selectbox(key="scenario").value == "mnist"
    metric = next(m for m in app.metric if m.label == "Test accuracy")
    assert metric.value == f"{mnist_trained.test_accuracy:.1%}"
    picks = [b for b in app.button if b.key and b.key.startswith("pick-mnist-clean-")]
    assert len(picks) == 40  # one page of the gallery
    assert "Test #0" in _texts(app)


def test_choosing_a_sample_opens_its_detail(app):
    app.button(key="pick-mnist-clean-7").click().run()
    assert not app.exception
    assert "Test #7" in _texts(app)


def test_misclassified_filter(app, mnist_trained, mnist):
    from core.models import predict

    wrong = int((predict(mnist_trained.model, mnist.x_test).argmax(1) != mnist.y_test).sum())
    app.selectbox(key="show-mnist").select("misclassified").run()
    assert not app.exception
    picks = [b for b in app.button if b.key and b.key.startswith("pick-mnist-clean-")]
    assert len(picks) == min(wrong, 40)
    assert f"**{wrong:,}** of 1,000 samples shown" in _texts(app)


def test_class_filter(app):
    app.multiselect(key="classes-mnist").select(3).run()
    assert not app.exception
    assert "**100** of 1,000 samples shown" in _texts(app)


def test_unknown_scenario_in_the_link_falls_back_with_a_warning(mnist_trained):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["scenario"] = "nonsense"
    at.run()
    assert not at.exception
    assert any("Unknown scenario" in w.value for w in at.sidebar.warning)
    assert at.title[0].value == "Explore · mnist"
