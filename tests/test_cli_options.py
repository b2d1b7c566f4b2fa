"""``attrex evaluate``'s options are generated from :class:`core.evaluation.Settings`: one per field, its default."""

from __future__ import annotations

import dataclasses

import pytest

from core.cli import SETTINGS_OPTIONS, make_parser, settings_of
from core.evaluation import Settings

BASE = ["evaluate", "--scenario", "mnist", "--methods", "loss"]


def _evaluate_actions() -> dict[str, object]:
    sub = next(a for a in make_parser()._actions if a.dest == "command")
    return {s: a for a in sub.choices["evaluate"]._actions for s in a.option_strings}


def test_every_settings_field_has_an_option_with_its_default():
    actions = _evaluate_actions()
    for f in dataclasses.fields(Settings):
        flag = SETTINGS_OPTIONS[f.name][0]
        assert actions[flag].default == f.default and actions[flag].type is type(f.default), f.name
    assert settings_of(make_parser().parse_args(BASE)) == Settings()


def test_the_options_keep_their_names():
    args = make_parser().parse_args(BASE + ["--points", "7", "--triggered", "4", "--top-k", "3", "--lds-points", "9",
                                            "--lds-subsets", "5", "--lds-alpha", "0.25", "--eval-seed", "2"])
    assert settings_of(args) == Settings(n_test=7, n_triggered=4, k=3, lds_test=9, lds_subsets=5, lds_alpha=0.25,
                                         seed=2)


def test_a_settings_field_without_an_option_is_a_programming_error(monkeypatch):
    monkeypatch.delitem(SETTINGS_OPTIONS, "seed")
    with pytest.raises(RuntimeError, match="differ"):
        make_parser()
