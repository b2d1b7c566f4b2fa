"""Models trained on subsets of a scenario's training set: k-fold splits and random subsets.

What needs retraining on part of the data goes through :func:`train_subsets`: cleanlab's
out-of-fold probabilities (k folds), LDS's subset models (M random subsets at fraction
alpha), retraining without chosen points. Each model is an ordinary cached :func:`train`
of :meth:`Scenario.subset`, so a run that is interrupted resumes where it stopped, and a
model asked for twice is trained once. With ``workers > 1`` the missing models train in
that many processes (spawned, one torch thread each); the cache's per-key lock keeps two
processes from training the same one.

Seeds: subset ``j`` trains with the resolved config's seed plus ``SEED_STRIDE * (j + 1)``,
so subset models differ from the full model and from each other in initialisation and
order as well as in data, as datamodels and LDS assume (Ilyas et al. 2022; Park et al. 2023).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace

import torch

from core.cache import Cache
from core.data import Scenario
from core.errors import AttrexError
from core.models.custom import ModelSource
from core.models.training import Progress, TrainConfig, TrainedModel, is_cached, resolve, train

SEED_STRIDE = 1000


def random_subsets(n: int, m: int, alpha: float, seed: int = 0) -> torch.Tensor:
    """``m`` seeded random subsets of ``range(n)``, each of ``round(alpha * n)`` points, as a bool mask ``[m, n]``."""
    if not 0 < alpha < 1:
        raise AttrexError(f"alpha must lie strictly between 0 and 1; got {alpha}")
    if m < 2:
        raise AttrexError(f"need at least 2 subsets; got {m}")
    size = max(1, round(alpha * n))
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(m, n, dtype=torch.bool)
    for j in range(m):
        masks[j, torch.randperm(n, generator=g)[:size]] = True
    return masks


def k_folds(n: int, k: int, seed: int = 0) -> list[torch.Tensor]:
    """A seeded partition of ``range(n)`` into ``k`` folds of near-equal size (held-out ids of each fold)."""
    if not 2 <= k <= n:
        raise AttrexError(f"k-fold needs 2 <= k <= {n}; got {k}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [fold.sort().values for fold in perm.tensor_split(k)]


def subset_config(scenario: Scenario, config: TrainConfig | None, j: int) -> TrainConfig:
    cfg = resolve(scenario, config)
    return replace(cfg, seed=cfg.seed + SEED_STRIDE * (j + 1))


def _train_one(scenario: Scenario, keep: torch.Tensor, cfg: TrainConfig, cache_root: str) -> None:
    torch.set_num_threads(1)
    train(scenario.subset(keep), cfg, cache=Cache(cache_root))


def train_subsets(scenario: Scenario, subsets: Sequence[torch.Tensor], config: TrainConfig | None = None,
                  cache: Cache | None = None, workers: int = 1, progress: Progress | None = None) -> list[TrainedModel]:
    """One model per subset (training ids, or a bool mask ``[n_train]``), trained or loaded from the cache.

    ``workers``: processes training the missing models at once (1: in this process). Progress
    counts models done. Returns the models in the order of ``subsets``.
    """
    if isinstance(config, ModelSource):
        raise AttrexError("this needs models retrained on parts of the training set, and attrex does not know how "
                          "the loaded model was trained; it applies to models attrex trains")
    cache = cache or Cache()
    ids = [torch.as_tensor(s).nonzero().squeeze(1) if torch.as_tensor(s).dtype == torch.bool
           else torch.as_tensor(s, dtype=torch.int64) for s in subsets]
    configs = [subset_config(scenario, config, j) for j in range(len(ids))]
    missing = [j for j in range(len(ids)) if not is_cached(scenario.subset(ids[j]), configs[j], cache)]
    done = len(ids) - len(missing)

    def report(message: str) -> None:
        if progress:
            progress(done / max(len(ids), 1), message)

    report(f"{done}/{len(ids)} subset models cached")
    if workers > 1 and len(missing) > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=ctx) as pool:
            futures = [pool.submit(_train_one, scenario, ids[j], configs[j], str(cache.root)) for j in missing]
            for f in as_completed(futures):
                f.result()
                done += 1
                report(f"{done}/{len(ids)} subset models trained")
    else:
        for j in missing:
            train(scenario.subset(ids[j]), configs[j], cache=cache)
            done += 1
            report(f"{done}/{len(ids)} subset models trained")
    models = [train(scenario.subset(ids[j]), configs[j], cache=cache) for j in range(len(ids))]
    report(f"{len(ids)} subset models ready")
    return models


def default_workers() -> int:
    """Processes for subset training: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))
