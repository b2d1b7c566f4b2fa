"""Pictures of attributions: images, heatmap overlays and token highlights as arrays, PNG files and HTML.

Shared by the command line (``attrex explain --features``) and the app; no Streamlit here.
Colours: an unsigned heatmap (FLIA's ``|FLIA|``) in yellow-red over the greyed image,
opacity growing with the value; a signed one (LRP relevance, FLIA token scores) red where
positive (supports the explained class), blue where negative, both scaled by the largest
magnitude so that 0 is always transparent.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch
from PIL import Image

POSITIVE, NEGATIVE, HOT = np.array([220, 38, 38]), np.array([37, 99, 235]), np.array([250, 204, 21])


def image_rgb(x: torch.Tensor, scale: int = 4) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] → ``uint8`` ``[H·s, W·s, 3]`` (nearest-neighbour upscaling keeps pixels crisp)."""
    a = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
    return _upscale(a.transpose(1, 2, 0), scale)


def _upscale(a: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)


def overlay(x: torch.Tensor, heat: torch.Tensor | np.ndarray, signed: bool, scale: int = 4) -> np.ndarray:
    """Heatmap ``[H, W]`` (tensor or array) over the image ``x`` ``[C, H, W]`` as ``uint8 [H·s, W·s, 3]``.

    See the module docstring for the colours.
    """
    base = image_rgb(x, 1).astype(np.float64)
    grey = base.mean(2, keepdims=True) * 0.55 + 255 * 0.45 * 0.35  # a faded image under the colours
    h = heat.detach().double().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat, dtype=np.float64)
    top = np.abs(h).max()
    w = np.abs(h) / top if top > 0 else np.zeros_like(h)
    if signed:
        colour = np.where((h >= 0)[..., None], POSITIVE, NEGATIVE)
    else:
        colour = HOT * (1 - w[..., None]) + POSITIVE * w[..., None]  # yellow for low, red for the largest
    alpha = np.clip(w, 0, 1)[..., None] ** (0.7 if signed else 1.0)  # signed: lift faint values a little
    out = grey * (1 - alpha) + colour * alpha
    return _upscale(np.clip(out, 0, 255).round().astype(np.uint8), scale)


def outline(rgb: np.ndarray, mask: torch.Tensor | np.ndarray, colour=(16, 185, 129)) -> np.ndarray:
    """``rgb`` (an upscaled image ``[H·s, W·s, 3]``) with the border of the region ``mask`` ``[H, W]`` drawn in.

    The border is the upscaled region's pixels that touch a pixel outside it (one screen pixel wide).
    """
    m = np.asarray(mask, dtype=bool)
    scale = rgb.shape[0] // m.shape[0]
    big = _upscale(m.astype(np.uint8)[..., None], scale)[..., 0].astype(bool)
    pad = np.pad(big, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    out = rgb.copy()
    out[big & ~inner] = colour
    return out


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    Image.fromarray(rgb).save(path)
    return path


def token_html(tokens: list[str], scores: list[float] | np.ndarray, caption: str = "") -> str:
    """HTML of a text with each token's background coloured by its signed score (title: the value)."""
    s = np.asarray(scores, dtype=np.float64)
    top = np.abs(s).max() if len(s) else 0.0
    spans = []
    for t, v in zip(tokens, s, strict=True):
        w = abs(v) / top if top > 0 else 0.0
        r, g, b = POSITIVE if v >= 0 else NEGATIVE
        style = f"background:rgba({r},{g},{b},{0.8 * w:.2f});padding:0 2px;border-radius:3px"
        spans.append(f"<span style='{style}' title='{v:+.3g}'>{html.escape(t)}</span>")
    head = f"<div style='font-size:0.8rem;color:#64748b'>{html.escape(caption)}</div>" if caption else ""
    return f"{head}<div style='line-height:1.9;font-size:1.0rem'>" + " ".join(spans) + "</div>"


def flia_tokens_html(vocab: list[str], ids: list[int], flia_scores, caption: str = "") -> str:
    """A text's words (padding dropped) highlighted by the share of the IL drop each carries.

    ``flia_scores`` are FLIA token scores of a descent path (``[L]``, one per position of
    ``ids``): descent lowers IL, so every score is <= 0, and ``−FLIA`` is shown.
    """
    keep = [j for j, t in enumerate(ids) if t]
    scores = np.asarray(flia_scores, dtype=np.float64)
    return token_html([vocab[ids[j]] for j in keep], (-scores[keep]).tolist(), caption)
