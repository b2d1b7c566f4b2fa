"""The scenario and model under evaluation: the seeded test-point draws and ground truth every task reads, made once."""

from __future__ import annotations

from functools import cached_property

import torch

from core.cache import Cache
from core.data import Scenario
from core.errors import AttrexError
from core.evaluation.settings import Settings
from core.methods import Attributor, TrainingData
from core.metrics import lds
from core.models.subsets import random_subsets, train_subsets
from core.models.training import Progress, TrainedModel, predict


class Context:
    """One scenario and model under evaluation: the test points and ground truth every task draws on, made once."""

    def __init__(self, scenario: Scenario, trained: TrainedModel, settings: Settings, cache: Cache,
                 workers: int, progress: Progress | None = None):
        self.scenario, self.trained, self.settings, self.cache = scenario, trained, settings, cache
        self.workers = workers
        self.progress = progress
        self.data = TrainingData.of(scenario)
        self._scores: dict[tuple[str, str, str], torch.Tensor] = {}

    def draw(self, n_total: int, n: int, salt: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.settings.seed * 7919 + salt)
        return torch.randperm(n_total, generator=g)[:min(n, n_total)].sort().values

    @cached_property
    def clean_ids(self) -> torch.Tensor:
        """Ids of the seeded clean test points of the DualView tasks."""
        return self.draw(len(self.scenario.y_test), self.settings.n_test, 1)

    @cached_property
    def clean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, predicted class)`` of :attr:`clean_ids`."""
        x = self.scenario.x_test[self.clean_ids]
        return x, predict(self.trained.model, x).argmax(1)

    @cached_property
    def triggered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n_triggered`` triggered test samples the model sends to the target class, and that class."""
        x_trig, target = self.scenario.test_split("triggered")
        hit = (predict(self.trained.model, x_trig).argmax(1) == target).nonzero().squeeze(1)[:self.settings.n_triggered]
        if not len(hit):
            raise AttrexError("the model resists the backdoor: no triggered test sample reaches the target class")
        return x_trig[hit], target[hit]

    @cached_property
    def marked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stamped other-class test images and the model's predictions for them."""
        x, _ = self.scenario.test_split("marked")
        return x, predict(self.trained.model, x).argmax(1)

    @cached_property
    def lds_points(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, true labels, subset masks [M, n_train], margins [M, n_test])`` of LDS; trains the subset models."""
        s = self.settings
        ids = self.draw(len(self.scenario.y_test), s.lds_test, 2)
        x, y = self.scenario.x_test[ids], self.scenario.y_test[ids]
        masks = random_subsets(len(self.data), s.lds_subsets, s.lds_alpha, seed=s.seed)
        models = train_subsets(self.scenario, list(masks), self.trained.config, cache=self.cache,
                               workers=self.workers, progress=self.progress)
        outputs = torch.stack([lds.margin(predict(m.model, x), y) for m in models])
        return x, y, masks, outputs

    def scores(self, method: Attributor, split: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``method.scores(x, target)``, computed once per method and split in this evaluation."""
        key = (method.name, method.cache_key(), split)  # methods may share a precompute (gas and tracin)
        if key not in self._scores:
            self._scores[key] = method.scores(x, target)
        return self._scores[key]
