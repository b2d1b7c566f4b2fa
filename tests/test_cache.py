"""The disk cache: keys, atomic round trip, validation, recovery from corrupt files."""

from __future__ import annotations

import json

import pytest
import torch

from core.cache import Cache, CacheError, make_key


def _compute(calls: list):
    def fn():
        calls.append(1)
        return {"w": torch.arange(6.0).reshape(2, 3), "ids": torch.tensor([3, 1])}, {"note": "x", "n": 2}

    return fn


def _edit_meta(folder, change) -> None:
    record = json.loads((folder / "meta.json").read_text())
    change(record["meta"])
    (folder / "meta.json").write_text(json.dumps(record))


def test_keys_are_content_addressed():
    assert make_key({"a": 1, "b": [1, 2]}, 1) == make_key({"b": [1, 2], "a": 1}, 1)
    assert make_key({"a": 1}, 1) != make_key({"a": 2}, 1)
    assert make_key({"a": 1}, 1) != make_key({"a": 1}, 2)  # code version is part of the key


def test_round_trip_and_hit(tmp_path):
    cache, calls = Cache(tmp_path), []
    a = cache.get_or_compute("thing", "k1", _compute(calls))
    b = cache.get_or_compute("thing", "k1", _compute(calls))
    assert len(calls) == 1 and a.status == "computed" and b.status == "hit"
    assert torch.equal(a.tensors["w"], b.tensors["w"]) and b.meta == {"note": "x", "n": 2}
    assert b.tensors["ids"].dtype == torch.int64


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: (d / "tensors.safetensors").write_bytes(b"garbage"), "checksum"),
        (lambda d: (d / "tensors.safetensors").unlink(), "missing"),
        (lambda d: (d / "meta.json").write_text("{not json"), "unreadable"),
        (lambda d: (d / "meta.json").write_text(json.dumps({**json.loads((d / "meta.json").read_text()), "format": 0})), "format"),
        (lambda d: (d / "meta.json").write_text(json.dumps({**json.loads((d / "meta.json").read_text()), "key": "zz"})), "another artefact"),
        (lambda d: (d / "meta.json").write_text("[]"), "does not hold an artefact record"),
        (lambda d: _edit_meta(d, lambda m: m.update(n=3)), "metadata in meta.json does not match"),
        (lambda d: _edit_meta(d, lambda m: m.pop("note")), "metadata in meta.json does not match"),
    ],
)
def test_corrupt_entry_is_recomputed_with_a_message(tmp_path, damage, reason, caplog):
    cache, calls = Cache(tmp_path), []
    cache.get_or_compute("thing", "k1", _compute(calls))
    damage(cache.path("thing", "k1"))
    with pytest.raises(CacheError, match=reason):
        cache.load("thing", "k1")
    art = cache.get_or_compute("thing", "k1", _compute(calls))
    assert len(calls) == 2
    assert art.status.startswith("recomputed") and reason in art.status
    assert any("recomputing" in r.message for r in caplog.records)
    assert cache.load("thing", "k1").status == "hit"


def test_validation_rejects_stale_content(tmp_path):
    cache, calls = Cache(tmp_path), []
    cache.get_or_compute("thing", "k1", _compute(calls))

    def expect_four_columns(tensors, meta):
        if tensors["w"].shape[1] != 4:
            raise ValueError(f"w has {tensors['w'].shape[1]} columns, expected 4")

    art = cache.get_or_compute("thing", "k1", _compute(calls), validate=expect_four_columns)
    assert "expected 4" in art.status and len(calls) == 2


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    """A write that dies half-way leaves neither a final entry nor a temporary folder."""
    import core.cache

    def dies_half_way(tensors, path):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    cache, calls = Cache(tmp_path), []
    monkeypatch.setattr(core.cache, "save_file", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        cache.get_or_compute("thing", "k2", _compute(calls))
    assert not cache.path("thing", "k2").exists()
    assert list((tmp_path / "thing").iterdir()) == []
    monkeypatch.undo()
    assert cache.get_or_compute("thing", "k2", _compute(calls)).status == "computed"


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTREX_CACHE", str(tmp_path / "here"))
    assert Cache().root == tmp_path / "here"
    monkeypatch.delenv("ATTREX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Cache().root == tmp_path / "xdg" / "attrex"
