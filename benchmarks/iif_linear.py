"""The Integrated Influence paper's Table 1: LDS of Integrated Influence, the influence function
and TracIn on synthetic linear regression, at three noise levels, over many trials.

``python -m benchmarks.iif_linear [--quick] [--json]``, or the report's ``iif-linear`` section.

Each trial draws the paper's data (:func:`core.regression.synthetic`: 100 training points with
10 standard-normal features, ``y = xᵀw + ε``, ``σ_n`` on training and ``σ_s`` on test targets),
scores every test point with the closed forms of :mod:`core.regression`, and computes the LDS
(:mod:`core.metrics.lds`) against least-squares fits on random half-size subsets, whose test
losses are exact. The paper states neither the number of test points nor the subset size:
100 test points and half-size subsets (TRAK's and dattri's choice) here. The paper's 5,000
subsets are kept. TracIn follows full-batch gradient descent from zero (the paper does not
say how its checkpoints were made); GradDot, its gradient dot product at the trained
parameters alone, is shown beside it. Integrated Influence is also swept over ``λ``, its one
parameter (the paper's Table 6 gives ``λ = 1``).
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import torch

from benchmarks._common import section_main
from core import regression
from core.errors import AttrexError
from core.metrics.lds import lds
from core.metrics.published import IIF_LINEAR, IIF_LINEAR_NOISE

FULL = {"trials": 100, "n_train": 100, "n_test": 100, "dim": 10, "subsets": 5000, "alpha": 0.5,
        "reg": 1.0, "tracin_lr": 0.1, "tracin_epochs": 50}
QUICK = {**FULL, "trials": 3, "subsets": 300}
REG_SWEEP = (0.5, 1.0, 2.0, 5.0)
METHODS = ("integrated-influence", "influence", "tracin", "graddot")


def _scores(name: str, data: tuple, s: dict, reg: float | None = None) -> torch.Tensor:
    if name == "integrated-influence":
        return regression.integrated_influence(*data, reg=s["reg"] if reg is None else reg)
    if name == "influence":
        return regression.influence(*data)
    if name == "tracin":
        return regression.tracin(*data, lr=s["tracin_lr"], epochs=s["tracin_epochs"])
    return regression.graddot(*data)


def trial(seed: int, noise_train: float, noise_test: float, s: dict) -> dict:
    """One trial's LDS per method, and Integrated Influence's per ``λ`` of the sweep (NaN where
    ``λ`` leaves the unlearning objective unbounded for a test point)."""
    g = torch.Generator().manual_seed(seed)
    data = regression.synthetic(s["n_train"], s["n_test"], s["dim"], noise_train, noise_test, g)
    subsets = torch.rand(s["subsets"], s["n_train"], generator=g) < s["alpha"]
    outputs = regression.subset_outputs(*data, subsets)
    out = {name: lds(_scores(name, data, s), subsets, outputs) for name in METHODS}
    sweep = {}
    for reg in REG_SWEEP:
        try:
            sweep[str(reg)] = lds(_scores("integrated-influence", data, s, reg), subsets, outputs)
        except AttrexError:
            sweep[str(reg)] = math.nan
    return {"lds": out, "sweep": sweep}


def run(cache, log, quick: bool) -> dict:
    """Every trial at each of the paper's three noise levels (``cache`` is unused: a trial takes a fraction of a second)."""
    s = QUICK if quick else FULL
    columns = []
    for noise_train, noise_test in IIF_LINEAR_NOISE:
        log(f"σn = {noise_train}, σs = {noise_test}: {s['trials']} trials")
        t0 = time.perf_counter()
        trials = [trial(seed, noise_train, noise_test, s) for seed in range(s["trials"])]
        columns.append({"noise_train": noise_train, "noise_test": noise_test, "seconds": time.perf_counter() - t0,
                        "lds": {m: [t["lds"][m] for t in trials] for m in METHODS},
                        "sweep": {r: [t["sweep"][r] for t in trials] for r in trials[0]["sweep"]}})
    return {"settings": s, "columns": columns}


def _mean(values: list[float]) -> tuple[float, float, int]:
    """Mean, its standard error, and the number of trials that had a value."""
    v = [x for x in values if not math.isnan(x)]
    return statistics.fmean(v), (statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else math.nan), len(v)


def render(data: dict) -> list[str]:
    s, cols = data["settings"], data["columns"]
    head = " | ".join(f"σn = {c['noise_train']:g}, σs = {c['noise_test']:g}: ours | paper" for c in cols)
    lines = [f"| method | {head} |", "|---|" + "---|---|" * len(cols)]
    for m in METHODS:
        cells = []
        for i, c in enumerate(cols):
            mean, se, _ = _mean(c["lds"][m])
            paper = IIF_LINEAR.get(m)
            cells.append(f"{mean:.3f} ± {se:.3f} | {format(paper[i], '.3f') if paper else '–'}")
        lines.append(f"| {m} | {' | '.join(cells)} |")
    lines += ["", "Integrated Influence over its unlearning weight λ (mean LDS; trials where λ leaves the unlearning "
              "objective unbounded for some test point are left out, and counted):", "",
              "| λ | " + " | ".join(f"σn = {c['noise_train']:g}, σs = {c['noise_test']:g}" for c in cols) + " |",
              "|---|" + "---|" * len(cols)]
    for reg in cols[0]["sweep"]:
        cells = []
        for c in cols:
            mean, _, n = _mean(c["sweep"][reg])
            cells.append(f"{mean:.3f}" + (f" ({len(c['sweep'][reg]) - n} left out)" if n < len(c["sweep"][reg]) else ""))
        lines.append(f"| {float(reg):g} | {' | '.join(cells)} |")
    wins = [sum(a > b for a, b in zip(c["lds"]["integrated-influence"], c["lds"]["influence"], strict=True))
            for c in cols]
    lines += ["", f"Integrated Influence's LDS is above the influence function's in {', '.join(map(str, wins))} of "
              f"{s['trials']} trials (one count per column).", "",
              f"Settings: {s['trials']} trials per column, each with its own data ({s['n_train']} training and "
              f"{s['n_test']} test points, {s['dim']} features); LDS over {s['subsets']:,} random subsets of "
              f"{s['alpha']:.0%} of the training points, the least-squares fit on each; ± one standard error over "
              f"the trials. Closed forms of `core.regression`: λ = {s['reg']:g} on the summed squared error; "
              f"TracIn over {s['tracin_epochs']} steps of full-batch gradient descent from zero at learning rate "
              f"{s['tracin_lr']:g}; GradDot is the gradient dot product at the trained parameters alone."]
    return lines


def main(argv: list[str] | None = None) -> int:
    return section_main(argv, __doc__, "iif-linear", "3 trials, 300 subsets (a smoke run)", run, render)


if __name__ == "__main__":
    sys.exit(main())
