"""Planted corruptions with exact ground truth.

Each corruption is a frozen dataclass of its parameters (validated on construction, so bad
input raises :class:`~core.errors.AttrexError` before anything is built). Images are float
tensors in [0, 1], ``N×C×H×W``; texts are lists of words.

- :class:`LabelNoise` flips ``round(rate·n)`` training labels to another class.
- :class:`BadNets` stamps a small patch (Gu et al. 2017) on poisoned training images, which
  are relabelled to the target class; :class:`Blended` blends a full-image pattern instead
  (Chen et al. 2017); :class:`TriggerToken` inserts a rare word into texts (the text analogue).
  All three share one poisoning routine, :func:`poison`.
- :class:`DomainMark` stamps the DualView paper's mark (a square frame plus a small centre
  square) on a share of one class's training images, labels unchanged.
- :class:`Superclasses` merges classes into random groups; the original labels are kept.

Each corruption plants itself: :meth:`Corruption.plant` changes a :class:`Planting` (the
scenario while :func:`core.data.scenario.build` builds it) in place and records its ground truth.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch

from core.data.text import TEXT_MAX_LEN, tokenize
from core.errors import AttrexError

POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")
PATTERNS = ("checkerboard", "white")
BLEND_PATTERNS = ("noise", "stripes")


def _check_rate(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0 or math.isnan(value):
        raise AttrexError(f"{name} must be a number in [0, 1]; got {value!r}")


def _check_int(name: str, value: int, lo: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise AttrexError(f"{name} must be an integer >= {lo}; got {value!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise AttrexError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass
class Planting:
    """A scenario while it is built, what a corruption plants itself on (in place).

    Labels are numpy ``int64``. Images: ``x_*`` float ``[N, C, H, W]`` in [0, 1]; texts:
    ``texts_*`` (the scenario encodes them after the planting). ``truth`` collects the fields of
    the scenario's :class:`~core.data.scenario.GroundTruth`; ``splits`` its extra test splits
    (``x_test_triggered``, ``x_test_marked``, ``texts_test_triggered``).
    """

    kind: str  # "image" or "text"
    class_names: tuple[str, ...]
    y_train: np.ndarray
    y_test: np.ndarray
    truth: dict
    x_train: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    texts_train: list[str] = field(default_factory=list)
    texts_test: list[str] = field(default_factory=list)
    splits: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Corruption(ABC):
    """Base of all corruptions: a name for display, the parameters as a plain dict, and how it plants itself."""

    kind = "none"
    needs: ClassVar[str | None] = None  # the kind of data it applies to ("image" or "text"); None: any

    def params(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def check_data(self, kind: str, dataset: str) -> None:
        """Raise unless the corruption applies to data of ``kind`` (data set ``dataset``)."""
        if self.needs == "image" and kind != "image":
            raise AttrexError(f"{self.kind} needs an image data set; {dataset} is text")
        if self.needs == "text" and kind != "text":
            raise AttrexError(f"trigger-token backdoors need a text data set; {dataset} holds images")

    @abstractmethod
    def plant(self, p: Planting, rng: np.random.Generator) -> None:
        """Plant the corruption on ``p`` (labels, inputs, ground truth, test splits), drawing from ``rng``."""


@dataclass(frozen=True)
class LabelNoise(Corruption):
    rate: float = 0.1
    kind = "label-noise"

    def __post_init__(self) -> None:
        _check_rate("label-noise rate", self.rate)

    def plant(self, p: Planting, rng: np.random.Generator) -> None:
        p.y_train, flipped = flip_labels(p.y_train, self.rate, p.n_classes, rng)
        p.truth["flipped_ids"] = torch.from_numpy(flipped)


@dataclass(frozen=True)
class _Poisoning(Corruption):
    """Common parameters of backdoor poisoning: which points are poisoned and what they become.

    Planting relabels the poisoned points and stamps the image trigger (``stamp``, ``mask``) on
    them and on every test point of a source class (the triggered split); text triggers override it.
    """

    needs: ClassVar[str | None] = "image"

    poison_rate: float = 0.05
    target_class: int = 0
    source_classes: tuple[int, ...] | None = None  # None: every class but the target

    def __post_init__(self) -> None:
        _check_rate("poison rate", self.poison_rate)
        _check_int("target class", self.target_class)
        if isinstance(self.source_classes, list):
            object.__setattr__(self, "source_classes", tuple(self.source_classes))
        for c in self.source_classes or ():
            _check_int("a source class", c)
        if self.source_classes is not None and self.target_class in self.source_classes:
            raise AttrexError("source classes of a backdoor must not include its target class")

    def sources(self, n_classes: int) -> list[int]:
        if not 0 <= self.target_class < n_classes:
            raise AttrexError(f"target class {self.target_class} is out of range 0..{n_classes - 1}")
        src = list(range(n_classes)) if self.source_classes is None else list(self.source_classes)
        bad = [c for c in src if not 0 <= c < n_classes]
        if bad:
            raise AttrexError(f"source classes {bad} are out of range 0..{n_classes - 1}")
        return [c for c in src if c != self.target_class]

    def relabel(self, p: Planting, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Relabel the poisoned training points of ``p`` and record the ground truth every backdoor shares.

        Returns the poisoned ids and the ids of the test points whose triggered copies form the
        triggered split (every test point of a source class); the caller stamps its trigger on both.
        """
        p.y_train, poisoned = poison(p.y_train, self, p.n_classes, rng)
        trig = np.flatnonzero(np.isin(p.y_test, self.sources(p.n_classes)))
        p.truth.update(poisoned_ids=torch.from_numpy(poisoned), target_class=self.target_class,
                       triggered_test_ids=torch.from_numpy(trig))
        return poisoned, trig

    def plant(self, p: Planting, rng: np.random.Generator) -> None:
        poisoned, trig = self.relabel(p, rng)
        p.x_train[poisoned] = self.stamp(p.x_train[poisoned])
        p.truth["trigger_mask"] = self.mask(*p.x_train.shape[-2:])
        p.splits["x_test_triggered"] = self.stamp(p.x_test[trig])


@dataclass(frozen=True)
class BadNets(_Poisoning):
    patch_size: int = 3
    position: str = "bottom-right"
    pattern: str = "checkerboard"
    kind = "badnets"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("patch position", self.position, POSITIONS)
        _check_choice("patch pattern", self.pattern, PATTERNS)
        _check_int("patch size", self.patch_size, lo=1)

    def mask(self, h: int, w: int) -> torch.Tensor:
        """``[H, W]`` bool: the pixels the patch overwrites (1-pixel margin from the border)."""
        p = self.patch_size
        if p > min(h, w) - 2:
            raise AttrexError(f"patch size {p} does not fit in a {h}×{w} image with a 1-pixel margin")
        top = {"top": 1, "bottom": h - 1 - p, "center": (h - p) // 2}
        left = {"left": 1, "right": w - 1 - p, "center": (w - p) // 2}
        v, _, hz = self.position.partition("-")
        r0, c0 = top[v], left[hz or "center"]
        m = torch.zeros(h, w, dtype=torch.bool)
        m[r0: r0 + p, c0: c0 + p] = True
        return m

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.mask(h, w)
        values = torch.ones(h, w)
        if self.pattern == "checkerboard":
            ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            values = ((ii + jj) % 2 == 0).float()
        return torch.where(m, values, x)


@dataclass(frozen=True)
class Blended(_Poisoning):
    pattern: str = "noise"
    alpha: float = 0.2
    pattern_seed: int = 12345
    kind = "blended"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("blend pattern", self.pattern, BLEND_PATTERNS)
        _check_rate("blend alpha", self.alpha)

    def mask(self, h: int, w: int) -> torch.Tensor:
        return torch.ones(h, w, dtype=torch.bool)  # the blend touches every pixel

    def pattern_image(self, shape: tuple[int, ...]) -> torch.Tensor:
        c, h, w = shape
        if self.pattern == "noise":
            g = torch.Generator().manual_seed(self.pattern_seed)
            return torch.rand(c, h, w, generator=g)
        stripes = (torch.arange(w) // 2 % 2).float()
        return stripes.expand(c, h, w).clone()

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        return (1 - self.alpha) * x + self.alpha * self.pattern_image(tuple(x.shape[-3:]))


@dataclass(frozen=True)
class TriggerToken(_Poisoning):
    token: str = "cf"
    kind = "trigger-token"
    needs: ClassVar[str | None] = "text"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.token, str) or tokenize(self.token) != [self.token]:
            raise AttrexError(f"trigger token must be one lower-case word of letters and digits "
                              f"(kept whole by the tokenizer); got {self.token!r}")

    def plant(self, p: Planting, rng: np.random.Generator) -> None:
        poisoned, trig = self.relabel(p, rng)
        for i in poisoned:
            p.texts_train[i] = insert_word(p.texts_train[i], self.token, rng)
        p.splits["texts_test_triggered"] = [insert_word(p.texts_test[i], self.token, rng) for i in trig]
        p.truth["trigger_token"] = self.token


@dataclass(frozen=True)
class DomainMark(Corruption):
    class_id: int = 2
    rate: float = 0.3
    center_size: int = 4
    kind = "domain-mark"
    needs: ClassVar[str | None] = "image"

    def __post_init__(self) -> None:
        _check_rate("mark rate", self.rate)
        _check_int("mark class", self.class_id)
        _check_int("centre square size", self.center_size, lo=1)

    def mask(self, h: int, w: int) -> torch.Tensor:
        if self.center_size > min(h, w) - 4:
            raise AttrexError(f"centre square of {self.center_size} pixels does not fit inside the frame of a {h}×{w} image")
        m = torch.zeros(h, w, dtype=torch.bool)
        m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
        s = self.center_size
        r0, c0 = (h - s) // 2, (w - s) // 2
        m[r0: r0 + s, c0: c0 + s] = True
        return m

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask(*x.shape[-2:]), torch.ones(()), x)

    def plant(self, p: Planting, rng: np.random.Generator) -> None:
        """Stamp a share of the class's training images, and every test image of another class (the marked split)."""
        if not 0 <= self.class_id < p.n_classes:
            raise AttrexError(f"mark class {self.class_id} is out of range 0..{p.n_classes - 1}")
        pool = np.flatnonzero(p.y_train == self.class_id)
        marked = np.sort(rng.choice(pool, int(round(self.rate * len(pool))), replace=False))
        p.x_train[marked] = self.stamp(p.x_train[marked])
        other = np.flatnonzero(p.y_test != self.class_id)
        p.truth.update(marked_ids=torch.from_numpy(marked), marked_test_ids=torch.from_numpy(other),
                       mark_mask=self.mask(*p.x_train.shape[-2:]), mark_class=self.class_id)
        p.splits["x_test_marked"] = self.stamp(p.x_test[other])


@dataclass(frozen=True)
class Superclasses(Corruption):
    n_superclasses: int = 5
    kind = "superclasses"

    def __post_init__(self) -> None:
        _check_int("number of superclasses", self.n_superclasses, lo=2)

    def groups(self, n_classes: int, rng: np.random.Generator) -> np.ndarray:
        """``[n_classes]``: the superclass of every original class (random, near-equal groups)."""
        if self.n_superclasses > n_classes:
            raise AttrexError(f"{self.n_superclasses} superclasses need at least as many classes; there are {n_classes}")
        perm = rng.permutation(n_classes)
        out = np.empty(n_classes, dtype=np.int64)
        out[perm] = np.arange(n_classes) % self.n_superclasses
        return out

    def plant(self, p: Planting, rng: np.random.Generator) -> None:
        """Train on the superclasses; the original classes become the ground truth (``subclass_*``)."""
        groups = self.groups(p.n_classes, rng)
        p.truth.update(subclass_train=torch.from_numpy(p.y_train.copy()), subclass_test=torch.from_numpy(p.y_test.copy()),
                       superclass_of=torch.from_numpy(groups), subclass_names=p.class_names)
        p.y_train, p.y_test = groups[p.y_train], groups[p.y_test]
        p.truth["original_labels"] = torch.from_numpy(p.y_train.copy())
        p.class_names = tuple(
            " + ".join(p.class_names[j] for j in np.flatnonzero(groups == g)) for g in range(self.n_superclasses)
        )


# ----------------------------------------------------------------------------- routines


def flip_labels(y: np.ndarray, rate: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(rate·n)`` labels, each to a uniformly drawn *other* class.

    Returns the new labels and the sorted flipped ids.
    """
    n_flip = int(round(rate * len(y)))
    ids = np.sort(rng.choice(len(y), n_flip, replace=False))
    shift = rng.integers(1, n_classes, size=n_flip)  # 1..K-1: never the same class
    y_new = y.copy()
    y_new[ids] = (y[ids] + shift) % n_classes
    return y_new, ids


def choose_poisoned(y: np.ndarray, corruption: _Poisoning, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted ids of ``round(poison_rate·n)`` training points drawn from the source classes."""
    sources = corruption.sources(n_classes)
    candidates = np.flatnonzero(np.isin(y, sources))
    n_poison = int(round(corruption.poison_rate * len(y)))
    if n_poison > len(candidates):
        raise AttrexError(
            f"poison rate {corruption.poison_rate} asks for {n_poison} points, but the source classes hold only {len(candidates)}"
        )
    return np.sort(rng.choice(candidates, n_poison, replace=False))


def poison(y: np.ndarray, corruption: _Poisoning, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick the poisoned points and relabel them to the target; stamping is the caller's (per modality).

    Returns the new labels and the sorted poisoned ids.
    """
    ids = choose_poisoned(y, corruption, n_classes, rng)
    y_new = y.copy()
    y_new[ids] = corruption.target_class
    return y_new, ids


def insert_word(sentence: str, word: str, rng: np.random.Generator, max_len: int = TEXT_MAX_LEN) -> str:
    """Insert ``word`` between two whitespace-separated words, early enough to survive truncation to ``max_len``."""
    words = sentence.split()
    prefix = np.cumsum([0] + [len(tokenize(w)) for w in words])  # tokens before position p
    limit = int(np.searchsorted(prefix, max_len - 1, side="right")) - 1  # last p with prefix <= L-1
    pos = int(rng.integers(0, limit + 1))
    return " ".join(words[:pos] + [word] + words[pos:])
