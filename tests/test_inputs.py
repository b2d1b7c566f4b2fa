"""A person's own input (core/data/inputs.py): checked, converted, and refused with a clear message."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import build, get_spec
from core.data.inputs import MAX_BYTES, image_input, text_input
from core.data.text import encode, tokenize
from core.errors import AttrexError


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cifar_like():
    return build(get_spec("cifar10", n_train=20, n_test=20))


def test_an_mnist_image_round_trips_exactly(mnist):
    x = mnist.x_test[3]
    data = _png(Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8)))
    got, note = image_input(data, mnist)
    assert note == "" and torch.equal(got, x)


def test_colour_and_size_are_converted_and_said(mnist, cifar_like):
    rgb = np.zeros((40, 56, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    x, note = image_input(_png(Image.fromarray(rgb)), mnist)
    grey = 200 * 299 / 1000  # ITU-R 601-2 luma, as Pillow's "L"
    assert x.shape == (1, 28, 28) and abs(float(x.mean()) * 255 - grey) < 1
    assert note == "converted from RGB to grey; resized from 56×40 to 28×28"
    y, note = image_input(_png(Image.fromarray(rgb[:32, :32]), "JPEG"), cifar_like)
    assert y.shape == (3, 32, 32) and note == "" and 0 <= y.min() and y.max() <= 1


def test_bad_files_are_refused(mnist):
    gif = io.BytesIO()
    Image.new("L", (28, 28)).save(gif, "GIF")
    cases = [(b"", "empty"), (b"not an image at all", "cannot be read"), (gif.getvalue(), "PNG or JPEG is accepted"),
             (b"0" * (MAX_BYTES + 1), "at most 5 MB"),
             (_png(Image.new("L", (5000, 10))), "at most 4096 a side")]
    for data, message in cases:
        with pytest.raises(AttrexError, match=message):
            image_input(data, mnist)


def test_text_is_encoded_in_the_scenarios_vocabulary(agnews_small):
    scenario, _ = agnews_small
    words = scenario.vocab[5:9]
    text = " ".join(words) + " qwxzzy"
    ids, unknown = text_input(text, scenario)
    assert unknown == ["qwxzzy"]
    assert torch.equal(ids, encode([tokenize(text)], scenario.vocab, len(ids))[0])
    for bad, message in (("", "no words"), ("qwxzzy zzqqxx", "none of the text's words")):
        with pytest.raises(AttrexError, match=message):
            text_input(bad, scenario)
    with pytest.raises(AttrexError, match="type a text"):
        image_input(b"x", scenario)


def test_the_wrong_kind_of_input_is_refused(mnist):
    with pytest.raises(AttrexError, match="upload an image"):
        text_input("hello", mnist)
