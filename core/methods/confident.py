"""Confident learning (cleanlab) on out-of-fold predicted probabilities: the mislabel baseline.

Northcutt, Jiang & Chuang, "Confident learning: estimating uncertainty in dataset labels",
JAIR 2021, through the ``cleanlab`` library. The training set is split into ``folds``
seeded folds; a model of the same architecture and recipe is trained on all but each fold
(:mod:`core.models.subsets`, cached) and predicts the held-out fold, so every training point
gets predicted probabilities from a model that never saw it. ``cleanlab.filter.find_label_issues``
(prune by noise rate) flags the points whose given label confident learning rejects, and
``cleanlab.rank.get_label_quality_scores`` scores every point's label (``rank_by``).

Score (higher = more suspicious): ``flagged + (1 - quality)``, so the flagged points come
first, each group ordered by its label quality. Training points only: ``self_scores()`` is
the score, ``scores()`` refuses (``per_test = False``).
"""

from __future__ import annotations

import torch

from core.errors import AttrexError
from core.methods.base import Attributor, Param, register
from core.models.subsets import default_workers, k_folds, train_subsets
from core.models.training import predict_proba


def label_issue_scores(labels: torch.Tensor, probs: torch.Tensor, rank_by: str) -> tuple[torch.Tensor, torch.Tensor]:
    """cleanlab's suspicion of each label given out-of-fold probabilities ``probs`` ``[n, K]``: ``(score, flagged)``,
    the score being 1 for a point ``find_label_issues`` flags plus one minus its label quality (``rank_by``).

    cleanlab runs in this process (``n_jobs=1``): its pool shares data through module globals that a process
    started by spawn (the app's job workers) does not have, and failed there with a ``NameError``.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y, p = labels.numpy(), probs.double().numpy()
    quality = torch.from_numpy(get_label_quality_scores(y, p, method=rank_by))
    flagged = torch.from_numpy(find_label_issues(y, p, filter_by="prune_by_noise_rate", n_jobs=1))
    return flagged.double() + (1 - quality.double()), flagged


@register
class ConfidentLearning(Attributor):
    name = "cleanlab"
    title = "Confident learning (cleanlab)"
    description = ("cleanlab's label-issue ranking on out-of-fold probabilities from k models of the same recipe: "
                   "a mislabel baseline for training points only, no per-test-point scores.")
    reference = "baseline (Northcutt et al., JAIR 2021; the cleanlab library)"
    baseline = True
    per_test = False
    estimates_removal = False
    retrains = True
    params = (
        Param("folds", "int", 3, "folds of the out-of-fold predictions (one model trained per fold)", low=2, high=10),
        Param("rank_by", "choice", "self_confidence", "cleanlab's label quality score",
              choices=("self_confidence", "normalized_margin", "confidence_weighted_entropy")),
        Param("seed", "int", 0, "seed of the fold split", low=0, high=2**31 - 1),
    )

    def _compute(self, progress):
        scenario = self.data.scenario
        if scenario is None:
            raise AttrexError("cleanlab retrains the model on folds of the training set, so it needs a scenario "
                              "(TrainingData.of(scenario)), not bare tensors")  # declared by retrains = True
        n = len(self.data)
        held = k_folds(n, self.hparams["folds"], self.hparams["seed"])
        keep = [torch.cat([f for j, f in enumerate(held) if j != i]).sort().values for i in range(len(held))]
        models = train_subsets(scenario, keep, self.trained.config, cache=self.cache, workers=default_workers(),
                               progress=(lambda f, m: progress(0.95 * f, m)) if progress else None)
        probs = torch.empty(n, scenario.n_classes, dtype=torch.float64)
        for fold, m in zip(held, models, strict=True):
            probs[fold] = predict_proba(m.model, self.data.x[fold]).double()
        score, flagged = label_issue_scores(self.data.y, probs, self.hparams["rank_by"])
        info = {"flagged": int(flagged.sum()), "fold_test_acc": [m.test_accuracy for m in models]}
        return {"train/score": score.float(), "train/oof_probs": probs.float()}, {"info": info}

    def _restore(self, tensors, meta):
        self._score = tensors["train/score"]
        self.oof_probs = tensors["train/oof_probs"]

    def _scores(self, x, target):
        raise AssertionError("unreachable: cleanlab declares per_test = False")

    def _self_scores(self):
        return self._score
