"""Command line: ``attrex scenarios | prepare``.

Every command takes ``--json`` and then prints exactly one JSON document on stdout;
progress bars and messages go to stderr. Bad input exits with status 2 and a message
naming what is wrong and what is accepted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from core.cache import Cache
from core.data import PRESETS, build, get_spec
from core.data.sources import download
from core.errors import AttrexError
from core.models import ARCHITECTURES, default_config, train


def _scenario_record(name: str) -> dict:
    spec = PRESETS[name]
    c = spec.corruption
    return {
        "name": name,
        "dataset": spec.dataset,
        "description": spec.description,
        "corruption": c.params() if c else None,
        "default_arch": default_config(spec.dataset).arch,
    }


def cmd_scenarios(args: argparse.Namespace) -> int:
    records = []
    for name in PRESETS:
        rec = _scenario_record(name)
        if args.json or args.truth:
            rec["ground_truth"] = build(name).truth.summary()
        records.append(rec)
    if args.json:
        print(json.dumps({"scenarios": records}, indent=1))
        return 0
    width = max(len(r["name"]) for r in records)
    for r in records:
        print(f"{r['name']:<{width}}  {r['description']}")
        if "ground_truth" in r and r["ground_truth"]:
            print(f"{'':<{width}}  ground truth: {json.dumps(r['ground_truth'])}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.download:
        if not args.data_dir:
            raise AttrexError("--download needs --data-dir: the folder to download into")
        download(get_spec(args.scenario).dataset, args.data_dir)
    spec = get_spec(args.scenario, seed=args.seed, data_dir=args.data_dir, n_train=args.n_train, n_test=args.n_test)
    t0 = time.perf_counter()
    scenario = build(spec)
    config = default_config(spec.dataset, args.arch, epochs=args.epochs, seed=args.seed)
    bar = tqdm(total=100, desc=f"train {spec.name} ({config.arch})", unit="%", file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}", disable=args.quiet)

    def progress(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction, 1)
        bar.set_postfix_str(message, refresh=True)

    trained = train(scenario, config, progress=progress, cache=Cache(args.cache_dir) if args.cache_dir else None)
    bar.close()  # a cache entry found unusable was already reported on stderr by core.cache's logger
    result = {
        "scenario": spec.name,
        "dataset": spec.dataset,
        "data_source": scenario.source,
        "n_train": len(scenario.y_train),
        "n_test": len(scenario.y_test),
        "ground_truth": scenario.truth.summary(),
        "model": trained.summary(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    m = trained.summary()
    print(f"scenario      {spec.name}: {spec.description}")
    print(f"data          {scenario.source}: {result['n_train']} train / {result['n_test']} test")
    if result["ground_truth"]:
        print(f"ground truth  {json.dumps(result['ground_truth'])}")
    lrs = ", ".join(f"{c['lr']:.3g}" for c in m["checkpoints"])
    print(f"model         {m['arch']}, {m['epochs']} epochs, {len(m['checkpoints'])} checkpoints (lr {lrs})")
    print(f"test accuracy {m['test_accuracy']:.4f}")
    if m["attack_success"] is not None:
        print(f"attack success {m['attack_success']:.4f} (triggered test inputs classified as the target)")
    origin = "from cache" if m["cache"] == "hit" else f"trained in {m['train_seconds']} s"
    print(f"{origin}; done in {result['seconds']} s")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attrex", description="attrex, the attribution explorer")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scenarios", help="list the scenario presets and what they plant")
    p.add_argument("--truth", action="store_true", help="also build each scenario and summarise its ground truth")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout (includes the ground truth)")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("prepare", help="build a scenario and train its model (cached: a second call returns at once)")
    p.add_argument("--scenario", required=True, help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--arch", choices=list(ARCHITECTURES), help="architecture (default: the data set's)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the data set's)")
    p.add_argument("--seed", type=int, help="seed of the scenario and the training (default 0)")
    p.add_argument("--data-dir", help="folder with the full data set (default: the embedded subset)")
    p.add_argument("--download", action="store_true", help="first fetch the data set into --data-dir (needs internet)")
    p.add_argument("--n-train", type=int, help="class-balanced subset of the training split")
    p.add_argument("--n-test", type=int, help="class-balanced subset of the test split")
    p.add_argument("--cache-dir", help="cache folder (default: $ATTREX_CACHE or ~/.cache/attrex)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="attrex: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except AttrexError as exc:
        print(f"attrex: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
