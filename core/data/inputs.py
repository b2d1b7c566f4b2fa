"""A person's own input, checked and converted to a scenario's model input: an uploaded image or typed text.

- :func:`image_input`: PNG or JPEG bytes (at most :data:`MAX_BYTES`, at most
  :data:`MAX_SIDE` pixels a side) → ``[C, H, W]`` float32 in [0, 1] of the scenario's shape:
  grey or RGB as the scenario is, 16-bit grey scaled to 8 bits (:func:`eight_bit`), resized
  (bilinear) when the size differs, which the caller is told. Decoded by Pillow with its
  decompression-bomb guard; nothing else is ever read.
- :func:`text_input`: a text (at most :data:`MAX_TEXT_CHARS` characters and :data:`MAX_WORDS`
  words, all the model reads) → ``[TEXT_MAX_LEN]`` token ids in the scenario's vocabulary,
  with the words the vocabulary lacks; a text with no known word is refused.

Everything refused raises :class:`~core.errors.AttrexError` saying what is accepted.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core.data.scenario import TEXT_MAX_LEN, Scenario
from core.data.text import encode, tokenize
from core.errors import AttrexError

MAX_BYTES = 5 * 1024 * 1024
MAX_SIDE = 4096
FORMATS = ("PNG", "JPEG")
MAX_TEXT_CHARS = 500
MAX_WORDS = TEXT_MAX_LEN  # the model reads no more: a longer text is refused, never cut unseen
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # how Pillow opens a 16-bit grey PNG


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit grey image (:data:`SIXTEEN_BIT_MODES`) as 8-bit grey ("L"), 0..65535 scaled to 0..255 and rounded
    to the nearest; any other image as it is. Pillow's own conversion to "L" clips instead: every value above 255
    turns white, so a 16-bit image reads as black and white."""
    if img.mode not in SIXTEEN_BIT_MODES:
        return img
    a = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
    return Image.fromarray(((a * 255 + 65535 // 2) // 65535).astype(np.uint8))


def image_input(data: bytes, scenario: Scenario) -> tuple[torch.Tensor, str]:
    """``(x [C, H, W] in [0, 1], note)``; ``note`` says what was converted ("" when nothing was)."""
    if scenario.kind != "image":
        raise AttrexError(f"{scenario.spec.name} is a text scenario: type a text instead of uploading an image")
    if not data:
        raise AttrexError("the file is empty")
    if len(data) > MAX_BYTES:
        raise AttrexError(f"the file has {len(data) / 2**20:.1f} MB; at most {MAX_BYTES // 2**20} MB is accepted")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in FORMATS:
            raise AttrexError(f"the file is {img.format or 'not an image'}; PNG or JPEG is accepted")
        if max(img.size) > MAX_SIDE:
            raise AttrexError(f"the image is {img.size[0]}×{img.size[1]} pixels; at most {MAX_SIDE} a side is accepted")
        img.load()
    except AttrexError:
        raise
    except UnidentifiedImageError:  # its text names the in-memory file object, which says nothing to the person
        raise AttrexError("the file cannot be read as a PNG or JPEG image: its contents are no image format "
                          "Pillow knows, or are damaged") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # Pillow's errors for damaged data
        why = str(exc).partition("\n")[0][:200] or type(exc).__name__
        raise AttrexError(f"the file cannot be read as a PNG or JPEG image: {why}") from None
    channels, height, width = scenario.input_shape
    notes = []
    if img.mode in SIXTEEN_BIT_MODES:
        notes.append("scaled from 16 to 8 bits")
        img = eight_bit(img)
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        notes.append(f"converted from {img.mode} to {'grey' if mode == 'L' else 'RGB'}")
        img = img.convert(mode)
    if img.size != (width, height):
        notes.append(f"resized from {img.size[0]}×{img.size[1]} to {width}×{height}")
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(a.reshape(height, width, channels).transpose(2, 0, 1).copy())
    return x, "; ".join(notes)


def text_input(text: str, scenario: Scenario) -> tuple[torch.Tensor, list[str]]:
    """``(token ids [TEXT_MAX_LEN], words outside the vocabulary)``."""
    if scenario.kind != "text":
        raise AttrexError(f"{scenario.spec.name} is an image scenario: upload an image instead of typing a text")
    text = text or ""
    if len(text) > MAX_TEXT_CHARS:
        raise AttrexError(f"the text has {len(text):,} characters; at most {MAX_TEXT_CHARS} are accepted")
    tokens = tokenize(text)
    if not tokens:
        raise AttrexError("the text has no words")
    if len(tokens) > MAX_WORDS:
        raise AttrexError(f"the text has {len(tokens)} words; the model reads at most {MAX_WORDS}, so shorten it")
    known = set(scenario.vocab)
    unknown = [t for t in tokens if t not in known]
    if len(unknown) == len(tokens):
        raise AttrexError("none of the text's words is in the model's vocabulary, so the model sees nothing")
    return encode([tokens], scenario.vocab, TEXT_MAX_LEN)[0], unknown
