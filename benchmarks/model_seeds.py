"""The default models over seeds: test accuracy, attack success and clean gap of each preset on seeds 0-4.

``python -m benchmarks.model_seeds [PRESET ...] [--seeds 0,1,2,3,4] [--json]``: for each preset and
seed ``s``, builds ``get_spec(preset, seed=s)`` and trains ``default_config(dataset, seed=s)``
(one seed fixes the data and the training, as in the app and ``attrex prepare --seed``),
in a temporary cache unless ``--cache-dir`` names one. Reports the clean test accuracy, the
attack success (backdoor presets), the clean gap (the clean preset's accuracy on the same
seed minus this one's, in points; the clean preset is trained too where it is not listed),
the training seconds and the load average, then min / mean / max per preset, and checks
the targets: ``mnist`` >= 97%, ``cifar10`` >= 50%, ``agnews`` >= 80%; backdoors: attack
success >= 90% and a clean gap of at most 2 points.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, fields

import torch

from core.cache import Cache
from core.data import build, get_spec
from core.models import TrainConfig, default_config, train

DEFAULT_PRESETS = ["mnist", "mnist-backdoor", "mnist-blend", "mnist-noisy", "agnews", "agnews-backdoor",
                   "cifar10", "cifar10-backdoor"]
CLEAN = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar10", "agnews": "agnews"}  # data set -> clean preset
TARGET_ACC = {"mnist": 0.97, "cifar10": 0.50, "agnews": 0.80}  # clean presets' accuracy targets
TARGET_ATTACK, MAX_GAP = 0.90, 2.0
BACKDOORS = ("badnets", "blended", "trigger-token")


def parse_overrides(pairs: list[str]) -> dict:
    """``--set name=value`` pairs as TrainConfig overrides, each value converted to the field's type."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types:
            raise SystemExit(f"--set: unknown TrainConfig field {name!r}; fields: {', '.join(types)}")
        kind = str(types[name])
        out[name] = int(value) if kind.startswith("int") else float(value) if kind.startswith("float") else value
    return out


def run_one(preset: str, seed: int, cache: Cache, overrides: dict, log) -> dict:
    spec = get_spec(preset, seed=seed)
    scenario = build(spec)
    config = default_config(spec.dataset, seed=seed, **overrides)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    trained = train(scenario, config, cache=cache)
    wall = time.perf_counter() - t0
    row = {
        "preset": preset, "seed": seed, "dataset": spec.dataset,
        "backdoor": bool(spec.corruption and spec.corruption.kind in BACKDOORS),
        "test_acc": trained.test_accuracy, "attack_success": trained.attack_success,
        "train_seconds": trained.train_seconds, "wall_seconds": wall, "cache": trained.cache_status,
        "load_start": load, "load_end": os.getloadavg()[0], "config": asdict(trained.config),
    }
    log(f"{preset} seed {seed}: acc {row['test_acc']:.2%}"
        + (f", attack {row['attack_success']:.1%}" if row["attack_success"] is not None else "")
        + f", {row['train_seconds']:.0f} s ({trained.cache_status}; load {load:.1f} -> {row['load_end']:.1f})")
    return row


def summarise(rows: list[dict]) -> dict:
    out = {}
    for preset in dict.fromkeys(r["preset"] for r in rows):
        rs = [r for r in rows if r["preset"] == preset]
        s = {}
        for what in ("test_acc", "attack_success", "clean_gap", "train_seconds"):
            vals = [r[what] for r in rs if r.get(what) is not None]
            if vals:
                s[what] = {"min": min(vals), "mean": statistics.fmean(vals), "max": max(vals)}
        checks = []
        if preset in TARGET_ACC:
            checks.append(("accuracy", s["test_acc"]["min"] >= TARGET_ACC[preset]))
        if rs[0]["backdoor"]:
            checks.append(("attack", s.get("attack_success", {}).get("min", 0) >= TARGET_ATTACK))
            if "clean_gap" in s:
                checks.append(("gap", s["clean_gap"]["max"] <= MAX_GAP))
        s["targets"] = {name: ok for name, ok in checks}
        out[preset] = s
    return out


def render(rows: list[dict], summary: dict) -> str:
    def pct(v, fmt=".1%"):
        return "—" if v is None else format(v, fmt)

    def gap(v):
        return "—" if v is None else f"{v:+.1f}"

    lines = [f"{'preset':<18} {'seed':>4} {'test acc':>9} {'attack':>7} {'gap':>6} {'train s':>8} {'load':>9}"]
    for r in rows:
        lines.append(f"{r['preset']:<18} {r['seed']:>4} {pct(r['test_acc'], '.2%'):>9} {pct(r['attack_success']):>7} "
                     f"{gap(r.get('clean_gap')):>6} {r['train_seconds']:>8.1f} {r['load_start']:>4.1f}-{r['load_end']:<4.1f}")
    lines += ["", f"{'preset':<18} {'':>4} {'test acc min/mean/max':>24} {'attack min':>10} {'gap max':>8} "
                  f"{'train s mean':>12}  targets"]
    for preset, s in summary.items():
        acc = s["test_acc"]
        targets = ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in s["targets"].items()) or "—"
        lines.append(f"{preset:<18} {'':>4} {acc['min']:>7.2%} {acc['mean']:>7.2%} {acc['max']:>7.2%} "
                     f"{pct(s.get('attack_success', {}).get('min')):>10} {gap(s.get('clean_gap', {}).get('max')):>8} "
                     f"{s['train_seconds']['mean']:>12.1f}  {targets}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("presets", nargs="*", default=DEFAULT_PRESETS, help=f"presets (default: {' '.join(DEFAULT_PRESETS)})")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    ap.add_argument("--cache-dir", default=None, help="cache folder (default: a temporary one, removed at the end)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a TrainConfig field of every preset's default (an experiment; changes the key)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    overrides = parse_overrides(args.set)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[model-seeds {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    tmp = None if args.cache_dir else tempfile.mkdtemp(prefix="attrex-model-seeds-")
    cache = Cache(args.cache_dir or tmp)
    try:
        rows, clean = [], {}
        for preset in args.presets:
            for seed in seeds:
                row = run_one(preset, seed, cache, overrides, log)
                rows.append(row)
                if CLEAN.get(row["dataset"]) == preset:
                    clean[(row["dataset"], seed)] = row["test_acc"]
        for row in rows:  # the clean gap, training the clean reference where it was not asked for
            ref = CLEAN.get(row["dataset"])
            if ref and ref != row["preset"]:
                if (row["dataset"], row["seed"]) not in clean:
                    clean[(row["dataset"], row["seed"])] = run_one(ref, row["seed"], cache, overrides, log)["test_acc"]
                row["clean_gap"] = 100 * (clean[(row["dataset"], row["seed"])] - row["test_acc"])
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarise(rows)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary, "seeds": seeds, "overrides": overrides,
                          "threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__}, indent=1))
    else:
        print(render(rows, summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
