"""Backdoor-trigger detection on mnist-backdoor, cifar10-backdoor and agnews-backdoor.

``python benchmarks/backdoor_detection.py [--quick] [--json]``: for triggered test samples the
model sends to the backdoor's class, the share of poisoned points among each method's top-10
proponents against their base rate, the AUC of ranking all training points by their mean
score, and FLIA on poisoned proponents (trigger-region mass ratio for images, trigger-token
rank for text), as defined in :mod:`core.features.experiments`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run from a checkout

import torch  # noqa: E402
from _common import common_args, setup  # noqa: E402  (this folder)

from core.data import build  # noqa: E402
from core.features.experiments import backdoor_detection, fmt  # noqa: E402
from core.models import train  # noqa: E402

METHODS = "tracin-rp,tracin,dualview,representer,representer-lje"
QUICK_METHODS = "tracin-rp,dualview,representer"


def render(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines += [f"{r['scenario']} ({r['arch']}, {r['n_train']} train, {r['poisoned']} poisoned = base rate "
                  f"{r['base_rate']:.1%}; attack success {fmt(r['attack_success'], '.1%')}; "
                  f"{r['triggered_test']} triggered test samples)",
                  f"  {'method':<16} {'poisoned in top-' + str(r['k']):>18} {'lift':>6} {'AUC':>6}"]
        for name, m in r["methods"].items():
            if "error" in m:
                lines.append(f"  {name:<16} {m['error'][:70]}")
            else:
                lines.append(f"  {name:<16} {m['top_k_poisoned_share']:>18.1%} {m['lift']:>6.1f} {fmt(m['auc']):>6}")
        for d in ("descent", "ascent"):
            if f"flia_trigger_mass_ratio/{d}" in r:
                f = r[f"flia_trigger_mass_ratio/{d}"]
                lines.append(f"  FLIA ({d}): trigger-region mass / region share ({f['region_share']:.1%} of the image): "
                             f"median {fmt(f['median'], '.1f')}, mean {fmt(f['mean'], '.1f')}, "
                             f">= 5 on {fmt(f['at_least_5_share'], '.0%')} of {f['pairs']} poisoned proponents")
            if f"flia_trigger_token_rank/{d}" in r:
                f = r[f"flia_trigger_token_rank/{d}"]
                lines.append(f"  FLIA ({d}): trigger token's rank among the text's tokens by |score|: median "
                             f"{fmt(f['median'], '.0f')}, mean {fmt(f['mean'], '.1f')}, first in "
                             f"{fmt(f['top1_share'], '.0%')} of {f['pairs']} poisoned proponents")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(ap, "fewer test samples and methods")
    ap.add_argument("--scenarios", default="mnist-backdoor,cifar10-backdoor,agnews-backdoor")
    ap.add_argument("--methods", default=None, help=f"comma-separated (default {METHODS}; --quick {QUICK_METHODS})")
    ap.add_argument("--n-test", type=int, default=None, help="triggered test samples (default 20; --quick 5)")
    args = ap.parse_args(argv)
    cache, log = setup(args, "backdoor")
    methods = (args.methods or (QUICK_METHODS if args.quick else METHODS)).split(",")
    n_test = args.n_test or (5 if args.quick else 20)
    results = []
    for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        scenario = build(name)
        log(f"{name}: default model (trained once, cached)")
        trained = train(scenario, cache=cache)
        results.append(backdoor_detection(scenario, trained, methods, n_test=n_test, cache=cache, log=log))
    report = {"quick": args.quick, "threads": torch.get_num_threads(), "results": results}
    print(json.dumps(report, indent=1) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
