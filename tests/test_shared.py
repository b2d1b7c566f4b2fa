"""Safe to share: serving others, a visitor's data and model arrive as uploads only, no page names a server path
or runs code on a visitor's word, links carry no one's data, and the cache is only listed (AppTest)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import streamlit as st
from _apptest import plain, wait_for_jobs
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from explorer import nav, session

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")
PATH_FIELDS = ("own-data", "own-known", "own-entry", "own-weights", "own-ckpts", "own-features", "own-head")


@pytest.fixture(scope="module")
def digits_zip(tmp_path_factory) -> bytes:
    from _userdata import image_folder

    folder = image_folder(tmp_path_factory.mktemp("up") / "digits", per_class=8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, "digits/" + str(p.relative_to(folder)))
    return buf.getvalue()


@pytest.fixture
def shared(monkeypatch):
    monkeypatch.setenv("ATTREX_SHARED", "1")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def _your_data(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params.update(scenario="custom", **query)
    at.run()
    assert not at.exception, at.exception
    return at


def _keys(at: AppTest) -> set[str]:
    return {w.key for w in (*at.text_input, *at.button, *at.checkbox, *at.radio, *at.selectbox) if w.key}


def _messages(at: AppTest) -> str:
    return plain(" ".join(e.value for e in (*at.error, *at.warning, *at.info)))


def test_shared_mode_offers_uploads_only_no_path_and_no_entry_point(shared):
    at = _your_data()
    assert at.title[0].value == "Your data"
    assert not _keys(at) & set(PATH_FIELDS)
    assert at.radio(key=session.OWN_DATA_FROM).options == ["Upload"]
    assert "Python entry point" not in at.radio(key=session.OWN_MODEL_FROM).options
    assert "uploads are kept for this browser session only" in " ".join(c.value for c in at.caption)


def test_local_mode_offers_paths_and_entry_points(monkeypatch):
    monkeypatch.delenv("ATTREX_SHARED", raising=False)
    at = _your_data()
    assert at.radio(key=session.OWN_DATA_FROM).options == ["Upload", "A path on this machine"]
    at.radio(key=session.OWN_DATA_FROM).set_value("path").run()
    at.radio(key=session.OWN_MODEL_FROM).set_value("entry").run()
    assert set(PATH_FIELDS) <= _keys(at)


def test_a_visitor_uploads_a_zipped_image_folder_and_explores_it(shared, digits_zip):
    at = _your_data()
    at.file_uploader(key=session.own("data-file")).set_value(("my digits.zip", digits_zip, "application/zip"))
    at.button(key=session.own("load")).click().run()
    wait_for_jobs(at)
    assert not at.exception, at.exception
    assert plain(at.title[0].value) == "Explore · custom:my digits · seed 0"
    assert "own" not in at.query_params  # no link carries a visitor's data
    folder = at.session_state[session.OWN_UPLOADS].path
    assert folder.is_dir() and len(folder.name) == 32  # 128 random bits
    assert str(folder) not in " ".join(m.value for m in (*at.markdown, *at.caption))  # the server path stays unshown


def test_a_pickle_for_weights_is_refused_and_changes_nothing(shared, digits_zip):
    import torch

    from core.cache import Cache
    from core.data.uploads import UPLOADS

    def folders() -> set:
        base = Cache().root / UPLOADS
        return set(base.iterdir()) if base.is_dir() else set()

    at = _your_data()
    at.radio(key=session.OWN_MODEL_FROM).set_value("upload").run()
    at.file_uploader(key=session.own("data-file")).set_value(("d.zip", digits_zip, "application/zip"))
    before = folders()
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buf)
    # the uploader takes .safetensors names only (Streamlit refuses others itself): a pickle under that name
    at.file_uploader(key=session.own("weights-file")).set_value(("final.safetensors", buf.getvalue(), "application/octet-stream"))
    at.button(key=session.own("load")).click().run()
    assert not at.exception
    shown = _messages(at)
    assert "is not a safetensors file" in shown and "weights_only" not in shown
    assert at.title[-1].value == "Your data" and "own-selection" not in at.session_state
    assert folders() == before  # the refused upload's folder is gone


def test_uploaded_safetensors_weights_of_an_attrex_architecture(shared, digits_zip, tmp_path, default_trained):
    at = _your_data()
    at.radio(key=session.OWN_MODEL_FROM).set_value("upload").run()
    weights = tmp_path / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in default_trained.model.state_dict().items()}, str(weights))
    at.file_uploader(key=session.own("data-file")).set_value(("d.zip", digits_zip, "application/zip"))
    at.selectbox(key=session.own("arch")).select("cnn")
    at.file_uploader(key=session.own("weights-file")).set_value(("cnn.safetensors", weights.read_bytes(), "application/octet-stream"))
    at.button(key=session.own("load")).click().run()
    wait_for_jobs(at)
    assert not at.exception, at.exception
    assert "**Model** · `cnn` (yours)" in " ".join(m.value for m in at.sidebar.markdown)


def test_an_own_link_from_another_session_shows_nothing_of_it(monkeypatch, shared, digits_zip):
    # a local session's token, opened while the server serves others: refused with a message
    from explorer import state
    from explorer.state import Selection

    monkeypatch.delenv("ATTREX_SHARED")
    local = _your_data()
    local.file_uploader(key=session.own("data-file")).set_value(("d.zip", digits_zip, "application/zip"))
    local.button(key=session.own("load")).click().run()
    wait_for_jobs(local)
    token = local.query_params["own"]
    token = token[0] if isinstance(token, list) else token
    assert isinstance(state.recall_own(token), Selection) and len(token) >= 20
    monkeypatch.setenv("ATTREX_SHARED", "1")
    other = _your_data(own=token)
    assert other.title[-1].value == "Your data"
    assert "a link never carries anyone's data" in _messages(other)


def test_a_bogus_own_token_says_so(monkeypatch):
    monkeypatch.delenv("ATTREX_SHARED", raising=False)
    at = _your_data(own="nonsense123")
    assert "this server no longer holds" in _messages(at)
    assert _your_data(own="x" * 5000).title[-1].value == "Your data"  # not a token at all: ignored


def test_the_cache_page_only_lists_when_shared(shared, default_trained):
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page(nav.CACHE.script).run()
    assert not at.exception
    labels = [b.label for b in at.button]
    assert not any(lab.startswith(("Delete", "Clear")) for lab in labels) and not at.checkbox
    assert "deleting entries is for the operator" in _messages(at)


def test_clearing_the_cache_locally_keeps_the_job_queue_and_everyones_own_data(monkeypatch, default_trained):
    from explorer import state
    from explorer.cache import _clear_all

    monkeypatch.delenv("ATTREX_SHARED", raising=False)
    runner = state.runner()
    token = state.remember_own(state.Selection("custom:x", 0, None))
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page(nav.CACHE.script).run()
    assert any(b.label == "Clear the whole cache" for b in at.button)
    cache = type("NoDisk", (), {"clear": lambda self: None})()  # the session's cache holds the suite's models
    _clear_all(cache)
    assert state.runner() is runner and state.recall_own(token) is not None


def test_the_operator_list_is_offered_by_name(shared, monkeypatch, tmp_path, default_trained):
    from _userdata import image_folder

    folder = image_folder(tmp_path / "digits", per_class=8)
    weights = tmp_path / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in default_trained.model.state_dict().items()}, str(weights))
    config = tmp_path / "attrex.toml"
    config.write_text(f'[data.digits]\npath = "{folder}"\n\n[models.digit-cnn]\nentry = "attrex:cnn"\n'
                      f'weights = "{weights}"\n')
    monkeypatch.setenv("ATTREX_CONFIG", str(config))
    at = _your_data()
    at.radio(key=session.OWN_DATA_FROM).set_value("listed").run()
    at.radio(key=session.OWN_MODEL_FROM).set_value("listed").run()
    assert at.selectbox(key=session.own("data-name")).options == ["digits"]
    assert at.selectbox(key=session.own("model-name")).options == ["digit-cnn"]
    at.button(key=session.own("load")).click().run()
    wait_for_jobs(at)
    assert not at.exception, at.exception
    assert plain(at.title[0].value) == "Explore · custom:digits · seed 0"
    assert str(folder) not in " ".join(m.value for m in (*at.markdown, *at.caption))
