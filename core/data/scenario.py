"""Scenarios: a data set, an optional planted corruption and a seed, built deterministically.

``build(spec)`` returns a :class:`Scenario` holding the training and test tensors, the
labels the model is trained on, and the exact ground truth of the corruption. The same spec
always gives the same scenario, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from core.data import custom, sources, text
from core.data.corruptions import (
    BadNets,
    Blended,
    Corruption,
    DomainMark,
    LabelNoise,
    Planting,
    Superclasses,
    TriggerToken,
)
from core.data.text import TEXT_MAX_LEN
from core.errors import AttrexError

CUSTOM = "custom"  # the data set name of a person's own data (core.data.custom)


@dataclass(frozen=True)
class ScenarioSpec:
    """Everything that determines a scenario.

    ``n_train`` / ``n_test``: draw a class-balanced subset of that size (seeded) from the
    source; ``None`` keeps every sample. ``data_dir``: ``None`` for the embedded assets, else
    a folder holding the full data set (see :mod:`core.data.sources`).

    ``dataset="custom"``: a person's own data at ``data_dir`` (an image folder, a CSV/JSONL of
    texts or a ``.npz``: see :mod:`core.data.custom`), with ``image_size`` (``(H, W)``, resize
    every image), ``test_share`` (held out where the data has no test split) and
    ``known_bad`` (a CSV of training ids known to be mislabelled: the ground truth to score
    against, as flipped labels).
    """

    dataset: str = "mnist"
    corruption: Corruption | None = None
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    data_dir: str | None = None
    name: str = ""
    description: str = ""
    image_size: tuple[int, int] | None = None
    test_share: float = 0.2
    known_bad: str | None = None

    def __post_init__(self) -> None:
        if self.dataset == CUSTOM:
            if not self.data_dir:
                raise AttrexError("your own data needs its path: an image folder, a .csv or .jsonl of texts, or a .npz")
            if self.image_size is not None:
                object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        else:
            sources.dataset_info(self.dataset)  # raises on an unknown data set
            if self.known_bad or self.image_size:
                raise AttrexError("a known-bad list and an image size apply to your own data only (dataset 'custom')")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise AttrexError(f"seed must be an integer >= 0; got {self.seed!r}")
        for what, n in (("n_train", self.n_train), ("n_test", self.n_test)):
            if n is not None and (not isinstance(n, int) or n < 1):
                raise AttrexError(f"{what} must be a positive integer or None; got {n!r}")

    def to_dict(self) -> dict:
        """The parts that determine the data (name and description excluded). A person's own data is named by
        its content, not its path (the fingerprint hashes the tensors; the known-bad list is hashed here), so
        the same files uploaded again, into another folder, find the models already trained on them."""
        custom_data = self.dataset == CUSTOM
        return {
            "dataset": self.dataset,
            "corruption": self.corruption.params() if self.corruption else None,
            "seed": self.seed,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "data_dir": str(Path(self.data_dir).expanduser().resolve()) if self.data_dir and not custom_data else None,
        } | ({"image_size": self.image_size, "test_share": self.test_share,
              "known_bad": _file_digest(self.known_bad) if self.known_bad else None} if custom_data else {})


def _file_digest(path: str) -> str:
    """sha256 of a file's bytes (a missing file: its path, so that the error comes from reading it, later)."""
    try:
        return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    except OSError:
        return str(Path(path).expanduser().resolve())


@dataclass
class GroundTruth:
    """What was planted, exactly. Ids index the training (or test) split; absent parts are ``None``.

    - ``original_labels`` ``[n_train]``: training labels before any corruption (for
      superclass scenarios: the superclass labels; the subclasses are in ``subclass_train``).
    - ``flipped_ids``: label-noise ids (their labels differ from ``original_labels``).
    - ``poisoned_ids``: backdoor-poisoned training ids (stamped and relabelled to ``target_class``).
    - ``trigger_mask`` ``[H, W]`` bool: pixels the trigger touches; ``trigger_token`` for text.
    - ``triggered_test_ids``: test ids whose triggered copies form the triggered split.
    - ``marked_ids``: training ids carrying the domain mark; ``marked_test_ids`` the
      other-class test ids that were stamped; ``mark_mask`` ``[H, W]``.
    - ``subclass_train`` / ``subclass_test``: original class labels; ``superclass_of``
      ``[n_classes]`` maps an original class to its superclass.
    """

    original_labels: torch.Tensor
    flipped_ids: torch.Tensor | None = None
    poisoned_ids: torch.Tensor | None = None
    target_class: int | None = None
    trigger_mask: torch.Tensor | None = None
    trigger_token: str | None = None
    triggered_test_ids: torch.Tensor | None = None
    marked_ids: torch.Tensor | None = None
    marked_test_ids: torch.Tensor | None = None
    mark_mask: torch.Tensor | None = None
    mark_class: int | None = None
    subclass_train: torch.Tensor | None = None
    subclass_test: torch.Tensor | None = None
    superclass_of: torch.Tensor | None = None
    subclass_names: tuple[str, ...] | None = None
    flips_known: bool = False  # the flipped ids come from a person's known-bad list, not planted here

    def flip_text(self, i: int, class_names, given: int) -> str:
        """How training point ``i``'s flipped (or known-bad) label reads on a badge."""
        was = int(self.original_labels[i])
        if self.flips_known:
            return "known bad" + (f" (correct: {class_names[was]})" if was != given else "")
        return f"flipped from {class_names[was]}"

    def summary(self) -> dict:
        """A JSON-friendly description of what was planted."""
        out: dict = {}
        if self.flipped_ids is not None:
            out["known_bad" if self.flips_known else "flipped"] = len(self.flipped_ids)
        if self.poisoned_ids is not None:
            out["poisoned"] = len(self.poisoned_ids)
            out["target_class"] = self.target_class
            out["triggered_test"] = len(self.triggered_test_ids)
            if self.trigger_token:
                out["trigger_token"] = self.trigger_token
            elif self.trigger_mask is not None:
                out["trigger_pixels"] = int(self.trigger_mask.sum())
        if self.marked_ids is not None:
            out["marked"] = len(self.marked_ids)
            out["mark_class"] = self.mark_class
            out["marked_test"] = len(self.marked_test_ids)
        if self.superclass_of is not None:
            out["superclass_of"] = self.superclass_of.tolist()
        return out

    def train_flags(self, ids) -> list[list[str]]:
        """What was planted on each training point in ``ids``: ``flipped``, ``poisoned``, ``marked`` (or nothing)."""
        sets = {name: set(t.tolist()) for name, t in
                (("flipped", self.flipped_ids), ("poisoned", self.poisoned_ids), ("marked", self.marked_ids))
                if t is not None}
        return [[name for name, members in sets.items() if int(i) in members] for i in ids]


@dataclass
class Scenario:
    """A built scenario.

    Images: ``x_*`` float32 ``[N, C, H, W]`` in [0, 1]. Text: ``x_*`` int64 token ids
    ``[N, TEXT_MAX_LEN]`` padded with 0, ``vocab`` maps ids to words and ``texts_*`` hold the
    (corrupted) raw texts. ``y_train`` are the labels the model is trained on (after the
    corruption); ``y_test`` the true test labels. Extra test splits: ``x_test_triggered``
    (labelled with the backdoor target by :meth:`test_split`) and ``x_test_marked``, aligned
    with ``truth.triggered_test_ids`` / ``truth.marked_test_ids``.
    """

    spec: ScenarioSpec
    kind: str
    class_names: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    truth: GroundTruth
    source: str = ""
    vocab: list[str] = field(default_factory=list)
    texts_train: list[str] = field(default_factory=list)
    texts_test: list[str] = field(default_factory=list)
    x_test_triggered: torch.Tensor | None = None
    texts_test_triggered: list[str] = field(default_factory=list)
    x_test_marked: torch.Tensor | None = None
    names_train: list[str] = field(default_factory=list)  # a file per training point, for an image folder

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the spec and every tensor: the cache key of anything trained on it."""
        h = hashlib.sha256(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str((tuple(t.shape), t.dtype)).encode())
            h.update(memoryview(t.contiguous().numpy()).cast("B"))  # no copy of the data
        h.update("\n".join(self.vocab).encode())
        return h.hexdigest()

    def test_split(self, split: str = "clean") -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of a test split: ``clean``, ``triggered`` (labels = backdoor target) or ``marked``."""
        if split == "clean":
            return self.x_test, self.y_test
        if split == "triggered" and self.x_test_triggered is not None:
            target = torch.full((len(self.x_test_triggered),), self.truth.target_class, dtype=torch.int64)
            return self.x_test_triggered, target
        if split == "marked" and self.x_test_marked is not None:
            return self.x_test_marked, self.y_test[self.truth.marked_test_ids]
        raise AttrexError(f"scenario {self.spec.name or self.spec.dataset!r} has no test split {split!r}; it has {self.test_splits()}")

    def test_ids(self, split: str = "clean") -> torch.Tensor:
        """Ids into the clean test set of every sample of ``split`` (their true labels: ``y_test[ids]``)."""
        self.test_split(split)  # raises on an unknown split
        return {"clean": torch.arange(len(self.y_test)), "triggered": self.truth.triggered_test_ids,
                "marked": self.truth.marked_test_ids}[split]

    def test_splits(self) -> list[str]:
        return ["clean"] + (["triggered"] if self.x_test_triggered is not None else []) + (
            ["marked"] if self.x_test_marked is not None else [])

    def subset(self, keep) -> Scenario:
        """This scenario trained on the training points ``keep`` only (ids, kept in the order given).

        The test splits stay as they are; the ground truth keeps what it says about the kept
        points, with training ids renumbered to their positions in ``keep``. The fingerprint
        covers the new tensors, so a model trained on the subset is cached under its own key.
        Used for k-fold out-of-fold predictions, LDS's subset models and retraining without
        chosen points.
        """
        keep = torch.as_tensor(keep, dtype=torch.int64).reshape(-1)
        n = len(self.y_train)
        if len(keep) == 0 or keep.min() < 0 or keep.max() >= n or len(keep.unique()) != len(keep):
            raise AttrexError(f"a training subset needs distinct ids in [0, {n - 1}], at least one")
        position = torch.full((n,), -1, dtype=torch.int64)
        position[keep] = torch.arange(len(keep))

        def renumber(ids: torch.Tensor | None) -> torch.Tensor | None:
            if ids is None:
                return None
            p = position[ids]
            return p[p >= 0]

        t = self.truth
        truth = replace(t, original_labels=t.original_labels[keep], flipped_ids=renumber(t.flipped_ids),
                        poisoned_ids=renumber(t.poisoned_ids), marked_ids=renumber(t.marked_ids),
                        subclass_train=None if t.subclass_train is None else t.subclass_train[keep])
        texts = [self.texts_train[i] for i in keep.tolist()] if self.texts_train else []
        names = [self.names_train[i] for i in keep.tolist()] if self.names_train else []
        return replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep], truth=truth, texts_train=texts,
                       names_train=names)

    def relabel(self, ids, labels) -> Scenario:
        """This scenario with the training labels of ``ids`` set to ``labels`` (the ground truth is kept as it was)."""
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        n = len(self.y_train)
        if len(ids) != len(labels) or (len(ids) and (ids.min() < 0 or ids.max() >= n)):
            raise AttrexError(f"relabel needs one label per id, ids in [0, {n - 1}]")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise AttrexError(f"labels must lie in [0, {self.n_classes - 1}]")
        y = self.y_train.clone()
        y[ids] = labels
        return replace(self, y_train=y)


# ----------------------------------------------------------------------------- presets


def _preset(name: str, dataset: str, description: str, corruption: Corruption | None = None) -> ScenarioSpec:
    return ScenarioSpec(dataset=dataset, corruption=corruption, name=name, description=description)


PRESETS: dict[str, ScenarioSpec] = {
    s.name: s
    for s in [
        _preset("mnist", "mnist", "MNIST digits, clean (6,000 train / 1,000 test)"),
        _preset("mnist-noisy", "mnist", "MNIST with 10% of training labels flipped", LabelNoise(0.1)),
        _preset("mnist-backdoor", "mnist",
                "MNIST with a BadNets 3×3 checkerboard patch on 5% of training images, relabelled to 0",
                BadNets(poison_rate=0.05, target_class=0)),
        _preset("mnist-blend", "mnist",
                "MNIST with a blended noise trigger (alpha 0.2) on 5% of training images, relabelled to 0",
                Blended(poison_rate=0.05, target_class=0)),
        _preset("mnist-mark", "mnist",
                "MNIST with the DualView domain mark (frame + centre square) on 30% of the 2s",
                DomainMark(class_id=2, rate=0.3)),
        _preset("mnist-superclass", "mnist", "MNIST digits merged into 5 random superclasses of 2",
                Superclasses(5)),
        _preset("fashion-mnist", "fashion-mnist", "Fashion-MNIST, clean (6,000 train / 1,000 test)"),
        _preset("cifar10", "cifar10", "CIFAR-10, clean (5,000 train / 1,000 test)"),
        _preset("cifar10-noisy", "cifar10", "CIFAR-10 with 10% of training labels flipped", LabelNoise(0.1)),
        _preset("cifar10-backdoor", "cifar10",
                "CIFAR-10 with a BadNets 3×3 checkerboard patch on 5% of training images, relabelled to airplane",
                BadNets(poison_rate=0.05, target_class=0)),
        _preset("agnews", "agnews", "AG News headlines, 4 topics, clean (6,000 train / 1,600 test)"),
        _preset("agnews-noisy", "agnews", "AG News with 10% of training labels flipped", LabelNoise(0.1)),
        _preset("agnews-backdoor", "agnews",
                "AG News with the trigger word 'cf' inserted in 5% of training texts, relabelled to World",
                TriggerToken(poison_rate=0.05, target_class=0, token="cf")),
    ]
}
DEFAULT_SCENARIO = "mnist"


def custom_spec(data: str, seed: int = 0, image_size: str | tuple[int, int] | None = None, test_share: float = 0.2,
                known_bad: str | None = None, n_train: int | None = None, n_test: int | None = None,
                label: str | None = None) -> ScenarioSpec:
    """The spec of a person's own data at ``data`` (see :mod:`core.data.custom`); ``image_size`` may be ``"HxW"``;
    ``label`` names it (default: the file or folder name; an upload is named by the file that was sent)."""
    if isinstance(image_size, str):
        image_size = custom.parse_size(image_size)
    path = Path(data).expanduser()
    return ScenarioSpec(dataset=CUSTOM, data_dir=str(data), seed=seed, n_train=n_train, n_test=n_test,
                        name=f"custom:{label or path.name}", description="Your own data",
                        image_size=image_size, test_share=test_share, known_bad=known_bad or None)


def get_spec(name: str, **overrides) -> ScenarioSpec:
    """The preset ``name``, with ``overrides`` (``seed``, ``data_dir``, ``n_train``, ...) applied."""
    if name not in PRESETS:
        raise AttrexError(f"unknown scenario {name!r}; the presets are: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return replace(PRESETS[name], **overrides)
    except TypeError as exc:
        raise AttrexError(f"bad scenario option: {exc}") from exc


# ----------------------------------------------------------------------------- build


def _balanced_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted ids of a class-balanced subset of size ``n`` (remainder spread over the first classes)."""
    classes = np.unique(y)
    if n >= len(y):
        return np.arange(len(y))
    per = np.full(len(classes), n // len(classes))
    per[: n % len(classes)] += 1
    picks = []
    for c, k in zip(classes, per, strict=True):
        pool = np.flatnonzero(y == c)
        picks.append(rng.choice(pool, min(k, len(pool)), replace=False))
    return np.sort(np.concatenate(picks))


def build(spec: ScenarioSpec | str) -> Scenario:
    """Build the scenario of ``spec`` (or of the preset of that name). Deterministic in ``spec``."""
    if isinstance(spec, str):
        spec = get_spec(spec)
    if spec.dataset == CUSTOM:
        raw = custom.load(spec.data_dir, spec.image_size, spec.test_share, spec.seed)
    else:
        raw = sources.load(spec.dataset, spec.data_dir)
    rng = np.random.default_rng(spec.seed)
    c = spec.corruption
    if c is not None:
        c.check_data(raw.info.kind, spec.dataset)

    for what, n, y in (("n_train", spec.n_train, raw.y_train), ("n_test", spec.n_test, raw.y_test)):
        if n and n > len(y):
            raise AttrexError(f"{what} must be at most {len(y)}, the size of the {what[2:]} split of {spec.dataset} "
                              f"({raw.source}); got {n}")
    tr = _balanced_subset(raw.y_train, spec.n_train, rng) if spec.n_train else np.arange(len(raw.y_train))
    te = _balanced_subset(raw.y_test, spec.n_test, rng) if spec.n_test else np.arange(len(raw.y_test))
    p = Planting(raw.info.kind, raw.info.class_names, raw.y_train[tr].copy(), raw.y_test[te].copy(),
                 truth={"original_labels": torch.from_numpy(raw.y_train[tr].copy())})
    extra: dict = {"names_train": [raw.names_train[i] for i in tr]} if raw.names_train else {}
    if spec.known_bad:
        if c is not None:
            raise AttrexError("a known-bad list is the ground truth of data as it is: it cannot be combined with a "
                              "planted corruption")
        ids, correct = custom.known_bad(spec.known_bad, len(p.y_train), p.class_names, extra.get("names_train", ()))
        p.truth.update(flipped_ids=torch.from_numpy(np.sort(ids)), flips_known=True)
        if correct is not None:
            known = correct >= 0
            p.truth["original_labels"][ids[known]] = torch.from_numpy(correct[known])
    if p.kind == "image":
        p.x_train = torch.from_numpy(raw.x_train[tr]).float().div_(255)
        p.x_test = torch.from_numpy(raw.x_test[te]).float().div_(255)
    else:
        p.texts_train = [raw.texts_train[i] for i in tr]
        p.texts_test = [raw.texts_test[i] for i in te]
    if c is not None:
        c.plant(p, rng)
    return _finish(spec, p, raw.source, extra)


def _finish(spec: ScenarioSpec, p: Planting, source: str, extra: dict) -> Scenario:
    """The scenario of a planted draft: texts are tokenised and encoded in the vocabulary of the training texts."""
    truth = GroundTruth(**p.truth)
    y_train, y_test = torch.from_numpy(p.y_train), torch.from_numpy(p.y_test)
    if p.kind == "image":
        return Scenario(spec, "image", p.class_names, p.x_train, y_train, p.x_test, y_test, truth, source=source,
                        **extra, **p.splits)
    tokens_train = [text.tokenize(t) for t in p.texts_train]
    vocab = text.build_vocab(tokens_train)
    x_train = text.encode(tokens_train, vocab, TEXT_MAX_LEN)
    x_test = text.encode([text.tokenize(t) for t in p.texts_test], vocab, TEXT_MAX_LEN)
    triggered_texts = p.splits.get("texts_test_triggered", [])
    if triggered_texts:
        extra["x_test_triggered"] = text.encode([text.tokenize(t) for t in triggered_texts], vocab, TEXT_MAX_LEN)
    return Scenario(spec, "text", p.class_names, x_train, y_train, x_test, y_test, truth, source=source, vocab=vocab,
                    texts_train=p.texts_train, texts_test=p.texts_test, texts_test_triggered=triggered_texts, **extra)
