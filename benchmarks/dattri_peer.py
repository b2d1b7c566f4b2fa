"""dattri's IF, TracIn and TRAK on attrex's own models and splits, beside attrex's methods.

``python -m benchmarks.dattri_peer [--quick] [--json]``, or the report's ``dattri`` section.

Both libraries are given the same trained model, the same checkpoints with their learning
rates, the same training set and the same test points, and both are scored by the same
functions of :mod:`core.metrics`:

- **LDS** (the Integrated Influence paper's Table 2 setting, as the report's ``lds-mlp``
  section: the MNIST MLP on 5,000 training points, the same seeded test points and the same
  cached subset models): each library's LDS, and per test point the Spearman correlation
  and the top-10 overlap between the two libraries' scores.
- **Mislabel detection** (the Table 3 setting, as ``iif-mislabel``: 1,000 training points,
  10% flipped): each library's self-influence AUROC, and the Spearman correlation of the
  two self-influence rankings.

The pairs, each set up so that the two compute the same quantity where they can:

- ``influence`` (exact inverse of the damped Hessian over the head) and dattri's
  ``IFAttributorExplicit`` over the head's two parameters with ``regularization`` equal to
  attrex's damping: the same definition, so the scores should agree to rounding.
- ``tracin`` (exact gradients over every parameter, summed over the checkpoints with their
  learning rates) and dattri's ``TracInAttributor`` with the same learning rates: dattri
  always projects the gradients (here to ``TRACIN_DIM`` dimensions), so the two differ by
  the projection's error.
- ``trak`` and dattri's ``TRAKAttributor`` over the same checkpoints, both projecting to
  attrex's ``dim`` (2,048 by default; dattri's default is 512): attrex with a count sketch, dattri with a Gaussian, so they differ by
  the two projections' errors.

dattri is in the test extra (``make setup-test``); without it this says so and exits.
"""

from __future__ import annotations

import sys
import time

import torch

from benchmarks._common import section_main
from core.cache import Cache
from core.data import build, get_spec
from core.errors import AttrexError
from core.evaluation import Context, Settings
from core.methods import TrainingData, create
from core.metrics import agreement, lds, mislabel
from core.models import default_config, train

LDS_SETTINGS = Settings(lds_test=50, lds_subsets=20, lds_alpha=0.5)  # the report's lds-mlp section
TRACIN_DIM = 512  # dattri's TracIn always projects (its default dimension); it has no exact mode
QUICK_TRAK = {"dim": 512}  # the smoke run's 1,000 points: a projection narrower than the training set
PAIRS = (("influence", "IFAttributorExplicit"), ("tracin", "TracInAttributor"), ("trak", "TRAKAttributor"))


def _dattri():
    try:
        import dattri  # noqa: F401
    except ImportError:
        raise AttrexError("dattri is not installed: it comes with the test extra (make setup-test, or "
                          "pip install dattri)") from None
    from dattri.algorithm.influence_function import IFAttributorExplicit
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask
    return AttributionTask, IFAttributorExplicit, TracInAttributor, TRAKAttributor


class Peer:
    """dattri's three attributors on one attrex model: ``scores(x, target)`` ``[n_test, n_train]``, ``self_scores()``."""

    def __init__(self, trained, data: TrainingData, damping: float, trak_dim: int):
        self.trained, self.data, self.damping, self.trak_dim = trained, data, damping, trak_dim
        self.model = trained.model.eval()
        self.sample_dims = data.x.dim() - 1
        self.head = [n for n, _ in self.model.named_parameters() if n.startswith("head.")]
        self.ckpts = [trained.model_at(c.index).state_dict() for c in trained.checkpoints]
        self.lrs = torch.tensor([c.lr for c in trained.checkpoints])

    # dattri's loss and target functions take (params, data); vmapped ones see one sample without a batch axis
    def _logits(self, params, x):
        return torch.func.functional_call(self.model, params, x if x.dim() > self.sample_dims else x[None])

    def _ce(self, params, data):
        x, y = data
        return torch.nn.functional.cross_entropy(self._logits(params, x), y.reshape(-1).long())

    def _margin(self, params, data):  # TRAK's output: log p / (1 - p) of the given class
        logp = -self._ce(params, data)
        return logp - torch.log1p(-torch.exp(logp).clamp(max=1 - 1e-7))

    def _probability(self, params, data):
        return torch.exp(-self._ce(params, data))

    @staticmethod
    def _loader(x, y, batch):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=False)

    def _attributor(self, which: str, cache_train: bool = True):
        AttributionTask, IFExplicit, TracIn, TRAK = _dattri()
        if which == "IFAttributorExplicit":
            task = AttributionTask(self._ce, self.model, self.model.state_dict())
            a = IFExplicit(task, layer_name=self.head, regularization=self.damping)
            a.cache(self._loader(self.data.x, self.data.y, len(self.data)))  # one batch: H is the mean over all
            return a
        if which == "TracInAttributor":
            task = AttributionTask(self._ce, self.model, self.ckpts)
            return TracIn(task, weight_list=self.lrs, normalized_grad=False,
                          projector_kwargs={"proj_dim": TRACIN_DIM, "proj_max_batch_size": 32, "proj_seed": 0})
        task = AttributionTask(self._margin, self.model, self.ckpts)
        a = TRAK(task, correct_probability_func=self._probability,
                 projector_kwargs={"proj_dim": self.trak_dim, "proj_max_batch_size": 32, "proj_seed": 0})
        if cache_train:  # dattri 0.3.0's TRAK self_attribute works only on an attributor that has not cached
            a.cache(self._loader(self.data.x, self.data.y, 256))
        return a

    def scores(self, which: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a = self._attributor(which)
        test = self._loader(x, target, 64)
        if which == "TRAKAttributor":
            out = a.attribute(test)
        else:  # dattri's explicit IF recomputes its Hessian for every training batch: give it one batch
            batch = len(self.data) if which == "IFAttributorExplicit" else 256
            out = a.attribute(self._loader(self.data.x, self.data.y, batch), test)
        return out.T.float()  # dattri: [n_train, n_test]

    def self_scores(self, which: str) -> torch.Tensor:
        a = self._attributor(which, cache_train=False)
        # dattri 0.3.0's inner-product attributors (IF) add each batch's self-influence to a vector of the
        # whole set's length, which only works with the whole set as one batch
        batch = len(self.data) if which == "IFAttributorExplicit" else 256
        return a.self_attribute(self._loader(self.data.x, self.data.y, batch)).float().reshape(-1)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _model(preset: str, n_train: int, cache: Cache, log):
    scenario = build(get_spec(preset, n_train=n_train))
    log(f"{preset}: the MLP on {n_train} training points (cached after the first run)")
    return scenario, train(scenario, default_config(scenario.spec.dataset, "mlp"), cache=cache)


def _summary(scenario, trained) -> dict:
    return {"scenario": scenario.spec.name, "seed": scenario.spec.seed, "n_train": len(scenario.y_train),
            "arch": "mlp", "test_acc": trained.test_accuracy, "checkpoints": len(trained.checkpoints)}


def _both(trained, data: TrainingData, cache: Cache, quick: bool) -> tuple[dict, Peer]:
    """attrex's methods of :data:`PAIRS`, and dattri's set up to match them (damping, projected dimension)."""
    ours = {name: create(name, trained, data, cache=cache, **(QUICK_TRAK if quick and name == "trak" else {}))
            for name, _ in PAIRS}
    return ours, Peer(trained, data, ours["influence"].hparams["damping"], ours["trak"].hparams["dim"])


def lds_part(cache: Cache, log, quick: bool) -> dict:
    settings = Settings(lds_test=10, lds_subsets=5, lds_alpha=0.5) if quick else LDS_SETTINGS
    scenario, trained = _model("mnist", 1000 if quick else 5000, cache, log)
    data = TrainingData.of(scenario)
    ctx = Context(scenario, trained, settings, cache, workers=1, progress=None)
    log("LDS: the subset models (cached)")
    x, y, masks, outputs = ctx.lds_points
    ours_methods, peer = _both(trained, data, cache, quick)
    rows = []
    for ours, theirs in PAIRS:
        log(f"LDS: attrex {ours}")
        method = ours_methods[ours]
        method.fit()
        s_ours, q_ours = _timed(lambda m=method: m.scores(x, y))
        log(f"LDS: dattri {theirs}")
        s_peer, t_peer = _timed(lambda w=theirs: peer.scores(w, x, y))
        row = {}
        if method.hparams.get("projection", "none") != "none":  # the spread of the random projection alone
            log(f"LDS: attrex {ours} with another projection seed")
            other = create(ours, trained, data, cache=cache, **{**method.hparams, "seed": method.hparams["seed"] + 1})
            other.fit()
            row["spearman_other_seed"] = agreement.spearman(s_ours, other.scores(x, y))
        rows.append({"attrex": ours, "dattri": theirs, **row,
                     "lds_attrex": lds.lds(s_ours, masks, outputs), "lds_dattri": lds.lds(s_peer, masks, outputs),
                     "spearman": agreement.spearman(s_ours, s_peer), "top10_overlap": agreement.top_k_overlap(
                         s_ours, s_peer, 10) / 10,
                     "seconds_attrex": method.fit_seconds + q_ours, "seconds_dattri": t_peer,
                     "max_rel_diff": float((s_ours - s_peer).abs().max() / s_ours.abs().max())})
    return {"model": _summary(scenario, trained), "settings": {"lds_test": settings.lds_test,
            "lds_subsets": settings.lds_subsets, "lds_alpha": settings.lds_alpha, "trak_dim": peer.trak_dim}, "pairs": rows}


def mislabel_part(cache: Cache, log, quick: bool) -> dict:
    scenario, trained = _model("mnist-noisy", 300 if quick else 1000, cache, log)
    data = TrainingData.of(scenario)
    flipped = scenario.truth.flipped_ids
    methods, peer = _both(trained, data, cache, quick)
    rows = []
    for ours, theirs in PAIRS:
        method = methods[ours]
        log(f"mislabel: attrex {ours}")
        method.fit()
        s_ours, t_ours = _timed(method.self_scores)
        log(f"mislabel: dattri {theirs}")
        s_peer, t_peer = _timed(lambda w=theirs: peer.self_scores(w))
        rows.append({"attrex": ours, "dattri": theirs, "auroc_attrex": mislabel.auroc(s_ours, flipped),
                     "auroc_dattri": mislabel.auroc(s_peer, flipped),
                     "spearman": agreement.spearman(s_ours[None], s_peer[None]),
                     "seconds_attrex": method.fit_seconds + t_ours, "seconds_dattri": t_peer})
    return {"model": _summary(scenario, trained), "flipped": len(flipped), "pairs": rows}


def run(cache: Cache, log, quick: bool) -> dict:
    from importlib.metadata import version

    _dattri()
    return {"dattri": version("dattri"),
            "lds": lds_part(cache, log, quick), "mislabel": mislabel_part(cache, log, quick)}


def render(data: dict) -> list[str]:
    lds_run, mis = data["lds"], data["mislabel"]
    m, s = lds_run["model"], lds_run["settings"]
    v = data["dattri"]
    lines = [f"| attrex | dattri {v} | LDS attrex | LDS dattri | Spearman | top-10 overlap | largest difference | "
             "Spearman, attrex with another projection seed | attrex s | dattri s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in lds_run["pairs"]:
        lines.append(f"| {r['attrex']} | {r['dattri']} | {r['lds_attrex']:.3f} | {r['lds_dattri']:.3f} | "
                     f"{r['spearman']:.3f} | {r['top10_overlap']:.0%} | {r['max_rel_diff']:.1e} | "
                     f"{format(r['spearman_other_seed'], '.3f') if 'spearman_other_seed' in r else '–'} | "
                     f"{r['seconds_attrex']:.2f} | {r['seconds_dattri']:.1f} |")
    lines += ["", f"Settings: `{m['scenario']}` seed {m['seed']}, MLP on {m['n_train']:,} training points, "
              f"test accuracy {m['test_acc']:.1%}, {m['checkpoints']} checkpoints; the {s['lds_test']} test points "
              f"and {s['lds_subsets']} subset models ({s['lds_alpha']:.0%}) of the LDS section, explained for their "
              "true class. Spearman and top-10 overlap: between the two libraries' scores, per test point, averaged. "
              "Largest difference: the largest |attrex − dattri| over the largest |attrex| score. Seconds: "
              "precompute and query, one after the other in the same process (attrex caches its precompute; the "
              "figure is the time it took to compute). "
              f"dattri's TracIn projects to {TRACIN_DIM} dimensions (it has no exact mode), attrex's `tracin` is "
              f"exact; TRAK: both project to {s['trak_dim']} dimensions, attrex by a count sketch, dattri by a Gaussian.", "",
              f"| attrex | dattri {v} | self-influence AUROC attrex | AUROC dattri | Spearman | attrex s | dattri s |",
              "|---|---|---|---|---|---|---|"]
    for r in mis["pairs"]:
        lines.append(f"| {r['attrex']} | {r['dattri']} | {r['auroc_attrex']:.3f} | {r['auroc_dattri']:.3f} | "
                     f"{r['spearman']:.3f} | {r['seconds_attrex']:.2f} | {r['seconds_dattri']:.1f} |")
    mm = mis["model"]
    lines += ["", f"Settings: `{mm['scenario']}` seed {mm['seed']}, MLP on {mm['n_train']:,} training points with "
              f"{mis['flipped']} flipped labels, test accuracy {mm['test_acc']:.1%}; training points ranked by "
              "self-influence."]
    return lines


def main(argv: list[str] | None = None) -> int:
    return section_main(argv, __doc__, "dattri", "small sizes (a smoke run)", run, render)


if __name__ == "__main__":
    sys.exit(main())
