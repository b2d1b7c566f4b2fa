"""The Ray executor: on a local Ray instance with 2 workers, a sharded precompute equals the single-process one,
also when a worker is killed mid-run; the CLI runs it; without Ray the flag says how to install it; the local
instance attrex starts listens on loopback addresses only."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from _sockets import available, descendants, listening

from core.cache import Cache
from core.data import build, get_spec
from core.errors import AttrexError
from core.methods import TrainingData, create
from core.models import default_config, train

ray = pytest.importorskip("ray", reason="Ray is the optional extra attrex[distributed] (in the test set-up)")

SPEC = get_spec("mnist", n_train=240, n_test=40, seed=0)
CONFIG = default_config("mnist", epochs=2, seed=0)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs, started as ``attrex prepare --executor ray`` starts one."""
    from core.distributed import start_local

    start_local(2, object_store_memory=128 * 2**20)
    yield
    ray.shutdown()


def test_the_local_ray_instance_listens_on_loopback_only(local_ray):
    """Ray runs whatever code reaches its ports: the GCS, the raylet, the object manager and every worker
    (the driver's processes: this one and all below it) are reachable from this machine only."""
    if not available():
        pytest.skip("reads the listening sockets from /proc (Linux)")
    ray.get(ray.remote(num_cpus=1)(lambda: os.getpid()).remote())  # a worker is up, with its own server
    sockets = listening(descendants(os.getpid()))
    programs = {s.program for s in sockets}
    assert {"gcs_server", "raylet"} <= programs and any(p.startswith("ray::") for p in programs), programs
    assert all(s.loopback for s in sockets), "listening beyond this machine: " + "; ".join(
        str(s) for s in sockets if not s.loopback)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-cache")
    scenario = build(SPEC)
    trained = train(scenario, CONFIG, cache=Cache(root))
    return scenario, trained, root


@pytest.mark.parametrize("name, params", [("tracin", {}), ("tracin-rp", {"dim": 256}), ("graddot", {}), ("gas", {})])
def test_ray_precompute_equals_a_single_process_run(local_ray, setup, tmp_path, name, params):
    from core.distributed import precompute

    scenario, trained, _ = setup
    single = create(name, trained, TrainingData.of(scenario), cache=Cache(tmp_path / "single"), **params).fit()
    train(scenario, CONFIG, cache=Cache(tmp_path / "ray"))  # the model in a cache of its own, read by the workers
    sharded, reports = precompute(create(name, trained, TrainingData.of(scenario), cache=Cache(tmp_path / "ray"),
                                         **params), SPEC, CONFIG, shards=3)
    assert sorted(r.shard for r in reports) == [0, 1, 2] and {r.status for r in reports} == {"computed"}
    assert len({r.pid for r in reports}) >= 1 and all(r.peak_rss_mb > 0 for r in reports)
    x = scenario.x_test[:6]
    expected, got = single.scores(x), sharded.scores(x)
    # per-sample gradients do not depend on the batch a row is in, up to float32 reduction order
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())
    assert torch.equal(sharded.top_k(x, k=5).proponents, single.top_k(x, k=5).proponents)


def test_a_killed_worker_s_shard_is_retried_and_the_result_is_unchanged(local_ray, setup, tmp_path):
    from core.distributed import precompute

    scenario, trained, _ = setup
    marker = tmp_path / "killed-once"
    single = create("tracin-rp", trained, TrainingData.of(scenario), cache=Cache(tmp_path / "a")).fit()
    train(scenario, CONFIG, cache=Cache(tmp_path / "b"))  # the model in the cache the workers read
    sharded, reports = precompute(create("tracin-rp", trained, TrainingData.of(scenario), cache=Cache(tmp_path / "b")),
                                  SPEC, CONFIG, shards=2, fail_once=str(marker))
    assert marker.exists()  # one worker did die (os._exit) before its shard was done
    assert sorted(r.shard for r in reports) == [0, 1]
    x = scenario.x_test[:6]
    assert torch.allclose(sharded.scores(x), single.scores(x), rtol=1e-5, atol=1e-6)


def test_a_method_that_cannot_be_sharded_is_refused(local_ray, setup):
    from core.distributed import precompute

    scenario, trained, root = setup
    with pytest.raises(AttrexError, match="cannot be precomputed in shards; the shardable ones are: .*tracin"):
        precompute(create("representer", trained, TrainingData.of(scenario), cache=Cache(root)), SPEC, CONFIG)


def test_cli_prepare_with_the_ray_executor(local_ray, setup, capsys):
    from core.cli import main

    _, _, root = setup
    args = ["prepare", "--scenario", "mnist", "--n-train", "240", "--n-test", "40", "--epochs", "2",
            "--cache-dir", str(root), "--method", "gradcos", "--executor", "ray", "--shards", "2", "--quiet", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"]["executor"] == "ray" and [s["shard"] for s in doc["method"]["shards"]] == [0, 1]
    assert main(args) == 0  # every shard cached: no task runs, the merged precompute loads
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"]["shards"] == [] and doc["method"]["cache"] == "hit"


def test_without_ray_the_flag_says_how_to_install_it(monkeypatch, setup, capsys):
    from core.cli import main

    _, _, root = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    code = main(["prepare", "--scenario", "mnist", "--n-train", "240", "--n-test", "40", "--epochs", "2",
                 "--cache-dir", str(root), "--method", "graddot", "--executor", "ray", "--quiet"])
    assert code == 2 and 'pip install "attrex[distributed]"' in capsys.readouterr().err
