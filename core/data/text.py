"""Tokenising and encoding text: a lower-cased word tokenizer and a vocabulary built on the training split."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import torch

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
TEXT_MAX_LEN = 64  # tokens a text is encoded to: the model reads no more
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; punctuation and the data set's HTML remnants drop out."""
    return _WORD.findall(text.lower())


def build_vocab(token_lists: Sequence[Sequence[str]], min_freq: int = 2, max_size: int = 20_000) -> list[str]:
    """Vocabulary of the training split: ``<pad>``, ``<unk>``, then words by falling frequency (ties alphabetical)."""
    counts = Counter(t for toks in token_lists for t in toks)
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return [PAD, UNK, *words[: max_size - 2]]


def encode(token_lists: Sequence[Sequence[str]], vocab: Sequence[str], max_len: int) -> torch.Tensor:
    """Token ids ``[N, max_len]`` (int64), truncated, padded with ``PAD_ID`` on the right."""
    index = {w: i for i, w in enumerate(vocab)}
    out = torch.full((len(token_lists), max_len), PAD_ID, dtype=torch.int64)
    for row, toks in enumerate(token_lists):
        ids = [index.get(t, UNK_ID) for t in toks[:max_len]]
        if ids:
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def decode(ids: torch.Tensor, vocab: Sequence[str]) -> list[str]:
    """Tokens of one encoded row, padding dropped."""
    return [vocab[i] for i in ids.tolist() if i != PAD_ID]
