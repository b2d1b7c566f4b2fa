"""What a person brings is read faithfully or refused in plain words: a 16-bit PNG (uploaded or in an image
folder) keeps its shades, an unreadable upload and a pickled weights file are refused without Python's object
reprs or advice to unpickle, and a text too long for the model is refused saying the limit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from _apptest import texts, wait_for_jobs
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.data import build, custom
from core.data import get_spec as real_get_spec
from core.data.inputs import MAX_TEXT_CHARS, MAX_WORDS, image_input, text_input
from core.errors import AttrexError
from core.models import default_config, train
from core.models.custom import read_state
from explorer import nav, session

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")

# every 16-bit shade from black to white in 28×28 steps, and what an 8-bit reading of it is
GRADIENT = np.linspace(0, 65535, 28 * 28).round().astype(np.uint16).reshape(28, 28)
EXPECTED = GRADIENT.astype(np.float64) * 255 / 65535


def _png16(path: Path | None = None) -> bytes:
    img = Image.fromarray(GRADIENT)
    assert img.mode == "I;16"
    buf = io.BytesIO()
    img.save(buf, "PNG")
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_a_16_bit_png_upload_is_scaled_not_clipped(mnist):
    x, note = image_input(_png16(), mnist)
    assert np.abs(x[0].numpy().astype(np.float64) * 255 - EXPECTED).max() <= 1
    assert note == "scaled from 16 to 8 bits"


def test_16_bit_pngs_in_an_image_folder_are_scaled_not_clipped(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            _png16(tmp_path / split / c / "0.png")
    raw = custom.load(tmp_path)
    assert raw.x_train.shape == (2, 1, 28, 28) and raw.x_train.dtype == np.uint8
    for image in (*raw.x_train, *raw.x_test):
        assert np.abs(image[0].astype(np.float64) - EXPECTED).max() <= 1


def test_an_unreadable_upload_is_refused_without_object_reprs(mnist):
    png = _png16()
    for data in (b"\x00garbage bytes, no image at all" * 4, png[:40] + bytes([png[40] ^ 0xFF]) + png[41:]):
        with pytest.raises(AttrexError, match="cannot be read as a PNG or JPEG image") as info:
            image_input(data, mnist)
        assert "object at 0x" not in str(info.value) and "BytesIO" not in str(info.value)


class Custom:
    """An object besides the tensors: a weights file holding it is a pickle that only unpickling reads."""


def test_a_pickle_with_objects_is_refused_without_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2, 2), "config": Custom()}, path)
    with pytest.raises(AttrexError, match="safetensors") as info:
        read_state(path)
    message = str(info.value)
    assert "Custom" in message and "pickle" in message
    assert "weights_only" not in message and "still be loaded" not in message and "trust" not in message


def test_a_text_too_long_is_refused_saying_the_limit():
    scenario = build(real_get_spec("agnews", n_train=240, n_test=40))
    word = scenario.vocab[5]
    with pytest.raises(AttrexError, match=f"at most {MAX_TEXT_CHARS} are accepted"):
        text_input((word + " ") * (MAX_TEXT_CHARS // len(word) + 1), scenario)
    words = [scenario.vocab[5 + i % 20] for i in range(MAX_WORDS + 1)]
    with pytest.raises(AttrexError, match=f"the text has {MAX_WORDS + 1} words; the model reads at most {MAX_WORDS}"):
        text_input(" ".join(words), scenario)
    ids, _ = text_input(" ".join(words[:MAX_WORDS]), scenario)  # as many words as the model reads: accepted whole
    assert (ids != 0).sum() == MAX_WORDS


def test_a_long_pasted_text_is_refused_on_the_page_saying_the_limit(monkeypatch, one_thread):
    """The text field takes a long paste (no max_chars, which dropped it unseen: "the text has no words")."""
    import explorer.state as state

    small = {"n_train": 240, "n_test": 40}
    monkeypatch.setattr(state, "get_spec", lambda name, **kw: real_get_spec(name, **small, **kw))
    monkeypatch.setattr(state, "WORKERS", False)  # the page's method (random: nothing to precompute) in a thread
    train(build(real_get_spec("agnews", **small, seed=0)), default_config("agnews", seed=0))  # the page loads it
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params.update(scenario="agnews", methods="random")
        at.switch_page(nav.EXPLORE.script)
        at.run()
        wait_for_jobs(at)
        at.text_input(key=session.CUSTOM_TEXT).input("word " * 200)
        at.button[[b.label for b in at.button].index("Explain it")].click().run()
        errors = " ".join(e.value for e in at.error)
        assert f"at most {MAX_TEXT_CHARS} are accepted" in errors and "no words" not in errors
        assert "Your input" not in texts(at)
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()
