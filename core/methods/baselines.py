"""Baselines, registered like methods so that every metric and page can set them beside the others.

- **random**: Gaussian scores ``N(0, 1)``, seeded by the ``seed`` parameter and by the test
  input and explained class (the same query always gets the same row, whatever else is in
  its batch); self-scores are one more seeded draw, not the diagonal of ``scores``. What any
  method must beat: expected AUROC 0.5, top-k share = the base rate.
- **loss**: the final model's cross-entropy on each training point's own label, the oldest
  mislabel score (a flipped label is one the model disagrees with; Koh & Liang 2017 §5.4
  set influence beside it and beside random checking). It scores training points only: ``self_scores()`` is the loss, ``scores()`` refuses
  (``per_test = False``).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from core.methods.base import Attributor, Param, register
from core.models.training import predict


@register
class RandomScores(Attributor):
    name = "random"
    title = "Random"
    description = ("Seeded Gaussian scores: the same query gets the same row. The floor every method must beat "
                   "(AUROC 0.5, top-k share = the base rate).")
    reference = "baseline"
    baseline = True
    params = (Param("seed", "int", 0, "seed of the random scores", low=0, high=2**31 - 1),)
    self_is_diagonal = False  # the self-scores are their own draw
    estimates_removal = False  # random signs predict nothing

    def _compute(self, progress):
        g = torch.Generator().manual_seed(self.hparams["seed"])
        return {"train/self": torch.randn(len(self.data), generator=g)}, {}

    def _restore(self, tensors, meta):
        self._self = tensors["train/self"]

    def _row_seed(self, x: torch.Tensor, target: int) -> int:
        h = hashlib.sha256(f"{self.hparams['seed']}/{target}/{x.dtype}/{list(x.shape)}".encode())
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
        return int.from_bytes(h.digest()[:8], "little") >> 1

    def _scores(self, x, target):
        n = len(self.data)
        return torch.stack([torch.randn(n, generator=torch.Generator().manual_seed(self._row_seed(xi, int(t))))
                            for xi, t in zip(x, target, strict=True)])

    def _self_scores(self):
        return self._self


@register
class TrainingLoss(Attributor):
    name = "loss"
    title = "Training loss"
    description = ("The final model's cross-entropy on each training point's own label: a mislabel score for "
                   "training points only, no per-test-point scores.")
    reference = "baseline (Koh & Liang 2017, §5.4)"
    baseline = True
    per_test = False
    estimates_removal = False

    def _compute(self, progress):
        with torch.no_grad():
            loss = F.cross_entropy(predict(self.model, self.data.x), self.data.y, reduction="none")
        return {"train/loss": loss.float()}, {}

    def _restore(self, tensors, meta):
        self._loss = tensors["train/loss"]

    def _scores(self, x, target):
        raise AssertionError("unreachable: the training loss declares per_test = False")

    def _self_scores(self):
        return self._loss
