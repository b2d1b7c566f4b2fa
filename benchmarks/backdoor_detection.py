"""Backdoor-trigger detection by every registered method on mnist-backdoor, cifar10-backdoor and agnews-backdoor.

``python -m benchmarks.backdoor_detection [--quick] [--json] [--methods ...] [--seed S]``:
the evaluation suite's ``backdoor`` task (:mod:`core.evaluation`) for every method that has
per-test-point scores: for triggered test samples the model sends to the backdoor's class,
the share of poisoned points among each method's top-10 proponents against their base rate,
and the AUROC of ranking the training points by their mean score, over all points and within
the target class. Then FLIA on the poisoned proponents of the best method by top-10 share
(trigger-region mass ratio for images, trigger-token rank for text;
:func:`core.features.experiments.flia_on_poisoned`). Results are cached like ``attrex evaluate``'s.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks._common import common_args, setup
from core.cache import Cache
from core.data import build, get_spec
from core.evaluation import Context, EvaluationResult, Settings, evaluate
from core.features.experiments import flia_on_poisoned, fmt
from core.methods import create, offered
from core.methods.defaults import default_methods
from core.models import train

QUICK_METHODS = ",".join(default_methods("backdoor-quick"))


def all_methods() -> str:
    return ",".join(offered(per_test=True))


def render(results: list[EvaluationResult]) -> str:
    lines = []
    for res in results:
        m0, r = res.model, res.extra
        lines += [f"{res.scenario} seed {res.seed} ({m0.arch}; clean accuracy {fmt(m0.test_acc, '.1%')}, attack "
                  f"success {fmt(m0.attack_success, '.1%')}; base rate {fmt(r['base_rate'], '.1%')}; "
                  f"{r['triggered_test']} triggered test samples)",
                  f"  {'method':<22} {'top-10 share':>12} {'lift':>6} {'AUROC':>6} {'AUROC in class':>15} {'fit s':>7}"]
        for name, row in res.results.items():
            b = row["backdoor"]
            if not b.ok:
                lines.append(f"  {name:<22} {b.status}: {b.reason[:70]}")
                continue
            v = b.values
            fit = res.methods[name].fit_seconds
            lines.append(f"  {name:<22} {v['top_k_share']:>12.1%} {v['lift']:>6.1f} {v['auroc']:>6.3f} "
                         f"{v['auroc_in_class']:>15.3f} {fmt(fit, '7.1f')}")
        for d in ("descent", "ascent"):
            if f"flia_trigger_mass_ratio/{d}" in r:
                f = r[f"flia_trigger_mass_ratio/{d}"]
                lines.append(f"  FLIA ({d}, on {r['flia_method']}'s poisoned proponents): trigger-region mass / region "
                             f"share ({f['region_share']:.1%} of the image): median {fmt(f['median'], '.1f')}, mean "
                             f"{fmt(f['mean'], '.1f')}, >= 5 on {fmt(f['at_least_5_share'], '.0%')} of {f['pairs']}")
            if f"flia_trigger_token_rank/{d}" in r:
                f = r[f"flia_trigger_token_rank/{d}"]
                lines.append(f"  FLIA ({d}, on {r['flia_method']}'s poisoned proponents): trigger token's rank among the "
                             f"text's tokens: median {fmt(f['median'], '.0f')}, first in {fmt(f['top1_share'], '.0%')} "
                             f"of {f['pairs']}")
        lines.append("")
    return "\n".join(lines)


def run_scenario(name: str, seed: int, methods: list[str], n_test: int, flia_pairs: int, cache,
                 log) -> EvaluationResult:
    """The backdoor task on one scenario; its ``extra`` holds the base rate, the samples and FLIA's figures."""
    cache = cache or Cache()
    scenario = build(get_spec(name, seed=seed))
    log(f"{name} seed {seed}: default model (trained once, cached)")
    trained = train(scenario, cache=cache)
    settings = Settings(n_triggered=n_test)
    r = evaluate(scenario, trained, methods, ["backdoor"], settings, cache=cache,
                 progress=lambda f, m: log(f"{name}: {m}"))
    first = next((b.values for b in r.ok("backdoor").values()), None)
    r.extra.update(base_rate=first["base_rate"] if first else None, triggered_test=first["triggered_test"] if first else 0)
    best = r.best("backdoor", ("top_k_share", "auroc_in_class"))
    if best and flia_pairs:
        ctx = Context(scenario, trained, settings, cache, 1)
        x, target = ctx.triggered
        scores = create(best, trained, ctx.data, cache=cache).scores(x, target)
        log(f"{name}: FLIA on {best}'s poisoned proponents")
        r.extra.update(flia_on_poisoned(scenario, trained, x, target, scores, flia_pairs), flia_method=best)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(ap, f"fewer test samples and methods ({QUICK_METHODS})")
    ap.add_argument("--scenarios", default="mnist-backdoor,cifar10-backdoor,agnews-backdoor")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method with per-test-point scores)")
    ap.add_argument("--seed", type=int, default=0, help="scenario and training seed (default 0)")
    ap.add_argument("--n-test", type=int, default=None, help="triggered test samples (default 20; --quick 5)")
    ap.add_argument("--flia-pairs", type=int, default=2, help="poisoned proponents per sample for FLIA (0: none)")
    args = ap.parse_args(argv)
    cache, log = setup(args, "backdoor")
    methods = (args.methods or (QUICK_METHODS if args.quick else all_methods())).split(",")
    n_test = args.n_test or (5 if args.quick else 20)
    results = [run_scenario(name, args.seed, methods, n_test, args.flia_pairs, cache, log)
               for name in (s.strip() for s in args.scenarios.split(",")) if name]
    report = {"quick": args.quick, "threads": torch.get_num_threads(), "results": [r.to_json() for r in results]}
    print(json.dumps(report, indent=1) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
