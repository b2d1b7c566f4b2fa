"""Every preset scenario builds bit for bit as it did when the fixture was recorded.

``tests/data/preset_fingerprints.json`` holds, for every preset at seeds 0 and 1, the sha256 of
every tensor of the scenario and of its ground truth (shape, dtype and bytes), of its texts and
vocabulary, and the plain values (class names, target class, trigger token, ...). It was recorded
before the corruptions learnt to plant themselves (``Corruption.plant``), so the refactor is
checked against the scenarios as they were. To record it again (only when a change of the data is
meant), run::

    ATTREX_RECORD_FINGERPRINTS=1 python -m pytest tests/test_preset_fingerprints.py

The image tensors are floats, but every float in them comes from elementwise operations that IEEE
rounds exactly once (``uint8 / 255``, ``torch.where``, ``(1 - a)·x`` then ``+ a·p`` with ``p``
from a seeded CPU generator): no reductions, no matrix products, so no CPU kernel can round them
differently. The uint8 sources are hashed as they are too (``raw``), so a mismatch says whether the
data or the float maths moved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from core.data import PRESETS, build, get_spec
from core.data.scenario import Scenario

FIXTURE = Path(__file__).parent / "data" / "preset_fingerprints.json"
SEEDS = (0, 1)


def _digest(value) -> object:
    """A tensor or a list of texts as a sha256; a plain value as itself (JSON-friendly)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous()
        h = hashlib.sha256(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
        return h.hexdigest()
    if isinstance(value, list):
        return hashlib.sha256(json.dumps(value).encode()).hexdigest()
    if isinstance(value, tuple):
        return list(value)
    return value


def fingerprint(sc: Scenario) -> dict:
    """Every field of the scenario and of its ground truth, digested (the spec and the source path left out)."""
    out = {f"truth.{f.name}": _digest(getattr(sc.truth, f.name)) for f in dataclasses.fields(sc.truth)}
    for f in dataclasses.fields(sc):
        if f.name not in ("spec", "truth", "source"):
            out[f.name] = _digest(getattr(sc, f.name))
    if sc.kind == "image":  # the same images as uint8: the data, free of float rounding
        out["raw"] = {name: _digest(getattr(sc, name).mul(255).round().to(torch.uint8))
                      for name in ("x_train", "x_test") if getattr(sc, name) is not None}
    out["fingerprint"] = sc.fingerprint
    return out


def _key(name: str, seed: int) -> str:
    return f"{name}@{seed}"


def record() -> dict:
    return {_key(name, seed): fingerprint(build(get_spec(name, seed=seed))) for name in PRESETS for seed in SEEDS}


if os.environ.get("ATTREX_RECORD_FINGERPRINTS"):  # pragma: no cover - run by hand, see the module docstring
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")


def test_the_fixture_covers_every_preset():
    recorded = json.loads(FIXTURE.read_text())
    assert set(recorded) == {_key(name, seed) for name in PRESETS for seed in SEEDS}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_is_bit_for_bit_as_recorded(name):
    recorded = json.loads(FIXTURE.read_text())
    for seed in SEEDS:
        now = fingerprint(build(get_spec(name, seed=seed)))
        was = recorded[_key(name, seed)]
        assert set(now) == set(was)
        changed = sorted(k for k in now if now[k] != was[k])
        assert not changed, f"{name} at seed {seed}: {changed} differ from the recorded fixture"
