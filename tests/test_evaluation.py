"""The evaluation suite (core/evaluation/), its subset training (core/models/subsets.py), LDS
(core/metrics/lds.py), the cleanlab baseline (core/methods/confident.py) and ``attrex evaluate``.

Every value the suite reports is recomputed here independently: scikit-learn's
``roc_auc_score`` / scipy's ``spearmanr`` on the method's own scores, subset models trained
one by one outside :func:`train_subsets`, cleanlab called on probabilities predicted here.
The models are small (logistic regression on 600 MNIST images, a few epochs) so that the
k-fold and subset retraining stay within seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from core.cache import Cache
from core.cli import main
from core.data import build, get_spec
from core.errors import AttrexError
from core.evaluation import (
    TASKS,
    EvaluationResult,
    Kept,
    Settings,
    Task,
    evaluate,
    load_kept,
    table,
    tasks_for,
)
from core.methods import TrainingData, create
from core.metrics import lds
from core.models import default_config, is_cached, predict, predict_proba, train
from core.models.subsets import k_folds, random_subsets, subset_config, train_subsets

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def small(preset: str, seed: int = 0):
    scenario = build(get_spec(preset, n_train=600, n_test=60, seed=seed))
    return scenario, train(scenario, default_config("mnist", "logreg", epochs=4, seed=seed))


@pytest.fixture(scope="module")
def noisy():
    return small("mnist-noisy")


# ----------------------------------------------------------------------------- subsets


def test_subset_keeps_the_ground_truth_of_the_kept_points(noisy):
    scenario, _ = noisy
    flipped = set(scenario.truth.flipped_ids.tolist())
    keep = torch.arange(0, 600, 3).flip(0)  # every third point, in reverse order
    sub = scenario.subset(keep)
    assert torch.equal(sub.x_train, scenario.x_train[keep]) and torch.equal(sub.y_train, scenario.y_train[keep])
    expected = sorted(j for j, i in enumerate(keep.tolist()) if i in flipped)
    assert sorted(sub.truth.flipped_ids.tolist()) == expected and expected
    assert torch.equal(sub.truth.original_labels, scenario.truth.original_labels[keep])
    assert sub.fingerprint != scenario.fingerprint and torch.equal(sub.x_test, scenario.x_test)
    for bad in ([], [0, 0], [600], [-1]):
        with pytest.raises(AttrexError, match="distinct ids"):
            scenario.subset(bad)


def test_subsets_and_folds_are_seeded_partitions():
    m = random_subsets(50, 6, 0.3, seed=1)
    assert m.shape == (6, 50) and (m.sum(1) == 15).all() and torch.equal(m, random_subsets(50, 6, 0.3, seed=1))
    assert not torch.equal(m, random_subsets(50, 6, 0.3, seed=2))
    folds = k_folds(10, 3, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(10)) and [len(f) for f in folds] == [4, 3, 3]
    for call in (lambda: random_subsets(5, 3, 1.0), lambda: random_subsets(5, 1, 0.5), lambda: k_folds(3, 4)):
        with pytest.raises(AttrexError):
            call()


@pytest.mark.slow
def test_subset_models_equal_models_trained_one_by_one_and_resume(noisy, tmp_path):
    scenario, trained = noisy
    cache = Cache(tmp_path)
    masks = random_subsets(600, 3, 0.5, seed=0)
    first = train_subsets(scenario, [masks[0]], trained.config, cache=cache)   # an interrupted run: one done
    seen = []
    models = train_subsets(scenario, list(masks), trained.config, cache=cache, workers=2,
                           progress=lambda f, msg: seen.append(msg))
    assert seen[0] == "1/3 subset models cached" and seen[-1] == "3 subset models ready"
    assert torch.equal(predict(first[0].model, scenario.x_test), predict(models[0].model, scenario.x_test))
    for j, m in enumerate(masks):
        sub = scenario.subset(m.nonzero().squeeze(1))
        cfg = subset_config(scenario, trained.config, j)
        assert cfg.seed != trained.config.seed and is_cached(sub, cfg, cache)
        alone = train(sub, cfg, cache=Cache(tmp_path / "alone"))  # trained here, in this process
        torch.testing.assert_close(predict(alone.model, scenario.x_test), predict(models[j].model, scenario.x_test),
                                   rtol=0, atol=1e-5)  # two processes, same arithmetic (measured: equal)


# ----------------------------------------------------------------------------- LDS


def test_lds_is_the_mean_spearman_of_summed_scores_against_outputs():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 30, generator=g)
    masks = random_subsets(30, 12, 0.5, seed=3)
    outputs = torch.randn(12, 4, generator=g)
    expected = [spearmanr((masks.double() @ scores.double().T)[:, t], outputs[:, t]).statistic for t in range(4)]
    assert lds.lds_rows(scores, masks, outputs) == pytest.approx(expected, abs=1e-12)
    assert lds.lds(scores, masks, outputs) == pytest.approx(sum(expected) / 4, abs=1e-12)
    exact = lds.predicted_outputs(scores, masks)
    assert lds.lds(scores, masks, exact.float()) == pytest.approx(1.0)
    assert lds.lds(scores, masks, -exact.float()) == pytest.approx(-1.0)
    constant = outputs.clone()
    constant[:, 1] = 0.5
    assert math.isnan(lds.lds_rows(scores, masks, constant)[1])
    assert lds.lds(scores, masks, constant) == pytest.approx(sum(expected[i] for i in (0, 2, 3)) / 3, abs=1e-12)
    with pytest.raises(AttrexError, match="boolean mask"):
        lds.lds(scores, masks.long(), outputs)
    with pytest.raises(AttrexError, match="outputs must be"):
        lds.lds(scores, masks, outputs.T)


def test_margin_is_the_true_logit_against_the_others():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 3.0]])
    y = torch.tensor([0, 2])
    ref = [2.0 - math.log(math.exp(0.0) + math.exp(-1.0)), 3.0 - math.log(math.exp(0.0) + math.exp(3.0))]
    assert lds.margin(logits, y).tolist() == pytest.approx(ref, abs=1e-12)


# ----------------------------------------------------------------------------- the suite


def test_evaluate_reports_what_the_metrics_give_on_the_methods_own_scores(noisy, tmp_path):
    scenario, trained = noisy
    cache = Cache(tmp_path)
    settings = Settings(n_test=20, seed=1)
    r = evaluate(scenario, trained, ["representer", "loss", "graddot", "random"], settings=settings, cache=cache)
    assert list(r.tasks) == tasks_for(scenario) == ["mislabel", "identical-class", "label-poisoning"]
    flipped = torch.zeros(600, dtype=torch.bool)
    flipped[scenario.truth.flipped_ids] = True
    data = TrainingData.of(scenario)
    for name in ("representer", "loss", "random"):
        s = create(name, trained, data, cache=cache).fit().self_scores()
        got = r.results[name]["mislabel"]
        assert got.status == "ok" and got.values["auroc"] == pytest.approx(roc_auc_score(flipped, s), abs=1e-9)
        top = s.argsort(descending=True)[:len(scenario.truth.flipped_ids)]
        assert got.values["precision_at_k"] == pytest.approx(flipped[top].double().mean().item(), abs=1e-9)
    rep = create("representer", trained, data, cache=cache).fit()
    ids = r.results["representer"]  # the DualView tasks: recompute identical class on the same draw
    x_ids = torch.randperm(60, generator=torch.Generator().manual_seed(1 * 7919 + 1))[:20].sort().values
    x = scenario.x_test[x_ids]
    pred = predict(trained.model, x).argmax(1)
    top1 = rep.scores(x, pred).argmax(1)
    assert ids["identical-class"].values["identical_class"] == pytest.approx(
        (scenario.y_train[top1] == pred).double().mean().item())
    assert r.results["loss"]["identical-class"].to_json() == {
        "status": "n/a", "reason": "loss scores training points only, and identical-class needs per-test-point scores"}
    assert r.results["graddot"]["mislabel"].status == "n/a"
    assert r.agreement.methods == ["representer", "graddot", "random"]
    diag = [r.agreement.spearman[i][i] for i in range(3)]
    assert diag == pytest.approx([1.0] * 3)
    curve = load_kept(scenario, trained, rep, "mislabel", settings, cache).curve
    assert curve.shape == (2, 101) and curve[1, 0] == 0 and curve[1, -1] == pytest.approx(1.0)
    # a second run reads every result from the cache
    again = evaluate(scenario, trained, ["representer", "loss"], settings=settings, cache=cache)
    assert {again.results[m]["mislabel"].cache for m in ("representer", "loss")} == {"hit"}
    assert again.results["representer"]["mislabel"].values == r.results["representer"]["mislabel"].values


def test_evaluate_backdoor_and_tasks_that_do_not_apply(tmp_path):
    scenario, trained = small("mnist-backdoor")
    cache = Cache(tmp_path)
    r = evaluate(scenario, trained, ["representer"], tasks=["backdoor", "mislabel", "domain-mismatch"],
                 settings=Settings(n_triggered=5), cache=cache)
    assert r.results["representer"]["mislabel"].to_json() == {"status": "n/a",
                                                              "reason": "the scenario has no flipped labels"}
    assert r.results["representer"]["domain-mismatch"].status == "n/a"
    b = r.results["representer"]["backdoor"].values
    x_trig, target = scenario.test_split("triggered")
    hit = (predict(trained.model, x_trig).argmax(1) == target).nonzero().squeeze(1)[:5]
    s = create("representer", trained, TrainingData.of(scenario), cache=cache).fit().scores(x_trig[hit], target[hit])
    poisoned = torch.zeros(600, dtype=torch.bool)
    poisoned[scenario.truth.poisoned_ids] = True
    assert b["triggered_test"] == len(hit)
    assert b["auroc"] == pytest.approx(roc_auc_score(poisoned, s.double().mean(0)), abs=1e-9)
    in_class = scenario.y_train == scenario.truth.target_class
    assert b["auroc_in_class"] == pytest.approx(roc_auc_score(poisoned[in_class], s.double().mean(0)[in_class]), abs=1e-9)
    assert b["top_k_share"] == pytest.approx(poisoned[s.topk(10, dim=1).indices].double().mean().item(), abs=1e-9)
    assert b["base_rate"] == pytest.approx(poisoned.double().mean().item())


def test_a_failing_method_gets_an_entry_not_a_crash(noisy, tmp_path, monkeypatch):
    scenario, trained = noisy
    from core.methods import REGISTRY

    def boom(self, progress):
        raise RuntimeError("solver diverged")

    monkeypatch.setattr(REGISTRY["representer"], "_compute", boom)
    r = evaluate(scenario, trained, ["representer", "random"], settings=Settings(n_test=5), cache=Cache(tmp_path))
    assert r.results["representer"]["mislabel"].to_json() == {"status": "error",
                                                              "error": "precompute failed: solver diverged"}
    assert "RuntimeError" in r.methods["representer"].error
    assert r.results["random"]["mislabel"].status == "ok"
    with pytest.raises(AttrexError, match="unknown method"):
        evaluate(scenario, trained, ["nope"])
    with pytest.raises(AttrexError, match="unknown task"):
        evaluate(scenario, trained, ["random"], tasks=["nope"])
    with pytest.raises(AttrexError, match="lds_alpha"):
        Settings(lds_alpha=1.5)


def test_any_failure_of_a_method_is_its_entry_but_a_cancel_stops_the_evaluation(noisy, tmp_path, monkeypatch):
    """A library's own error (cleanlab raised a NameError in the app's worker processes, and the whole evaluation
    failed with it) is the failing method's entry, the other methods' results stand; a cancelled job stops it all."""
    from core.jobs import Cancelled
    from core.methods import REGISTRY

    scenario, trained = noisy

    def name_error(self, progress):
        raise NameError("name 'pred_probs_by_class' is not defined")

    monkeypatch.setattr(REGISTRY["representer"], "_compute", name_error)
    r = evaluate(scenario, trained, ["representer", "random"], settings=Settings(n_test=5), cache=Cache(tmp_path))
    assert r.results["representer"]["mislabel"].status == "error"
    assert r.methods["representer"].error.startswith("NameError: ")
    assert r.results["random"]["mislabel"].status == "ok"

    def cancelled(self, progress):
        raise Cancelled("cancelled")

    monkeypatch.setattr(REGISTRY["representer"], "_compute", cancelled)
    with pytest.raises(Cancelled):
        evaluate(scenario, trained, ["random", "representer"], settings=Settings(n_test=5), cache=Cache(tmp_path))


def test_lds_task_against_subset_models_trained_here(noisy, tmp_path):
    scenario, trained = noisy
    cache = Cache(tmp_path)
    settings = Settings(lds_test=8, lds_subsets=5, lds_alpha=0.5, seed=0)
    r = evaluate(scenario, trained, ["representer", "random"], tasks=["lds"], settings=settings, cache=cache,
                 workers=1)
    v = r.results["representer"]["lds"].values
    ids = torch.randperm(60, generator=torch.Generator().manual_seed(2))[:8].sort().values
    x, y = scenario.x_test[ids], scenario.y_test[ids]
    masks = random_subsets(600, 5, 0.5, seed=0)
    margins = []
    for j, m in enumerate(masks):
        model = train(scenario.subset(m.nonzero().squeeze(1)), subset_config(scenario, trained.config, j),
                      cache=Cache(tmp_path / "here")).model
        logits = predict(model, x).double()
        margins.append([float(logits[t, y[t]] - torch.cat([logits[t, :y[t]], logits[t, y[t] + 1:]]).logsumexp(0))
                        for t in range(8)])
    s = create("representer", trained, TrainingData.of(scenario), cache=cache).fit().scores(x, y).double()
    rhos = [spearmanr(masks.double() @ s[t], [row[t] for row in margins]).statistic for t in range(8)]
    rhos = [p for p in rhos if math.isfinite(p)]
    assert v["lds"] == pytest.approx(sum(rhos) / len(rhos), abs=1e-9) and v["subsets"] == 5


# ----------------------------------------------------------------------------- cleanlab


@pytest.mark.slow
def test_cleanlab_scores_out_of_fold_probabilities(noisy, tmp_path):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    scenario, trained = noisy
    cache = Cache(tmp_path)
    method = create("cleanlab", trained, TrainingData.of(scenario), cache=cache, folds=3).fit()
    probs = torch.empty(600, 10, dtype=torch.float64)
    for i, held in enumerate(k_folds(600, 3, seed=0)):  # each fold predicted by a model that never saw it
        keep = torch.tensor(sorted(set(range(600)) - set(held.tolist())))
        model = train(scenario.subset(keep), subset_config(scenario, trained.config, i),
                      cache=Cache(tmp_path / "here")).model
        probs[held] = predict_proba(model, scenario.x_train[held]).double()
    torch.testing.assert_close(method.oof_probs.double(), probs, rtol=0, atol=1e-6)
    labels, p = scenario.y_train.numpy(), method.oof_probs.double().numpy()
    expected = torch.from_numpy(find_label_issues(labels, p, filter_by="prune_by_noise_rate")).double() + 1 - \
        torch.from_numpy(get_label_quality_scores(labels, p, method="self_confidence")).double()
    torch.testing.assert_close(method.self_scores().double(), expected, rtol=0, atol=1e-6)
    assert method.info["flagged"] == int(expected.ge(1).sum())
    with pytest.raises(AttrexError, match="no per-test-point scores"):
        method.scores(scenario.x_test[:1])


@pytest.mark.slow
def test_cleanlab_scores_in_a_process_started_by_spawn(tmp_path):
    """The app's job workers are started by spawn: cleanlab's pool shared its data through module globals such a
    process lacks, and failed with a NameError. The scores there equal cleanlab's, called here on the same data."""
    import subprocess
    import sys

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    script = ("import multiprocessing, sys, torch\n"
              "if __name__ == '__main__':\n"
              "    multiprocessing.set_start_method('spawn', force=True)\n"
              "    from core.methods.confident import label_issue_scores\n"
              "    torch.manual_seed(0)\n"
              "    p = torch.distributions.Dirichlet(torch.ones(10)).sample((3000,)).double()\n"
              "    y = p.argmax(1); y[:300] = (y[:300] + 1) % 10\n"
              "    torch.save({'p': p, 'y': y, 's': label_issue_scores(y, p, 'self_confidence')[0]}, sys.argv[1])\n")
    out = tmp_path / "scores.pt"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.load(out)
    y, p = got["y"].numpy(), got["p"].numpy()
    expected = torch.from_numpy(find_label_issues(y, p, filter_by="prune_by_noise_rate")).double() + 1 - \
        torch.from_numpy(get_label_quality_scores(y, p, method="self_confidence")).double()
    torch.testing.assert_close(got["s"], expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- CLI


def test_cli_evaluate_json_and_bad_input(noisy, tmp_path, capsys):
    scenario, trained = noisy
    args = ["evaluate", "--scenario", "mnist-noisy", "--n-train", "600", "--n-test", "60", "--arch", "logreg",
            "--epochs", "4", "--cache-dir", str(tmp_path), "--quiet"]
    assert main(args + ["--methods", "loss,random", "--points", "10", "--json", "-p", "random.seed=3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["results"]) == {"loss", "random"} and doc["methods"]["random"]["params"] == {"seed": 3}
    assert doc["results"]["loss"]["mislabel"]["values"]["auroc"] > 0.5 and doc["seconds"] > 0
    assert set(doc["tasks"]) == {"mislabel", "identical-class", "label-poisoning"}
    assert main(args + ["--methods", "loss", "--metrics", "mislabel"]) == 0
    assert "mislabel AUROC" in capsys.readouterr().out
    for bad, message in ((["--methods", "nope"], "unknown method"), (["--methods", "loss", "--metrics", "x"], "unknown task"),
                         (["--methods", "random", "-p", "random.seed=-1"], "seed"),
                         (["--methods", "random", "-p", "loss.seed=1"], "method.name=value"),
                         (["--methods", "random", "--lds-alpha", "0"], "lds_alpha")):
        assert main(args + bad) == 2
        assert message in capsys.readouterr().err
    assert set(TASKS) >= {"mislabel", "backdoor", "lds", "identical-subclass", "domain-mismatch"}


def test_methods_sharing_a_precompute_keep_their_own_results(noisy, tmp_path):
    """GAS reads TracIn's cached gradients (one precompute) but scores differently: results must not be shared."""
    scenario, trained = noisy
    cache = Cache(tmp_path)
    settings = Settings(n_test=15, seed=2)
    data = TrainingData.of(scenario)
    r = evaluate(scenario, trained, ["tracin-rp", "gas-rp"], tasks=["identical-class"], settings=settings, cache=cache)
    x_ids = torch.randperm(60, generator=torch.Generator().manual_seed(2 * 7919 + 1))[:15].sort().values
    x = scenario.x_test[x_ids]
    pred = predict(trained.model, x).argmax(1)
    for name in ("tracin-rp", "gas-rp"):
        top1 = create(name, trained, data, cache=cache).fit().scores(x, pred).argmax(1)
        expected = (scenario.y_train[top1] == pred).double().mean().item()
        assert r.results[name]["identical-class"].values["identical_class"] == pytest.approx(expected)
    spearman = r.agreement.spearman[0][1]
    assert spearman < 0.999, "GAS's scores are TracIn's renormalised, not TracIn's"


# ----------------------------------------------------------------------------- typed results, the task registry


SAVED = sorted((Path(__file__).resolve().parents[1] / "docs" / "report").glob("*.json"))


def _saved_runs():
    """Every evaluation document the report saved (written by the dict-building code before the typed results)."""
    for path in SAVED:
        doc = json.loads(path.read_text())
        yield from ((path.name, r) for r in doc.get("runs", []) + [r for c in doc.get("c_sweep", []) for r in c["runs"]])


def test_saved_documents_read_back_to_the_same_json():
    runs = list(_saved_runs())
    assert len(runs) > 20  # the report's sections: dualview, mislabel, backdoor, lds, ...
    for name, doc in runs:
        result = EvaluationResult.from_json(doc)
        assert result.to_json() == doc, name
        assert result.scenario == doc["scenario"] and result.settings == Settings(**doc["settings"])
        for m, row in doc["results"].items():
            for t, r in row.items():
                assert result.entry(m, t).ok == (r["status"] == "ok")
                if r["status"] == "ok":
                    assert result.headline(m, t) == r["values"][TASKS[t].headline]
                else:
                    assert result.value(m, t, TASKS[t].headline) is None
                    assert result.entry(m, t).reason == r.get("reason", r.get("error"))


def test_fresh_result_json_keeps_the_document_shape(noisy, tmp_path):
    scenario, trained = noisy
    r = evaluate(scenario, trained, ["representer", "loss", "random"], settings=Settings(n_test=10),
                 cache=Cache(tmp_path))
    doc = r.to_json()
    assert list(doc) == ["scenario", "seed", "model", "settings", "tasks", "results", "methods", "agreement"]
    assert list(doc["model"]) == ["arch", "key", "test_acc", "attack_success"]
    assert doc["settings"] == {"n_test": 10, "k": 10, "n_triggered": 20, "lds_test": 50, "lds_subsets": 20,
                               "lds_alpha": 0.5, "seed": 0}
    assert doc["tasks"]["mislabel"] == {"title": "Mislabel detection", "description": TASKS["mislabel"].description,
                                        "applies": True, "higher_is_better": TASKS["mislabel"].higher_is_better}
    ok = doc["results"]["representer"]["mislabel"]
    assert list(ok) == ["status", "values", "seconds", "cache", "tensors", "curve"]
    assert ok["tensors"] == ["curve", "ranking"] and len(ok["curve"]) == 2 and len(ok["curve"][0]) == 101
    assert list(doc["results"]["representer"]["identical-class"]) == ["status", "values", "seconds", "cache", "tensors"]
    assert list(doc["results"]["loss"]["identical-class"]) == ["status", "reason"]
    assert list(doc["methods"]["loss"]) == ["title", "baseline", "params", "fit_seconds", "fit_status",
                                            "load_seconds", "info"]
    assert list(doc["agreement"]) == ["methods", "k", "spearman", "top_k_overlap"]
    # JSON text in, the same document and the same typed result out
    again = EvaluationResult.from_json(json.loads(json.dumps(doc)))
    assert again.to_json() == doc and again == r
    r.seconds, r.extra["when"] = 1.5, "today"
    assert list(r.to_json())[-2:] == ["seconds", "when"] and EvaluationResult.from_json(r.to_json()) == r
    one = evaluate(scenario, trained, ["random"], tasks=["mislabel"], cache=Cache(tmp_path))
    assert one.agreement is None and one.to_json()["agreement"] == {}
    assert one.best("mislabel", ("auroc",)) is None  # random is a baseline
    assert r.best("mislabel", ("auroc",)) == "representer"


def _positive_share(ctx, method):
    """A made-up task: the share of positive scores of the clean draw."""
    x, pred = ctx.clean
    s = ctx.scores(method, "clean", x, pred)
    return {"positive": float((s > 0).double().mean()), "n_test": len(x)}, Kept()


def test_a_registered_task_reaches_the_cli_the_table_and_the_evaluate_page(noisy, tmp_path, monkeypatch, capsys):
    from explorer import evaluate as page

    scenario, trained = noisy
    monkeypatch.setitem(TASKS, "positive-share", Task(
        "positive-share", "Positive share", "pos. share", "positive", "how many scores are positive",
        _positive_share, higher_is_better={"positive": True}))
    assert "positive-share" in tasks_for(scenario)  # any scenario, by default
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "positive-share" in " ".join(capsys.readouterr().out.split())
    r = evaluate(scenario, trained, ["representer", "loss"], tasks=["positive-share"], settings=Settings(n_test=10),
                 cache=Cache(tmp_path))
    x_ids = torch.randperm(60, generator=torch.Generator().manual_seed(1))[:10].sort().values  # seed 0, salt 1
    x = scenario.x_test[x_ids]
    s = create("representer", trained, TrainingData.of(scenario), cache=Cache(tmp_path)).fit().scores(
        x, predict(trained.model, x).argmax(1))
    assert r.headline("representer", "positive-share") == pytest.approx((s > 0).double().mean().item())
    assert r.entry("loss", "positive-share").status == "n/a"
    text = table(r)
    assert "pos. share" in text and f"{(s > 0).double().mean().item():.3f}" in text
    assert EvaluationResult.from_json(r.to_json()).to_json() == r.to_json()
    page._table(r, scenario.spec.dataset, ["positive-share"])  # the page's table and chart: no KeyError
    page._bars(r, scenario.spec.dataset, "positive-share")
