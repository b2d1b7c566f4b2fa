"""Architectures. Every model is an :class:`AttrexModel`: ``features(x)`` gives the penultimate
representation ``[N, d]``, ``head`` is the last linear layer, ``forward = head ∘ features``.

Text models also expose ``embed(ids)`` and ``forward_embeddings(e, mask)`` so feature-level
methods can perturb token embeddings; padding positions (id 0) do not reach the output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from core.errors import AttrexError


class AttrexModel(nn.Module, ABC):
    """A classifier split into a feature extractor and a last linear layer ``head``."""

    head: nn.Linear

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation ``[N, d]``: the input of ``head``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, n_classes] logits
        return self.head(self.features(x))

    @property
    def feature_dim(self) -> int:
        return self.head.in_features


@torch.no_grad()
def penultimate(model: AttrexModel, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """``model.features(x)`` ``[N, d]`` in eval mode, ``batch`` rows at a time (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    parts = [model.features(x[i: i + batch]) for i in range(0, len(x), batch)]
    model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, model.head.in_features, dtype=model.head.weight.dtype)


class SmallCNN(AttrexModel):
    """Two conv blocks and a 128-unit hidden layer, for 28×28 grey images (penultimate: 128)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: int = 16, hidden: int = 128, side: int = 28,
                 height: int | None = None):
        super().__init__()
        height = side if height is None else height  # non-square images: side is the width
        self.extractor = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (side // 4), hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x):
        return self.extractor(x)


class MLP(AttrexModel):
    """The Integrated Influence paper's MLP: input → 128 → 64 → classes (penultimate: 64)."""

    def __init__(self, in_features: int = 784, n_classes: int = 10, hidden: tuple[int, int] = (128, 64)):
        super().__init__()
        self.extractor = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU()
        )
        self.head = nn.Linear(hidden[1], n_classes)

    def features(self, x):
        return self.extractor(x)


class LogisticRegression(AttrexModel):
    """Multinomial logistic regression: the penultimate features are the flattened input."""

    def __init__(self, in_features: int = 784, n_classes: int = 10):
        super().__init__()
        self.head = nn.Linear(in_features, n_classes)

    def features(self, x):
        return x.flatten(1)


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.body(x))


class _Scale(nn.Module):
    """Multiply by a constant: ResNet-9 scales its pooled features by 1/8 so SGD at lr ~0.1 stays stable."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _conv_bn(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallResNet(AttrexModel):
    """A ResNet-9-style network (Page's DAWNBench design) at reduced width, for 32×32 RGB images.

    prep → [conv-pool, residual] → conv-pool → [conv-pool, residual] → global max pool.
    With ``width=16`` the channels are 16-32-64-128 (penultimate: 128).
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.extractor = nn.Sequential(
            _conv_bn(in_channels, w, pool=False),
            _conv_bn(w, 2 * w, pool=True), _Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),
            _conv_bn(4 * w, 8 * w, pool=True), _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), _Scale(0.125),
        )
        self.head = nn.Linear(8 * w, n_classes)

    def features(self, x):
        return self.extractor(x)


class ResNet18(AttrexModel):
    """torchvision's ResNet-18 adapted to 32×32 inputs: 3×3 stem, stride 1, no max pool (penultimate: 512)."""

    def __init__(self, in_channels: int = 3, n_classes: int = 10):
        super().__init__()
        net = torchvision.models.resnet18(weights=None, num_classes=n_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.head = net.fc
        net.fc = nn.Identity()
        self.extractor = net

    def features(self, x):
        return self.extractor(x)


class TextClassifier(AttrexModel):
    """Learned token embeddings, masked mean and max pooling, a hidden layer (penultimate) and a linear head.

    Max pooling lets a single decisive word (a trigger, a strong topic word) carry through
    however long the text; mean pooling keeps the overall gist. Padding positions are masked
    out of both, so they never reach the output.
    """

    def __init__(self, vocab_size: int, n_classes: int = 4, dim: int = 64, hidden: int = 64):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.hidden = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, L, dim]
        return self.embedding(ids)

    def pooled(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean and max over positions: ``[N, L, dim], [N, L] -> [N, 2·dim]`` (an empty text gives 0)."""
        m = mask.unsqueeze(-1)
        count = m.sum(1)
        mean = (e * m.to(e.dtype)).sum(1) / count.clamp_min(1).to(e.dtype)
        peak = e.masked_fill(~m, float("-inf")).amax(1)
        peak = torch.where(count > 0, peak, torch.zeros_like(peak))
        return torch.cat([mean, peak], dim=1)

    def features_from_embeddings(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.pooled(e, mask))

    def forward_embeddings(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features_from_embeddings(e, mask))

    def features(self, ids):
        return self.features_from_embeddings(self.embed(ids), ids != 0)


@dataclass(frozen=True)
class Architecture:
    """A model family attrex can train: ``build(input_shape, n_classes, vocab_size)`` makes a fresh
    :class:`AttrexModel`; ``kind`` is the data it takes (``image`` or ``text``); ``version`` enters the cache key of
    every model trained with it (bump it on any change to the architecture, parameter-free layers included: they
    change the function without changing the weights)."""

    name: str
    build: Callable[[tuple[int, ...], int, int], AttrexModel]
    kind: str
    description: str
    version: int = 1


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add ``arch`` to :data:`ARCHITECTURES` (the CLI's ``--arch``, the app's model choices and
    ``attrex:<name>`` weights read it); a second architecture under the same name is refused."""
    if arch.kind not in ("image", "text"):
        raise AttrexError(f"architecture {arch.name!r}: kind must be 'image' or 'text'; got {arch.kind!r}")
    if arch.name in ARCHITECTURES and ARCHITECTURES[arch.name] != arch:
        raise AttrexError(f"two architectures named {arch.name!r}")
    ARCHITECTURES[arch.name] = arch
    return arch


for _arch in (
    Architecture("cnn", lambda shape, k, v: SmallCNN(shape[0], k, side=shape[-1], height=shape[-2]), "image",
                 "small CNN: 2 conv blocks + 128-unit hidden layer (any size from 4×4)"),
    Architecture("mlp", lambda shape, k, v: MLP(int(torch.Size(shape).numel()), k), "image",
                 "MLP 128-64 (the Integrated Influence paper's)"),
    Architecture("logreg", lambda shape, k, v: LogisticRegression(int(torch.Size(shape).numel()), k), "image",
                 "multinomial logistic regression on the pixels"),
    Architecture("resnet-small", lambda shape, k, v: SmallResNet(shape[0], k), "image",
                 "ResNet-9-style network at width 16 (trains on 2 cores in minutes)", version=2),
    Architecture("resnet18", lambda shape, k, v: ResNet18(shape[0], k), "image",
                 "torchvision ResNet-18 adapted to 32×32 (slow on a CPU)"),
    Architecture("text", lambda shape, k, v: TextClassifier(v, k), "text",
                 "token embeddings (64-d), masked mean + max pooling, 64-unit hidden layer", version=2),
):
    register_architecture(_arch)


def build_model(arch: str, input_shape: tuple[int, ...], n_classes: int, vocab_size: int = 0) -> AttrexModel:
    """A freshly initialised model (initialisation follows the global torch seed)."""
    if arch not in ARCHITECTURES:
        raise AttrexError(f"unknown architecture {arch!r}; accepted: {', '.join(ARCHITECTURES)}")
    a = ARCHITECTURES[arch]
    is_text = len(input_shape) == 1
    if (a.kind == "text") != is_text:
        raise AttrexError(f"architecture {arch!r} is for {a.kind} data; this scenario holds {'text' if is_text else 'images'}")
    return a.build(input_shape, n_classes, vocab_size)
