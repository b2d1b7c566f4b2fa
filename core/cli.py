"""Command line: ``attrex scenarios | prepare | methods | explain | evaluate``.

The benchmark against Captum is a script of its own, ``python -m benchmarks.bench_attribution``
(it needs the test extra: ``pip install -e ".[test]"``, or ``make test``'s environment).

Every command takes ``--json`` and then prints exactly one JSON document on stdout;
progress bars and messages go to stderr. Bad input exits with status 2 and a message
naming what is wrong and what is accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time

from core.cache import Cache
from core.data import PRESETS, ScenarioSpec, build, get_spec
from core.data.scenario import custom_spec
from core.data.sources import download
from core.errors import AttrexError
from core.explain import explain_record, write_features
from core.models import ARCHITECTURES, ModelSource, default_config, recipe_of, train


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


def _progress_bar(desc: str, quiet: bool):
    """A tqdm bar on stderr and the ``progress(fraction, message)`` callback that drives it."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=desc, unit="%", file=sys.stderr, disable=quiet,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")

    def progress(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction, 1)
        bar.set_postfix_str(message, refresh=True)

    return bar, progress


def _load(args: argparse.Namespace):
    """The scenario and its trained model (trained now or loaded from the cache) that ``args`` ask for."""
    spec = _spec(args)
    if getattr(args, "download", False):
        if not args.data_dir:
            raise AttrexError("--download needs --data-dir: the folder to download into")
        download(spec.dataset, args.data_dir)
    scenario = build(spec)
    config = _model_config(args, scenario)
    what = "load" if isinstance(config, ModelSource) else "train"
    bar, progress = _progress_bar(f"{what} {scenario.spec.name} ({config.arch})", args.quiet)
    trained = train(scenario, config, progress=progress, cache=_cache(args))
    bar.close()  # a cache entry found unusable was already reported on stderr by core.cache's logger
    return scenario, trained


def _spec(args: argparse.Namespace) -> ScenarioSpec:
    """The scenario ``args`` name: a preset (``--scenario``) or a person's own data (``--data``)."""
    if (args.scenario is None) == (args.data is None):
        raise AttrexError("name the data: --scenario PRESET or --data PATH (your own), one of the two")
    if args.data is None:
        for flag, value in (("--image-size", args.image_size), ("--test-share", args.test_share),
                            ("--known-bad", args.known_bad)):
            if value is not None:
                raise AttrexError(f"{flag} applies to your own data (--data), not to a preset")
        return get_spec(args.scenario, seed=args.seed, data_dir=args.data_dir, n_train=args.n_train, n_test=args.n_test)
    if args.data_dir or getattr(args, "download", False):
        raise AttrexError("--data-dir and --download are for the presets' full data sets; your own data is --data PATH")
    return custom_spec(args.data, seed=args.seed or 0, image_size=args.image_size,
                       test_share=0.2 if args.test_share is None else args.test_share, known_bad=args.known_bad,
                       n_train=args.n_train, n_test=args.n_test)


def _model_config(args: argparse.Namespace, scenario):
    """A person's model (``--model``, ``--weights``, ...) or the training recipe attrex follows."""
    mine = {"--weights": args.weights, "--checkpoints": args.checkpoints, "--features-layer": args.features_layer,
            "--head-layer": args.head_layer}
    if args.model is None:
        given = [flag for flag, v in mine.items() if v is not None]
        if given:
            raise AttrexError(f"{', '.join(given)} belong(s) to your own model: add --model package.module:function")
        return default_config(recipe_of(scenario), args.arch, epochs=args.epochs, seed=args.seed)
    if args.weights is None:
        raise AttrexError("--model needs --weights: the trained weights (.safetensors or a state dict .pt)")
    if args.arch or args.epochs:
        raise AttrexError("--arch and --epochs choose how attrex trains a model; they do not apply to --model")
    return ModelSource(args.model, args.weights, args.checkpoints, args.features_layer, args.head_layer)


def _cache(args: argparse.Namespace) -> Cache | None:
    return Cache(args.cache_dir) if getattr(args, "cache_dir", None) else None


def _method_params(pairs: list[str] | None) -> dict[str, str]:
    """``--param name=value`` pairs as a dict (values are checked by the method's schema)."""
    out = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise AttrexError(f"--param takes name=value; got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def _make_method(args: argparse.Namespace, scenario, trained):
    from core.methods import TrainingData, create

    return create(args.method, trained, TrainingData.of(scenario), cache=_cache(args), **_method_params(args.param))


def _fit_method(method, quiet: bool, shard: tuple[int, int] | None = None, merge: int | None = None):
    label = f"{method.name}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
    bar, progress = _progress_bar(f"precompute {label}", quiet)
    try:
        if shard:
            return method.fit_shard(*shard, progress=progress)
        if merge is not None:
            return method.merge_shards(merge, progress=progress)
        return method.fit(progress)
    finally:
        bar.close()


def _parse_shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        raise AttrexError(f"--shard takes i/n (e.g. 0/4); got {text!r}")
    return int(i), int(n)


def _prepare_plan(args: argparse.Namespace) -> tuple[tuple[int, int] | None, bool]:
    """``attrex prepare``'s options checked together: ``(the shard i, n or None, whether Ray runs it)``."""
    if (args.shard is not None or args.merge is not None) and not args.method:
        raise AttrexError("--shard and --merge need --method: the method whose precompute is split")
    if args.shard is not None and args.merge is not None:
        raise AttrexError("--shard and --merge go in separate runs: first each --shard i/N, then --merge N")
    if args.merge is not None and args.merge < 1:
        raise AttrexError(f"--merge takes the number of shards N (a positive integer); got {args.merge}")
    shard = _parse_shard(args.shard) if args.shard is not None else None
    ray = args.executor == "ray"
    if ray and (not args.method or shard or args.merge is not None):
        raise AttrexError("--executor ray needs --method and runs every shard itself (no --shard or --merge)")
    if not ray and (args.address or args.shards or args.workers):
        raise AttrexError("--address, --shards and --workers go with --executor ray")
    return shard, ray


def _prepare_method(args: argparse.Namespace, scenario, trained, shard: tuple[int, int] | None, ray: bool) -> dict:
    """Precompute ``--method`` (in one process, one shard, a merge, or on Ray) and say how it went."""
    method = _make_method(args, scenario, trained)
    if ray:
        from core.distributed import precompute

        bar, progress = _progress_bar(f"precompute {method.name} on Ray", args.quiet)
        try:
            method, reports = precompute(method, scenario.spec, trained.config, shards=args.shards,
                                         address=args.address, workers=args.workers, progress=progress)
        finally:
            bar.close()
        out = None
    else:
        out = _fit_method(method, args.quiet, shard=shard, merge=args.merge)
    record = {"name": method.name, "params": method.hparams}
    if ray:
        record.update(executor="ray", fit_seconds=method.fit_seconds, cache=method.fit_status,
                      shards=[vars(r) for r in reports])
    elif shard:
        start, stop = method.shard_rows(*shard, len(scenario.y_train))
        record.update(shard=f"{shard[0]}/{shard[1]}", rows=[start, stop], cache=out.status,
                      missing_shards=method.missing_shards(shard[1]))
    else:
        record.update(fit_seconds=method.fit_seconds, cache=method.fit_status, info=method.info)
    return record


def _print_prepared(result: dict, spec, trained, shard: tuple[int, int] | None) -> None:
    """``attrex prepare``'s text report of ``result`` (everything but the last line)."""
    m = trained.summary()
    print(f"scenario      {spec.name}: {spec.description}")
    print(f"data          {result['data_source']}: {result['n_train']} train / {result['n_test']} test")
    if result["ground_truth"]:
        print(f"ground truth  {json.dumps(result['ground_truth'])}")
    lrs = ", ".join(f"{c['lr']:.3g}" for c in m["checkpoints"])
    if m["cache"] == "loaded":
        ckpts = f"{len(m['checkpoints'])} checkpoints (lr {lrs})" if m["checkpoints_given"] else "no checkpoints"
        print(f"model         {m['arch']} (yours), {ckpts}")
    else:
        print(f"model         {m['arch']}, {m['epochs']} epochs, {len(m['checkpoints'])} checkpoints (lr {lrs})")
    print(f"test accuracy {m['test_accuracy']:.4f}")
    if m["attack_success"] is not None:
        print(f"attack success {m['attack_success']:.4f} (triggered test inputs classified as the target)")
    origin = {"hit": "from cache", "loaded": f"loaded and checked in {m['train_seconds']} s"}.get(
        m["cache"], f"trained in {m['train_seconds']} s")
    print(f"{origin}")
    if "method" in result:
        r = result["method"]
        if "executor" in r:
            done = [x for x in r["shards"]]
            print(f"method        {r['name']} precomputed on Ray: {len(done)} shard task(s) run "
                  f"(the others were cached), merged in {r['fit_seconds']:.1f} s")
            for x in done:
                print(f"  shard {x['shard']} rows {x['rows'][0]}:{x['rows'][1]} on {x['host']} (pid {x['pid']}): "
                      f"{x['seconds']:.1f} s, peak memory {x['peak_rss_mb']:.0f} MB")
        elif "shard" in r:
            left = r["missing_shards"]
            print(f"method        {r['name']}: shard {r['shard']} (rows {r['rows'][0]}:{r['rows'][1]}) {r['cache']}; "
                  + (f"shards still missing: {left}" if left else f"all shards done: run with --merge {shard[1]}"))
        else:
            origin = "from cache" if r["cache"] == "hit" else "precomputed"
            print(f"method        {r['name']} {origin} (fit {r['fit_seconds']:.1f} s)")


def cmd_prepare(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    shard, ray = _prepare_plan(args)
    scenario, trained = _load(args)
    spec = scenario.spec
    result = {
        "scenario": spec.name,
        "dataset": spec.dataset,
        "data_source": scenario.source,
        "n_train": len(scenario.y_train),
        "n_test": len(scenario.y_test),
        "ground_truth": scenario.truth.summary(),
        "model": trained.summary(),
    }
    if args.method:
        result["method"] = _prepare_method(args, scenario, trained, shard, ray)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    _print_prepared(result, spec, trained, shard)
    print(f"done in {result['seconds']} s")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from core.methods import REGISTRY

    records = [cls.describe() for cls in REGISTRY.values()]
    if args.json:
        print(json.dumps({"methods": records}, indent=1))
        return 0
    for r in records:
        print(f"{r['name']}: {r['title']}. {r['description']}")
        if r["reference"]:
            print(f"  ({r['reference']})")
        for p in r["params"]:
            rng = "" if p["type"] == "text" else f" in {p['range']}"
            print(f"  --param {p['name']}={p['default']}  ({p['type']}{rng}) {p['help']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    scenario, trained = _load(args)
    if args.split not in scenario.test_splits():
        raise AttrexError(f"--split must be one of {', '.join(scenario.test_splits())} for {scenario.spec.name}; "
                          f"got {args.split!r}")
    method = _make_method(args, scenario, trained)
    if args.target is not None and not 0 <= args.target < scenario.n_classes:
        raise AttrexError(f"--target must lie in [0, {scenario.n_classes - 1}]; got {args.target}")
    if args.k < 1:
        raise AttrexError(f"--k must be a positive integer; got {args.k}")
    n_train = len(scenario.y_train)
    note = (f"--k {args.k} exceeds the {n_train} training points: listing all {n_train}, as proponents from "
            "the highest score down and as opponents from the lowest up") if args.k > n_train else None
    if note:
        print(f"attrex: note: {note}", file=sys.stderr)
    _fit_method(method, args.quiet)
    rec = explain_record(scenario, trained, method, args.split, args.test, min(args.k, n_train), args.target)
    if note:
        rec["note"] = note
    if args.features:
        write_features(scenario, trained, rec, args.features, _cache(args),
                       log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(rec, indent=1, default=str))
        return 0
    t, m = rec["test"], rec["method"]
    origin = "from cache" if m["cache"] == "hit" else f"precomputed in {m['fit_seconds']:.1f} s"
    print(f"{rec['scenario']} · method {m['name']} ({origin})")
    print(f"test #{t['index']} ({t['split']} split): label {t['label']} ({t['label_name']}), predicted "
          f"{t['predicted']} ({t['confidence']:.2f}); explaining class {t['explained_class']} ({t['explained_name']})")
    for title in ("proponents", "opponents"):
        print(f"\n{title} (score {'> 0: support' if title == 'proponents' else '< 0: work against'} the explained class)")
        print(f"  {'rank':>4}  {'train id':>8}  {'score':>11}  label")
        for r in rec[title]:
            flags = ", ".join(f if f != "flipped" else r["flag_text"] for f in r["flags"])
            name = "" if r["label_name"] == str(r["label"]) else f" ({r['label_name']})"
            extra = ""
            if "features" in r:
                f = r["features"]["flia"]
                extra = f"  FLIA: IL {f['il_change']:+.0%} along the path, gap {f['gap']:.2f} -> {f['file']}"
            print(f"  {r['rank']:>4}  {r['train_id']:>8}  {r['score']:>11.4g}  {r['label']}{name}"
                  + (f"  [{flags}]" if flags else "") + extra)
    return 0


def _evaluate_methods(text: str, pairs: list[str] | None) -> dict[str, dict]:
    """``--methods a,b`` (or ``all``) and ``--param method.name=value`` as ``{method: params}``."""
    from core.methods import get_method, offered

    names = [m.strip() for m in text.split(",") if m.strip()]
    if names == ["all"]:
        names = offered()
    if not names:
        raise AttrexError("--methods needs at least one method name (or all)")
    specs: dict[str, dict] = {}
    for name in names:
        get_method(name)  # an unknown name fails here, with the accepted ones
        specs[name] = {}
    for key, value in _method_params(pairs).items():
        method, dot, param = key.partition(".")
        if not dot or method not in specs:
            raise AttrexError(f"--param for evaluate takes method.name=value with a method from --methods; got {key!r}")
        specs[method][param] = value
    for name, params in specs.items():
        get_method(name).check_params(params)  # bad parameters fail before any work
    return specs


# ``attrex evaluate``'s option and help per field of :class:`core.evaluation.Settings` (in the order --help lists
# them); each option's type and default are the field's (:func:`settings_args`).
SETTINGS_OPTIONS: dict[str, tuple[str, str]] = {
    "n_test": ("--points", "clean test points of the DualView tasks"),
    "n_triggered": ("--triggered", "triggered test samples of the backdoor task"),
    "k": ("--top-k", "k of the backdoor top-k share"),
    "lds_test": ("--lds-points", "test points of LDS"),
    "lds_subsets": ("--lds-subsets", "subset models of LDS"),
    "lds_alpha": ("--lds-alpha", "fraction of the training set per LDS subset"),
    "seed": ("--eval-seed", "seed of the test-point draws and LDS subsets"),
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def settings_args(p: argparse.ArgumentParser) -> None:
    """One option per :class:`~core.evaluation.Settings` field, typed and defaulted as the field is."""
    from core.evaluation import Settings

    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if set(fields) != set(SETTINGS_OPTIONS):  # a field added to Settings needs its option here
        raise RuntimeError(f"Settings fields {sorted(fields)} and their options {sorted(SETTINGS_OPTIONS)} differ")
    for name, (flag, text) in SETTINGS_OPTIONS.items():
        default = fields[name].default
        p.add_argument(flag, type=type(default), default=default, help=f"{text} (default {default})")


def settings_of(args: argparse.Namespace):
    """The :class:`~core.evaluation.Settings` that ``attrex evaluate``'s options ask for."""
    from core.evaluation import Settings

    return Settings(**{name: getattr(args, _dest(flag)) for name, (flag, _) in SETTINGS_OPTIONS.items()})


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.evaluation import check_tasks, evaluate, table

    specs = _evaluate_methods(args.methods, args.param)
    tasks = check_tasks([t.strip() for t in args.tasks.split(",") if t.strip()]) if args.tasks else None
    settings = settings_of(args)
    if args.workers is not None and args.workers < 1:
        raise AttrexError(f"--workers must be a positive integer; got {args.workers}")
    scenario, trained = _load(args)
    bar, progress = _progress_bar(f"evaluate {scenario.spec.name}", args.quiet)
    t0 = time.perf_counter()
    try:
        result = evaluate(scenario, trained, specs, tasks, settings, cache=_cache(args), workers=args.workers,
                          progress=progress)
    finally:
        bar.close()
    result.seconds = time.perf_counter() - t0
    print(json.dumps(result.to_json(), indent=1) if args.json else table(result))
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    """The options that pick a scenario (or a person's data) and its model."""
    p.add_argument("--scenario", help=f"a preset, one of: {', '.join(PRESETS)} (or --data)")
    own = p.add_argument_group("your own data and model (instead of --scenario)")
    own.add_argument("--data", metavar="PATH", help="an image folder (one sub-folder per class; train/ and test/ "
                     "optional), a .csv or .jsonl of texts (text, label[, split]) or a .npz of arrays")
    own.add_argument("--image-size", metavar="HxW", help="resize every image to HxW (needed when sizes differ)")
    own.add_argument("--test-share", type=float, help="share held out as the test split where the data has "
                     "none (default 0.2)")
    own.add_argument("--known-bad", metavar="CSV", help="training points known to be mislabelled (columns id "
                     "or path, optional label: the correct class), scored against as ground truth")
    own.add_argument("--model", metavar="PKG.MOD:FN", help="your model: a function returning an nn.Module "
                     "(package.module:function or file.py:function; called with n_classes= if it takes it)")
    own.add_argument("--weights", metavar="FILE", help="its trained weights: .safetensors or a state dict .pt")
    own.add_argument("--checkpoints", metavar="DIR", help="its training checkpoints: a folder with "
                     "checkpoints.json, a list of {\"file\": ..., \"lr\": ...} (TracIn, GAS and FLIA need them)")
    own.add_argument("--features-layer", metavar="NAME", help="the layer whose flattened output feeds the head "
                     "(only where attrex cannot split the model itself)")
    own.add_argument("--head-layer", metavar="NAME", help="the last nn.Linear (default: found by attrex)")
    p.add_argument("--arch", choices=list(ARCHITECTURES), help="architecture (default: the data set's)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the data set's)")
    p.add_argument("--seed", type=int, help="seed of the scenario and the training (default 0)")
    p.add_argument("--data-dir", help="folder with the full data set (default: the embedded subset)")
    p.add_argument("--n-train", type=int, help="class-balanced subset of the training split")
    p.add_argument("--n-test", type=int, help="class-balanced subset of the test split")
    p.add_argument("--cache-dir", help="cache folder (default: $ATTREX_CACHE or ~/.cache/attrex)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")

def _method_args(p: argparse.ArgumentParser, required: bool) -> None:
    """The options that pick a method and its parameters."""
    p.add_argument("--method", required=required, help="a method name (`attrex methods` lists them)")
    p.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                   help="a method parameter (repeatable); `attrex methods` lists names, defaults and ranges")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attrex", description="attrex, the attribution explorer")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scenarios", help="list the scenario presets and what they plant")
    p.add_argument("--truth", action="store_true", help="also build each scenario and summarise its ground truth")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout (includes the ground truth)")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("prepare", help="build a scenario, train its model and optionally precompute a method (cached)")
    _model_args(p)
    p.add_argument("--download", action="store_true", help="first fetch the data set into --data-dir (needs internet)")
    _method_args(p, required=False)
    p.add_argument("--shard", metavar="I/N", help="precompute only shard I of N of the training set (one per process "
                   "or machine, sharing the cache folder), then merge with --merge N")
    p.add_argument("--merge", type=int, metavar="N", help="merge the N cached shards into the full precompute")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="ray: run the method's shards as "
                   "Ray tasks (pip install \"attrex[distributed]\"), then merge them (default: local, one process)")
    p.add_argument("--address", help="the Ray cluster to use (ray start --head prints it; default: start a local one)")
    p.add_argument("--shards", type=int, help="number of shards (default: the Ray cluster's CPUs)")
    p.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: this machine's)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("methods", help="list the attribution methods with their parameters, defaults and ranges")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("explain", help="the proponents and opponents of one test sample, with ground-truth flags")
    _model_args(p)
    _method_args(p, required=True)
    p.add_argument("--test", type=int, required=True, help="index of the test sample within --split")
    p.add_argument("--split", default="clean", help="test split: clean (default), triggered, marked")
    p.add_argument("--target", type=int, help="class to explain (default: the predicted class)")
    p.add_argument("--k", type=int, default=8, help="proponents and opponents to list (default 8)")
    p.add_argument("--features", metavar="OUTDIR", help="also write FLIA heatmaps and DualView-LRP overlays (PNG; "
                   "token highlights as HTML for text) of every listed pair to OUTDIR")
    p.set_defaults(func=cmd_explain)

    from core.evaluation import tasks_help  # the task registry: the one list of tasks

    p = sub.add_parser("evaluate", help="score methods against the scenario's planted ground truth (cached)")
    _model_args(p)
    p.add_argument("--methods", required=True, help="comma-separated method names, or all")
    p.add_argument("--param", "-p", action="append", metavar="METHOD.NAME=VALUE",
                   help="a method parameter (repeatable), e.g. tracin-rp.dim=2048")
    p.add_argument("--tasks", "--metrics", dest="tasks", help=tasks_help())  # --metrics: its former name
    settings_args(p)
    p.add_argument("--workers", type=int, help="processes training subset models (default: CPUs, at most 4)")
    p.set_defaults(func=cmd_evaluate)

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
