"""The FLIA paper's Tables 1–3 on MNIST and CIFAR-10: ``python benchmarks/flia_tables.py [--quick] [--json]``.

Sample sizes are scaled to a 2-core machine (the paper used 100 test x 1,000 training images
per data set on two A100s): by default 40 test samples x their 5 strongest TracIn proponents
on MNIST and 20 x 5 on CIFAR-10 (plus as many random pairs for Table 1); ``--quick``: 6 x 3
and 4 x 3. The models are the scenarios' defaults (trained once, cached). The pairs, the
metrics and their conventions are in :mod:`core.features.experiments`.
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
from core.features.experiments import flia_tables, fmt  # noqa: E402
from core.models import train  # noqa: E402

PAPER = {  # CIFAR-10, ResNet-18 (the paper's Tables 1-3)
    "descent": (-0.5097, 0.0004), "ascent": (2.5005, -0.0099), "cdci": 0.6440, "ins": 0.6882, "del": 0.8807,
}
SIZES = {"mnist": (40, 5), "cifar10": (20, 5)}
QUICK = {"mnist": (6, 3), "cifar10": (4, 3)}


def render(results: list[dict]) -> str:
    lines = ["Table 1: relative IL change / true-class confidence change after 10 steps (mean; median IL change)",
             f"{'data set':<10} {'pairs':<11} {'n':>4} {'descent IL':>11} {'(median)':>9} {'conf':>8} "
             f"{'ascent IL':>10} {'(median)':>9} {'conf':>8}"]
    for r in results:
        for kind in ("proponents", "random"):
            d, a = r["table1"][f"{kind}/descent"], r["table1"][f"{kind}/ascent"]
            lines.append(f"{r['scenario']:<10} {kind:<11} {d['pairs']:>4} {fmt(d['il_change_mean'], '+.4f'):>11} "
                         f"{fmt(d['il_change_median'], '+.4f'):>9} {fmt(d['confidence_change_mean'], '+.4f'):>8} "
                         f"{fmt(a['il_change_mean'], '+.4f'):>10} {fmt(a['il_change_median'], '+.4f'):>9} "
                         f"{fmt(a['confidence_change_mean'], '+.4f'):>8}")
    lines.append(f"{'paper':<10} {'CIFAR-10 ResNet-18':<16} {PAPER['descent'][0]:+.4f} {'':>9} {PAPER['descent'][1]:+.4f} "
                 f"{PAPER['ascent'][0]:+.4f} {'':>9} {PAPER['ascent'][1]:+.4f}")
    lines += ["", "Table 2: CDCI (corr. of step index and |confidence change| after unlearning the perturbed point)",
              f"{'data set':<10} {'pairs':>5} {'ascent':>8} {'descent':>8}"]
    for r in results:
        t = r["table2"]
        lines.append(f"{r['scenario']:<10} {t['ascent']['pairs']:>5} {fmt(t['ascent']['cdci_mean']):>8} "
                     f"{fmt(t['descent']['cdci_mean']):>8}")
    lines.append(f"{'paper':<10} {'':>5} {PAPER['cdci']:>8.4f}   (CIFAR-10 ResNet-18)")
    lines += ["", "Table 3: insertion / deletion (IL normalised by its maximum, mean over 10 steps of 10%)",
              f"{'data set':<10} {'pairs':>5} {'INS':>7} {'DEL':>7} {'INS<DEL':>8} {'INS rnd':>8} {'DEL rnd':>8}"]
    for r in results:
        t = r["table3"]
        lines.append(f"{r['scenario']:<10} {t['pairs']:>5} {fmt(t['ins']):>7} {fmt(t['del']):>7} "
                     f"{fmt(t['ins_below_del_share'], '.0%'):>8} {fmt(t['ins_random']):>8} {fmt(t['del_random']):>8}")
    lines.append(f"{'paper':<10} {'':>5} {PAPER['ins']:>7.4f} {PAPER['del']:>7.4f}   (CIFAR-10 ResNet-18)")
    lines += ["", "FLIA seconds per pair (descent, 10 steps, batched): "
              + ", ".join(f"{r['scenario']} {r['flia_seconds_per_pair']:.2f}" for r in results)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(ap, "a few pairs per data set (minutes)")
    ap.add_argument("--datasets", default="mnist,cifar10", help="comma-separated (default mnist,cifar10)")
    args = ap.parse_args(argv)
    cache, log = setup(args, "flia")
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        n_test, per_test = (QUICK if args.quick else SIZES).get(name, QUICK["mnist"])
        scenario = build(name)
        log(f"{name}: default model (trained once, cached)")
        trained = train(scenario, cache=cache)
        results.append(flia_tables(scenario, trained, n_test, per_test, cache=cache, log=log))
    report = {"quick": args.quick, "threads": torch.get_num_threads(), "results": results, "paper": PAPER}
    print(json.dumps(report, indent=1) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
