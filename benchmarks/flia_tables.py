"""The FLIA paper's Tables 1–3 on MNIST and CIFAR-10: ``python -m benchmarks.flia_tables [--quick] [--json]``.

Sample sizes are scaled to a 2-core machine (the paper paired 10 test with 100 training
images per class, 10,000 same-class pairs, on two A100s): by default 40 test samples x 5
training points of each kind (their strongest TracIn proponents, random points of their
class, random points of any class) on MNIST and 20 x 5 on CIFAR-10; ``--quick``: 6 x 3 and
4 x 3; ``--pairs 10x3`` sets it. The models are the scenarios' defaults (trained once,
cached), or ``--arch``'s. The pairs, the metrics and their conventions are in
:mod:`core.features.experiments`.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks._common import common_args, setup
from core.data import build
from core.features.experiments import PAIR_KINDS, flia_tables, fmt
from core.models import default_config, train

PAPER = {  # CIFAR-10, ResNet-18, same-class pairs (the paper's Tables 1-3)
    "descent": (-0.5097, 0.0004), "ascent": (2.5005, -0.0099), "cdci": 0.6440, "ins": 0.6882, "del": 0.8807,
}
SIZES = {"mnist": (40, 5), "cifar10": (20, 5)}
QUICK = {"mnist": (6, 3), "cifar10": (4, 3)}


def _label(r: dict) -> str:
    return f"{r['scenario']} {r['arch']}"


def render(results: list[dict]) -> str:
    w = max([len(_label(r)) for r in results] + [24])

    def row(label: str, kind: str, n) -> str:  # the columns every table starts with
        return f"{label:<{w}} {kind:<11} {n:>4}"

    paper = row("paper CIFAR-10 ResNet-18", "same-class", "")
    lines = ["Table 1: relative IL change / true-class confidence change after 10 steps (mean; median IL change)",
             f"{row('model', 'pairs', 'n')} {'descent IL':>11} {'(median)':>9} {'conf':>8} "
             f"{'ascent IL':>10} {'(median)':>9} {'conf':>8}"]
    for r in results:
        for kind in r["kinds"]:
            d, a = r["table1"][f"{kind}/descent"], r["table1"][f"{kind}/ascent"]
            lines.append(f"{row(_label(r), kind, d['pairs'])} {fmt(d['il_change_mean'], '+.4f'):>11} "
                         f"{fmt(d['il_change_median'], '+.4f'):>9} {fmt(d['confidence_change_mean'], '+.4f'):>8} "
                         f"{fmt(a['il_change_mean'], '+.4f'):>10} {fmt(a['il_change_median'], '+.4f'):>9} "
                         f"{fmt(a['confidence_change_mean'], '+.4f'):>8}")
    lines.append(f"{paper} {PAPER['descent'][0]:>+11.4f} {'':>9} "
                 f"{PAPER['descent'][1]:>+8.4f} {PAPER['ascent'][0]:>+10.4f} {'':>9} {PAPER['ascent'][1]:>+8.4f}")
    lines += ["", "Table 2: CDCI (corr. of step index and |confidence change| after unlearning the perturbed point)",
              f"{row('model', 'pairs', 'n')} {'ascent':>8} {'descent':>8}"]
    for r in results:
        for kind in r["table2"]:
            t = r["table2"][kind]
            lines.append(f"{row(_label(r), kind, t['ascent']['pairs'])} {fmt(t['ascent']['cdci_mean']):>8} "
                         f"{fmt(t['descent']['cdci_mean']):>8}")
    lines.append(f"{paper} {PAPER['cdci']:>8.4f}")
    lines += ["", "Table 3: insertion / deletion (IL normalised by its maximum, mean over 10 steps of 10%)",
              f"{row('model', 'pairs', 'n')} {'INS':>7} {'DEL':>7} {'INS<DEL':>8} {'INS rnd':>8} {'DEL rnd':>8}"]
    for r in results:
        for kind in r["table3"]:
            t = r["table3"][kind]
            lines.append(f"{row(_label(r), kind, t['pairs'])} {fmt(t['ins']):>7} {fmt(t['del']):>7} "
                         f"{fmt(t['ins_below_del_share'], '.0%'):>8} {fmt(t['ins_random']):>8} {fmt(t['del_random']):>8}")
    lines.append(f"{paper} {PAPER['ins']:>7.4f} {PAPER['del']:>7.4f}")
    lines += ["", "Models (accuracy on the embedded test split) and FLIA seconds per pair (descent, 10 steps, batched): "
              + ", ".join(f"{_label(r)} {r['test_accuracy']:.1%} {r['flia_seconds_per_pair']:.2f} s"
                          for r in results)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(ap, "a few pairs per data set (minutes)")
    ap.add_argument("--datasets", default="mnist,cifar10", help="comma-separated (default mnist,cifar10)")
    ap.add_argument("--arch", default=None, help="architecture instead of each data set's default (e.g. resnet18, "
                                                 "the paper's; trained once and cached, slow on a CPU)")
    ap.add_argument("--pairs", default=None, metavar="TESTxK",
                    help="test samples x training points per kind, e.g. 10x3 (default: see the module docstring)")
    ap.add_argument("--kinds", default=",".join(PAIR_KINDS),
                    help=f"pair kinds, comma-separated (default {','.join(PAIR_KINDS)}); leaving out proponents "
                         "spares the TracIn precompute, which takes long on a large model")
    args = ap.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or any(k not in PAIR_KINDS for k in kinds):
        ap.error(f"--kinds {args.kinds!r}: choose from {', '.join(PAIR_KINDS)}")
    cache, log = setup(args, "flia")
    sizes = None
    if args.pairs:
        try:
            sizes = tuple(int(v) for v in args.pairs.lower().split("x"))
            assert len(sizes) == 2 and min(sizes) >= 1
        except (ValueError, AssertionError):
            ap.error(f"--pairs {args.pairs!r}: expected two positive integers like 10x3")
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        n_test, per_test = sizes or (QUICK if args.quick else SIZES).get(name, QUICK["mnist"])
        scenario = build(name)
        config = default_config(scenario.spec.dataset, args.arch)
        log(f"{name}: {config.arch} model (trained once, cached)")
        trained = train(scenario, config, cache=cache)
        results.append(flia_tables(scenario, trained, n_test, per_test, cache=cache, log=log, kinds=kinds))
    report = {"quick": args.quick, "threads": torch.get_num_threads(), "results": results, "paper": PAPER}
    print(json.dumps(report, indent=1) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
