"""``benchmarks/bench_attribution.py`` on a tiny setting: the JSON document's structure, a failing method skipped
with its error."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import bench_attribution as bench
from core.methods import REGISTRY
from core.metrics.agreement import top_k_overlap

main = bench.main


def test_rank_statistics_against_hand_computed_values():
    assert bench.rankdata(torch.tensor([3.0, 1.0, 2.0, 2.0])).tolist() == [4.0, 1.0, 2.5, 2.5]
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert bench.spearman(a, a.pow(3)) == pytest.approx(1.0)
    assert bench.spearman(a, -a) == pytest.approx(-1.0)
    assert bench.spearman(a, torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])) == pytest.approx(0.8)  # 1 - 6·4/(5·24)
    assert top_k_overlap(a[None], torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]]), 2) == 0  # the benchmark's overlap
    assert top_k_overlap(a[None], a.flip(0).flip(0)[None], 3) == 3


def test_bench_json_on_a_tiny_setting(monkeypatch, capsys):
    def broken(self, start, stop, progress):
        raise RuntimeError("deliberately broken for this test")

    monkeypatch.setattr(REGISTRY["graddot"], "_compute_rows", broken)
    before = torch.get_num_threads()
    code = main(["--scenario", "mnist", "--n-train", "100", "--epochs", "2", "--methods", "tracin-rp,graddot",
                 "--repeats", "2", "--captum-queries", "1", "--dims", "2048", "--full-mnist", "none",
                 "--threads", "1", "--quiet", "--json"])
    assert code == 0
    assert torch.get_num_threads() == before  # --threads is undone afterwards
    doc = json.loads(capsys.readouterr().out)

    assert doc["scenario"] == "mnist" and doc["n_train"] == 100 and doc["k"] == 10
    assert len(doc["test_points"]) == 2 and len(doc["explained_classes"]) == 2
    ref = doc["reference"]
    assert ref["name"] == "tracin" and ref["error"] is None and ref["fit_status"] == "computed"
    assert ref["query"]["n"] == 2 and ref["query"]["median_ms"] > 0

    methods = {m["name"]: m for m in doc["methods"]}
    assert set(methods) == {"tracin-rp", "graddot"}
    rp = methods["tracin-rp"]
    assert rp["error"] is None and rp["fit_status"] == "computed" and rp["params"]["dim"] == 2048
    assert rp["fit_seconds"] > 0 and rp["query"]["n"] == 2
    agree = rp["agreement_with_tracin"]
    assert len(agree["topk_overlap"]) == 2 and 0 <= agree["topk_overlap_mean"] <= 10
    assert -1 <= agree["spearman_mean"] <= 1
    assert set(rp["captum_query_time_ratio"]) == {"TracInCP", "TracInCPFast", "TracInCPFastRandProj"}
    assert methods["graddot"]["error"] == "RuntimeError: deliberately broken for this test"
    assert methods["graddot"]["stage"] == "fit"

    variants = {v["name"]: v for v in doc["captum"]["variants"]}
    assert doc["captum"]["available"] and set(variants) == {"TracInCP", "TracInCPFast", "TracInCPFastRandProj"}
    cp = variants["TracInCP"]
    assert cp["error"] is None and cp["query"]["n"] == 1
    assert cp["agreement_with_tracin"]["identical_topk"]  # the same quantity as exact tracin
    assert cp["agreement_with_tracin"]["spearman_mean"] > 0.9999
    assert variants["TracInCPFastRandProj"]["preprocess_seconds"] > 0
    assert variants["TracInCPFast"]["query"]["n"] == 2

    assert [s["dim"] for s in doc["dim_sweep"]] == [2048]
    assert doc["dim_sweep"][0]["agreement_with_tracin"] == agree  # the default dim is not fitted twice
    assert doc["full_mnist"]["status"] == "skipped"

    targets = {t["target"]: t for t in doc["targets"]}
    assert all(t["pass"] in (True, False, None) and t["detail"] for t in targets.values())
    speed = next(t for name, t in targets.items() if name.startswith("exact tracin"))
    assert speed["pass"] is not None
    assert any(name.startswith("graddot") and t["pass"] is None for name, t in targets.items())
    assert any(name.startswith("full MNIST") and t["pass"] is None for name, t in targets.items())

    text = bench.format_report(doc)  # the human-readable table renders from the JSON alone
    assert "TracInCPFastRandProj" in text and "skipped (fit failed)" in text and "targets" in text


def test_bench_refuses_unknown_methods(capsys):
    assert main(["--methods", "tracin,nope", "--full-mnist", "none", "--quiet"]) == 2
    assert "unknown method(s) 'nope'" in capsys.readouterr().err
