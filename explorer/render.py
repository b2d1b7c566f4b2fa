"""Turning tensors into things a browser shows: upscaled images, badges, token strips."""

from __future__ import annotations

import html

import numpy as np
import torch

GROUND_TRUTH_COLOURS = {"flipped": "orange", "poisoned": "red", "triggered": "red", "marked": "violet"}


def to_image(x: torch.Tensor, scale: int = 4) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] → ``uint8`` ``[H·s, W·s, 3]`` (nearest-neighbour upscaling keeps pixels crisp)."""
    a = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
    a = a.transpose(1, 2, 0)
    return np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)


def badge(text: str, colour: str = "gray") -> str:
    """Streamlit markdown for a small coloured badge."""
    return f":{colour}-badge[{text}]"


def token_strip(tokens: list[str], known: set[str], highlight: set[str] = frozenset()) -> str:
    """HTML of a text's tokens: out-of-vocabulary words greyed, highlighted words marked."""
    spans = []
    for t in tokens:
        esc = html.escape(t)
        if t in highlight:
            spans.append(f"<mark style='background:#fde68a;padding:0 2px;border-radius:3px'>{esc}</mark>")
        elif t not in known:
            spans.append(f"<span style='color:#94a3b8' title='not in the vocabulary'>{esc}</span>")
        else:
            spans.append(esc)
    return "<div style='line-height:1.8;font-size:1.02rem'>" + " ".join(spans) + "</div>"
