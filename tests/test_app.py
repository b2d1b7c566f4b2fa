"""The app, driven headlessly by Streamlit's AppTest (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _apptest import plain, wait_for_jobs
from _apptest import texts as _texts
from streamlit.testing.v1 import AppTest

from explorer import session

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")


@pytest.fixture
def app(default_trained) -> AppTest:
    """The app on the default scenario, whose model the session has already trained into its cache."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_explore_page_shows_the_default_scenario_and_its_model(app, default_trained):
    assert app.title[0].value == "Explore · mnist · seed 0"
    assert app.selectbox(key=session.SCENARIO).value == "mnist"
    metric = next(m for m in app.metric if m.label == "Test accuracy")
    assert metric.value == f"{default_trained.test_accuracy:.1%}"
    picks = [b for b in app.button if b.key and b.key.startswith(session.picks("mnist", "clean"))]
    assert len(picks) == 40  # one page of the gallery
    assert "Test #0" in _texts(app)


def test_choosing_a_sample_opens_its_detail(app):
    app.button(key=session.pick("mnist", "clean", 7)).click().run()
    assert not app.exception
    assert "Test #7" in _texts(app)


def test_misclassified_filter(app, default_trained, default_mnist):
    from core.models import predict

    wrong = int((predict(default_trained.model, default_mnist.x_test).argmax(1) != default_mnist.y_test).sum())
    app.selectbox(key=session.show("mnist")).select("misclassified").run()
    assert not app.exception
    picks = [b for b in app.button if b.key and b.key.startswith(session.picks("mnist", "clean"))]
    assert len(picks) == min(wrong, 40)
    assert f"**{wrong:,}** of 1,000 samples shown" in _texts(app)


def test_class_filter(app):
    app.multiselect(key=session.classes("mnist")).select(3).run()
    assert not app.exception
    assert "**100** of 1,000 samples shown" in _texts(app)


@pytest.mark.parametrize("name", ["nonsense", "[click me](http://example.com)"])
def test_unknown_scenario_in_the_link_falls_back_with_a_warning(default_trained, name):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["scenario"] = name
    at.run()
    assert not at.exception
    assert any("unknown scenario" in w.value for w in at.sidebar.warning)
    assert all("http://" not in w.value for w in at.sidebar.warning)  # never rendered as Markdown ...
    assert any(t.value == name for t in at.sidebar.text)                # ... but shown as plain text
    assert at.title[0].value == "Explore · mnist · seed 0"


@pytest.fixture(scope="module")
def backdoor_trained(isolated_cache):
    from core.data import build
    from core.models import train

    return train(build("mnist-backdoor"))


def test_triggered_split_of_a_backdoor_scenario(backdoor_trained):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["scenario"] = "mnist-backdoor"
    at.run()
    assert not at.exception
    assert "300 poisoned" in _texts(at)
    assert any(m.label == "Attack success" for m in at.metric)
    at.button_group(key=session.split("mnist-backdoor")).set_value("triggered").run()
    assert not at.exception
    text = _texts(at)
    assert "of 900 samples shown" in text and "sent to the backdoor target 0" in text
    assert f"{backdoor_trained.attack_success:.1%} sent" in text
    assert "triggered copy" in text


def test_text_scenario_shows_a_table_and_the_text(isolated_cache):
    from core.data import build
    from core.models import train

    train(build("agnews"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["scenario"] = "agnews"
    at.session_state[session.METHODS] = ["dualview"]  # the quickest precompute on text (tracin-rp: about 8 s)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Explore · agnews · seed 0"
    assert len(at.dataframe) == 1
    assert "Test #0" in _texts(at)
    assert any("<div" in m.value for m in at.markdown)  # the token strip of the chosen text
    wait_for_jobs(at)
    # proponents and opponents as texts with FLIA token highlights (one coloured span per token)
    assert "FLIA token highlights" in _texts(at)
    highlighted = [h for h in at.get("html") if "rgba(" in h.proto.body]
    assert len(highlighted) == 16, len(highlighted)


def test_a_failed_training_stays_on_screen_until_the_user_retries(monkeypatch, isolated_cache):
    import time

    import explorer.state as state

    calls = []

    def failing_train(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("disk full")

    from core.models import default_config

    key = ("train", state.Selection("mnist-superclass", 0, default_config("mnist")))

    def settle() -> None:
        """Wait (jobs run one at a time, so perhaps behind an earlier page's precompute) until this job is done."""
        deadline = time.time() + 300
        while (job := state.runner().jobs.get(key)) is not None and not job.done:
            assert time.time() < deadline, "the training job did not end"
            time.sleep(0.2)
        at.run()

    monkeypatch.setattr(state, "train", failing_train)
    monkeypatch.setattr(state, "WORKERS", False)  # the patched function lives in this process
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["scenario"] = "mnist-superclass"  # a model this session has not trained
    at.run()
    settle()  # the background job fails at once; the page shows it on the next run
    assert "Training failed: RuntimeError: disk full" in plain(at.error[0].value)
    at.run()
    assert len(calls) == 1 and at.error  # a rerun does not silently start it again
    next(b for b in at.button if b.label == "Try again").click().run()
    settle()
    assert len(calls) == 2 and at.error  # the user's retry does
    state.forget_job(key)  # leave no failed job behind


def test_attribution_panel_shows_proponents_and_opponents_with_ground_truth(default_trained):
    """On the default scenario: the default method is precomputed in the background, then its cards appear."""
    from core.data import build
    from core.methods import TrainingData, create
    from core.models import predict

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert at.multiselect(key=session.METHODS).value == ["tracin-rp"]
    # no "Select all" in a picker of at most 3: it silently kept the first three of the list
    assert at.multiselect(key=session.METHODS).proto.max_selections == 3 and not at.multiselect(key=session.METHODS).proto.select_all
    wait_for_jobs(at)
    texts = _texts(at)
    predicted = int(predict(default_trained.model, build("mnist").x_test[:1]).argmax(1))
    assert f"Proponents: support {predicted}" in texts and f"Opponents: work against {predicted}" in texts
    method = create("tracin-rp", default_trained, TrainingData.of(build("mnist"))).fit()
    top = method.top_k(build("mnist").x_test[:1], k=8)
    first = int(top.proponents[0, 0])
    assert f"**#{first}** · {int(build('mnist').y_train[first])}" in texts  # the card of the top proponent

    # the first test sample this model misclassifies (derived, not assumed): the misclassified
    # filter puts it on the gallery's first page
    mnist = build("mnist")
    wrong = (predict(default_trained.model, mnist.x_test).argmax(1) != mnist.y_test).nonzero().squeeze(1)
    assert len(wrong) > 0, "the default model classifies every test sample correctly: nothing to explain"
    first_wrong = int(wrong[0])
    at.selectbox(key=session.show("mnist")).select("misclassified").run()
    at.button(key=f"pick-mnist-clean-{first_wrong}").click().run()
    assert at.segmented_control(key=session.EXPLAIN).value == "prediction"
    at.segmented_control(key=session.EXPLAIN).set_value("true label").run()
    assert not at.exception
    assert f"Proponents: support {int(mnist.y_test[first_wrong])}" in _texts(at)


def test_bad_method_parameters_are_refused_and_change_nothing(default_trained):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    wait_for_jobs(at)
    at.text_input(key=session.param("tracin-rp", "subset")).input("no-such-layer")
    at.button(key=f"FormSubmitter:{session.params_form('tracin-rp')}-Apply").click().run()
    assert not at.exception
    assert at.session_state[session.params("tracin-rp")]["subset"] == "all"
    errors = " ".join(e.value for e in at.error)
    assert "selects no parameter" in errors or "Not applied" in errors


def test_inspect_opens_the_pair_view_with_flia_and_dualview_lrp(default_trained):
    from core.data import build
    from core.methods import TrainingData, create

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    wait_for_jobs(at)
    top = create("tracin-rp", default_trained, TrainingData.of(build("mnist"))).fit().top_k(build("mnist").x_test[:1], k=8)
    first = int(top.proponents[0, 0])
    at.button(key=f"inspect-tracin-rp-proponents-{first}").click().run()
    wait_for_jobs(at)  # DualView's precompute for the LRP views
    texts = _texts(at)
    assert f"Pair view: test #0 and training #{first}" in texts
    captions = " ".join(img.caption for i in at.get("image") for img in i.proto.imgs)
    assert "FLIA (descent) on the training image" in captions
    assert "DualView-LRP on the training image" in captions or any("no support vector" in i.value for i in at.info)
    assert "IL" in texts and "grey level" in texts
    assert len(at.get("plotly_chart")) >= 1
    at.button_group(key=f"pair-direction-tracin-rp-proponents-{first}").set_value("ascent").run()  # FLIA's other direction
    wait_for_jobs(at)
    captions = " ".join(img.caption for i in at.get("image") for img in i.proto.imgs)
    assert "FLIA (ascent) on the training image" in captions and f"Pair view: test #0 and training #{first}" in _texts(at)
    # another sample: the pair view stays open on the same training point, with its score for the new sample
    at.button(key=session.pick("mnist", "clean", 1)).click().run()
    wait_for_jobs(at)
    method = create("tracin-rp", default_trained, TrainingData.of(build("mnist"))).fit()
    x1 = build("mnist").x_test[1:2]
    score = float(method.scores(x1, method.prepare_inputs(x1, None)[1])[0, first])
    texts = _texts(at)
    assert f"Pair view: test #1 and training #{first}" in texts and f"`{score:+.3g}`" in texts
    assert at.query_params["pairs"] in (f"tracin-rp:proponents:{first}", [f"tracin-rp:proponents:{first}"])
    at.button(key=f"pair-close-tracin-rp-proponents-{first}").click().run()
    assert "Pair view" not in _texts(at) and "pairs" not in at.query_params


def test_pair_views_stay_open_side_by_side_up_to_three(default_trained, backdoor_trained):
    """Several pairs can be compared: each *Inspect* adds one (beyond three the oldest closes); *Inspecting* closes."""
    from core.data import build
    from core.methods import TrainingData, create

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    wait_for_jobs(at)
    top = create("tracin-rp", default_trained, TrainingData.of(build("mnist"))).fit().top_k(build("mnist").x_test[:1], k=8)
    ids = [int(i) for i in top.proponents[0, :4]]
    for i in ids[:2]:
        at.button(key=f"inspect-tracin-rp-proponents-{i}").click().run()
        wait_for_jobs(at)
    texts = _texts(at)
    assert all(f"Pair view: test #0 and training #{i}" in texts for i in ids[:2])
    assert "Proponent #2 of TracIn (projected)" in texts
    for i in ids[2:]:
        at.button(key=f"inspect-tracin-rp-proponents-{i}").click().run()
        wait_for_jobs(at)
    texts = _texts(at)
    assert f"training #{ids[0]}" not in texts  # the oldest closed: at most three at once
    assert all(f"Pair view: test #0 and training #{i}" in texts for i in ids[1:])
    assert at.button(key=f"inspect-tracin-rp-proponents-{ids[1]}").label == "Inspecting"
    assert at.query_params["pairs"] in (",".join(f"tracin-rp:proponents:{i}" for i in ids[1:]),
                                        [",".join(f"tracin-rp:proponents:{i}" for i in ids[1:])])  # for a link
    at.button(key=f"inspect-tracin-rp-proponents-{ids[1]}").click().run()  # a second click closes it
    texts = _texts(at)
    assert f"training #{ids[1]}" not in texts and f"Pair view: test #0 and training #{ids[3]}" in texts
    # each scenario keeps its own pair views (training ids belong to its data)
    at.selectbox(key=session.SCENARIO).select("mnist-backdoor").run()
    assert not at.exception and "Pair view:" not in _texts(at) and "pairs" not in at.query_params
    at.selectbox(key=session.SCENARIO).select("mnist").run()
    wait_for_jobs(at)
    assert f"Pair view: test #0 and training #{ids[3]}" in _texts(at)


def test_a_link_restores_split_sample_and_methods_and_reports_what_does_not_fit(backdoor_trained):
    from core.data import build

    sc = build("mnist-backdoor")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"scenario": "mnist-backdoor", "split": "triggered", "sample": "5",
                            "methods": "dualview,no-such-method"})
    at.run()
    assert not at.exception
    test_id = int(sc.truth.triggered_test_ids[5])
    assert f"Test #{test_id}" in _texts(at) and "triggered copy" in _texts(at)
    assert at.multiselect(key=session.METHODS).value == ["dualview"]
    assert any("method no-such-method" in t.value for t in at.text)
    assert at.query_params["sample"] in ("5", ["5"]) and at.query_params["split"] in ("triggered", ["triggered"])
    # a sample out of range is refused, the default kept
    at2 = AppTest.from_file(APP, default_timeout=120)
    at2.query_params.update({"scenario": "mnist-backdoor", "sample": "99999"})
    at2.run()
    assert not at2.exception and "Test #0" in _texts(at2)
    assert any("sample=99999" in t.value for t in at2.text)


def test_a_link_restores_seed_cards_parameters_class_and_pair_views(default_trained, default_mnist):
    """Everything the Explore view shows is in its link; a reload (a new session on the same URL) shows it again."""
    from core.models import predict

    wrong = (predict(default_trained.model, default_mnist.x_test).argmax(1) != default_mnist.y_test).nonzero()
    row = int(wrong[0, 0])  # a misclassified sample (derived from the model), so the class explained can differ
    at = AppTest.from_file(APP, default_timeout=120)
    # the random baseline: a parameter (its seed) that a link can change without a long precompute
    at.query_params.update({"scenario": "mnist", "seed": "0", "sample": str(row), "methods": "random", "k": "5",
                            "explain": "label", "p-random": "seed:7", "pairs": "random:opponents:17,random:proponents:3"})
    at.run()
    wait_for_jobs(at)
    assert not at.exception, at.exception
    assert at.number_input(key=session.TOP_K).value == 5
    assert at.segmented_control(key=session.EXPLAIN).value == "true label"
    assert at.session_state[session.params("random")]["seed"] == 7
    assert f"Opponents: work against {int(default_mnist.y_test[row])}" in _texts(at)
    assert f"Pair view: test #{row} and training #17" in _texts(at) and f"test #{row} and training #3" in _texts(at)
    assert "Opened from a link" in _texts(at)
    # what the page wrote back is the same link
    q = {k: v if isinstance(v, str) else v[0] for k, v in at.query_params.items()}
    assert {k: q[k] for k in ("seed", "sample", "k", "explain", "p-random", "pairs")} == {
        "seed": "0", "sample": str(row), "k": "5", "explain": "label", "p-random": "seed:7",
        "pairs": "random:opponents:17,random:proponents:3"}


@pytest.mark.parametrize(("key", "value", "reported"), [
    ("k", "0", "k=0"), ("k", "abc", "k=abc"), ("explain", "everything", "explain=everything"),
    ("p-tracin-rp", "dim:-3", "p-tracin-rp=dim:-3"), ("p-tracin-rp", "nonsense:1", "no parameter"),
    ("p-no-such", "a:1", "p-no-such=a:1"), ("pairs", "tracin-rp:opponents:99999999", "pair tracin-rp:opponents"),
    ("pairs", "[x](http://example.com)", "pair [x](http://example.com)")])
def test_a_link_value_that_does_not_fit_is_reported_as_text_and_changes_nothing(default_trained, key, value, reported):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"scenario": "mnist", key: value})
    at.run()
    assert not at.exception, at.exception
    assert any(reported in t.value for t in at.text), [t.value for t in at.text]
    assert at.number_input(key=session.TOP_K).value == 8 and "Pair view" not in _texts(at)
    assert session.params("tracin-rp") not in at.session_state or at.session_state[session.params("tracin-rp")]["dim"] == 2048


def test_a_bad_seed_in_the_link_is_reported_and_the_default_kept(default_trained):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"scenario": "mnist", "seed": "-1"})
    at.run()
    assert not at.exception
    assert at.title[0].value == "Explore · mnist · seed 0"
    assert any(t.value == "-1" for t in at.sidebar.text)


def test_a_pair_view_shows_what_was_planted_on_its_training_point(backdoor_trained):
    from core.data import build

    sc = build("mnist-backdoor")
    poisoned = int(sc.truth.poisoned_ids[0])
    was = sc.class_names[int(sc.truth.original_labels[poisoned])]
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"scenario": "mnist-backdoor", "methods": "random",
                            "pairs": f"random:proponents:{poisoned}"})
    at.run()
    wait_for_jobs(at)
    assert not at.exception, at.exception
    header = next(m.value for m in at.markdown if f"Pair view: test #0 and training #{poisoned}" in m.value)
    assert f"poisoned, was {was}" in header


def test_each_page_is_one_module_that_draws_itself():
    """explorer/nav.py's table: each page's file is its module, which ends by drawing that page (and no other)."""
    import importlib

    from explorer import nav

    names = {page: name for name, page in vars(nav).items() if isinstance(page, nav.Page)}
    assert set(names) == set(nav.PAGES)
    for page in nav.PAGES:
        path = Path(APP).parent / page.script
        assert callable(importlib.import_module(f"explorer.{page.module}").render)
        assert path.read_text().rstrip().endswith(f"nav.run(nav.{names[page]})"), path
    assert len({p.url for p in nav.PAGES}) == len({p.title for p in nav.PAGES}) == len(nav.PAGES)


def test_a_job_buttons_key_is_the_same_in_every_process():
    """Keys built from a job's key use a digest, not ``hash`` (salted per process): two processes agree."""
    import os
    import subprocess
    import sys

    code = ("from core.evaluation import Settings; from core.models import default_config; "
            "from explorer import session; from explorer.state import Selection; "
            "print(session.job_button('retry', ('evaluate', Selection('mnist', 3, default_config('mnist')), "
            "('loss',), ('mislabel',), Settings())))")
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(APP).parents[1], env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
            for seed in ("1", "2")}
    assert len(keys) == 1 and next(iter(keys)).startswith("retry-")
    other = session.job_button("retry", ("evaluate", "another"))
    assert other.startswith("retry-") and other not in keys
