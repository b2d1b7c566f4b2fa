"""The command line: JSON output, cache hits, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point, as a user runs it (the session's cache through ATTREX_CACHE)."""
    return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)


def test_scenarios_json_lists_every_preset_with_ground_truth():
    out = _run("scenarios", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    by_name = {s["name"]: s for s in doc["scenarios"]}
    assert by_name["mnist-noisy"]["ground_truth"]["flipped"] == 600
    assert by_name["mnist-backdoor"]["ground_truth"]["poisoned"] == 300
    assert by_name["agnews-backdoor"]["ground_truth"]["trigger_token"] == "cf"
    assert by_name["mnist-mark"]["ground_truth"]["mark_class"] == 2
    assert by_name["cifar10"]["default_arch"] == "resnet-small"


def test_prepare_json_second_call_from_cache(mnist_trained):
    out = _run("prepare", "--scenario", "mnist", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # exactly one JSON document on stdout
    assert doc["scenario"] == "mnist" and doc["n_train"] == 6000
    assert doc["model"]["cache"] == "hit" and doc["model"]["key"] == mnist_trained.key
    assert doc["model"]["test_accuracy"] == pytest.approx(mnist_trained.test_accuracy)
    assert len(doc["model"]["checkpoints"]) == 5
    assert doc["seconds"] < 10


def test_prepare_human_output_reports_attack_success(capsys, tmp_path):
    code = main(["prepare", "--scenario", "mnist-backdoor", "--n-train", "300", "--n-test", "100", "--epochs", "1",
                 "--cache-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "attack success" in out and "test accuracy" in out and "poisoned" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["prepare", "--scenario", "mnist-bogus"], "unknown scenario 'mnist-bogus'"),
        (["prepare", "--scenario", "mnist", "--data-dir", "/definitely/not/here"], "does not exist"),
        (["prepare", "--scenario", "mnist", "--epochs", "0"], "epochs must be a positive integer"),
        (["prepare", "--scenario", "mnist", "--download"], "--download needs --data-dir"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
