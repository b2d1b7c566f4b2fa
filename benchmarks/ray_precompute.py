"""A method's precompute on Ray against one process, on a full data set: time, memory per worker, cache, query.

``python -m benchmarks.ray_precompute --preset mnist --data-dir ../shared/data [--method tracin-rp]
[--epochs 2] [--workers 1,2] [--json]``

Trains the preset's default model on the full data set (``--epochs`` fewer than the recipe's
to keep the benchmark short: the precompute's cost does not depend on how well the model is
trained), then in the same process:

1. the precompute in this process (torch's default threads), in a fresh cache: the peer run;
2. for each ``--workers w``: the precompute as ``w`` shards on a local Ray instance of ``w``
   CPUs (one torch thread per task, Ray's default), in a fresh cache;

and reports each run's wall time and its ratio to the peer run, the peak memory of each
worker, the size of the cached precompute, the query time (``scores`` of 100 test points,
and one ``top_k``), and whether the Ray result equals the peer's (scores within 1e-5). Without
the data set at ``--data-dir`` it says so and stops.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from core.cache import Cache
from core.data import build, get_spec
from core.errors import AttrexError
from core.methods import TrainingData, create
from core.models import default_config, train


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--method", default="tracin-rp")
    ap.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--n-train", type=int, default=None, help="a class-balanced subset (default: the whole set)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from core.distributed import precompute

    def log(msg: str) -> None:
        print(f"[ray-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)

    spec = get_spec(args.preset, data_dir=args.data_dir, n_train=args.n_train)
    try:
        scenario = build(spec)
    except AttrexError as exc:
        print(f"the full data set is absent here, so nothing was measured: {exc}", file=sys.stderr)
        return 1
    params = dict(p.split("=", 1) for p in args.param)
    config = default_config(spec.dataset, epochs=args.epochs, seed=0)
    work = Path(tempfile.mkdtemp(prefix="attrex-ray-bench-"))
    base = Cache(work / "model")
    t0 = time.perf_counter()
    trained = train(scenario, config, cache=base)
    log(f"{args.preset}: {len(scenario.y_train):,} training points, model trained in {time.perf_counter() - t0:.0f} s "
        f"(test accuracy {trained.test_accuracy:.3f})")
    data = TrainingData.of(scenario)
    x_query = scenario.x_test[:100]

    def fresh(tag: str) -> Cache:
        shutil.copytree(base.root, work / tag)  # the trained model, nothing of the method
        return Cache(work / tag)

    def measure(method) -> dict:
        t = time.perf_counter()
        scores = method.scores(x_query)
        per_100 = time.perf_counter() - t
        t = time.perf_counter()
        method.top_k(x_query[:1], k=8)
        one = time.perf_counter() - t
        folder = (method.cache.root / "method")
        return {"query_100_s": per_100, "top_k_one_s": one, "cache_mb": size_mb(folder), "scores": scores}

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cache = fresh("single")
    t = time.perf_counter()
    single = create(args.method, trained, data, cache=cache, **params).fit()
    peer_s = time.perf_counter() - t
    peer = measure(single)
    runs = [{"executor": "this process", "threads": torch.get_num_threads(), "seconds": peer_s, "ratio": 1.0,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss0,
             **{k: v for k, v in peer.items() if k != "scores"}}]
    log(f"this process: {peer_s:.1f} s, cache {peer['cache_mb']:.0f} MB, 100 queries {peer['query_100_s']:.3f} s")
    for w in [int(v) for v in args.workers.split(",")]:
        cache = fresh(f"ray{w}")
        t = time.perf_counter()
        method, reports = precompute(create(args.method, trained, data, cache=cache, **params), spec, config,
                                     shards=w, workers=w)
        seconds = time.perf_counter() - t
        m = measure(method)
        same = torch.allclose(m.pop("scores"), peer["scores"], rtol=1e-5, atol=1e-6 * peer["scores"].abs().max().item())
        runs.append({"executor": f"ray, {w} worker(s)", "seconds": seconds, "ratio": seconds / peer_s,
                     "workers": [{"shard": r.shard, "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb} for r in reports],
                     "equal_to_single": bool(same), **m})
        log(f"ray {w}: {seconds:.1f} s ({seconds / peer_s:.2f}x), worker peaks "
            f"{[round(r.peak_rss_mb) for r in reports]} MB, equal: {same}")
    out = {"preset": args.preset, "n_train": len(scenario.y_train), "method": args.method, "params": params,
           "epochs": args.epochs, "model_test_accuracy": trained.test_accuracy, "runs": runs}
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for r in runs:
            print(f"{r['executor']:<22} {r['seconds']:8.1f} s  {r['ratio']:5.2f}x  cache {r['cache_mb']:7.1f} MB  "
                  f"100 queries {r['query_100_s']:.3f} s  top-k {1000 * r['top_k_one_s']:.1f} ms"
                  + (f"  worker peaks {[round(x['peak_rss_mb']) for x in r['workers']]} MB" if "workers" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
