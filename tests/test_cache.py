"""The disk cache: keys, atomic round trip, validation, recovery from corrupt files."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import core.cache
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


def _entries(folder) -> list[str]:
    """The names in a kind's folder, lock files aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    """A write that dies half-way leaves neither a final entry nor a temporary folder; the result is still served."""
    def dies_half_way(tensors, path):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    cache, calls = Cache(tmp_path), []
    monkeypatch.setattr(core.cache, "save_file", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        cache.save("thing", "k2", *_compute(calls)())
    art = cache.get_or_compute("thing", "k2", _compute(calls))
    assert art.status == "computed; not saved: disk full" and torch.equal(art.tensors["ids"], torch.tensor([3, 1]))
    assert not cache.path("thing", "k2").exists()
    assert _entries(tmp_path / "thing") == []
    monkeypatch.undo()
    assert cache.get_or_compute("thing", "k2", _compute(calls)).status == "computed"


def test_entry_that_is_a_file_is_replaced(tmp_path):
    cache, calls = Cache(tmp_path), []
    cache.path("thing", "k1").parent.mkdir(parents=True)
    cache.path("thing", "k1").write_text("not a folder")
    art = cache.get_or_compute("thing", "k1", _compute(calls))
    assert art.status == "recomputed: the entry is a file, not a folder" and art.tensors["w"].shape == (2, 3)
    assert cache.get_or_compute("thing", "k1", _compute(calls)).status == "hit" and len(calls) == 1


def test_linked_entries(tmp_path):
    """A link to a sound entry is served; a link to nothing or to something unusable is replaced once."""
    cache, calls = Cache(tmp_path), []
    cache.get_or_compute("thing", "real", _compute(calls))
    (tmp_path / "thing" / "k1").symlink_to(cache.path("thing", "real"))
    assert cache.get_or_compute("thing", "k1", _compute(calls)).status.startswith("recomputed: its metadata names")
    (tmp_path / "thing" / "k2").symlink_to(tmp_path / "nowhere")
    assert cache.get_or_compute("thing", "k2", _compute(calls)).status == "recomputed: the entry is a link to nothing"
    for key in ("k1", "k2"):
        assert not cache.path("thing", key).is_symlink()
        assert cache.get_or_compute("thing", key, _compute(calls)).status == "hit"
    assert cache.load("thing", "real").status == "hit"  # what the link pointed to is left alone
    shared = tmp_path / "elsewhere"
    cache.path("thing", "real").rename(shared)
    cache.path("thing", "real").symlink_to(shared)
    assert cache.get_or_compute("thing", "real", _compute(calls)).status == "hit"
    assert len(calls) == 3


def _read_only(monkeypatch) -> None:
    """Saving fails as on a read-only file system (the tests run as root, which ignores permission bits)."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(core.cache.tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(core.cache, "_unsaved_roots", set())


def test_read_only_cache_computes_serves_and_warns_once(tmp_path, monkeypatch, caplog):
    _read_only(monkeypatch)
    cache, calls = Cache(tmp_path), []
    for key in ("k1", "k2", "k1"):
        art = cache.get_or_compute("thing", key, _compute(calls))
        assert art.status == "computed; not saved: Read-only file system"
        assert torch.equal(art.tensors["w"], torch.arange(6.0).reshape(2, 3)) and art.meta == {"note": "x", "n": 2}
        assert "results are computed but not kept" in art.messages[0]
    assert len(calls) == 3 and _entries(tmp_path / "thing") == []
    assert sum("not kept" in r.message for r in caplog.records) == 1


def test_no_lock_where_none_can_be_taken(tmp_path, monkeypatch):
    def refuse(fh, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(core.cache.fcntl, "flock", refuse)
    cache, calls = Cache(tmp_path), []
    assert cache.get_or_compute("thing", "k1", _compute(calls)).status == "computed"
    assert cache.get_or_compute("thing", "k1", _compute(calls)).status == "hit"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_really_read_only_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(core.cache, "_unsaved_roots", set())
    tmp_path.chmod(0o555)
    try:
        art = Cache(tmp_path / "cache").get_or_compute("thing", "k1", _compute([]))
        assert art.status == "computed; not saved: Permission denied" and art.tensors["w"].shape == (2, 3)
    finally:
        tmp_path.chmod(0o755)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftovers_of_killed_saves_are_deleted(tmp_path):
    """A temporary folder is deleted once its process is gone, or when old; a live save's is kept."""
    dead = _dead_pid()
    folder = tmp_path / "thing"
    names = {"dead": f".tmp-aaaa-{dead}@{core.cache._HOST}-x1", "live": f".tmp-bbbb-{os.getpid()}@{core.cache._HOST}-x2",
             "old": ".tmp-cccc-x3", "young": ".tmp-dddd-x4", "other-host": f".tmp-eeee-{dead}@elsewhere-x5"}
    for name in names.values():
        (folder / name).mkdir(parents=True)
        (folder / name / "tensors.safetensors").write_bytes(b"\0" * 1000)
    os.utime(folder / names["old"], (time.time() - core.cache.TMP_MAX_AGE - 60,) * 2)
    Cache(tmp_path).get_or_compute("thing", "k1", _compute([]))
    assert _entries(folder) == sorted([names["live"], names["young"], names["other-host"], "k1"])


_CONCURRENT = """
import sys, time, pathlib, torch
from core.cache import Cache, tensor_digest

root, me = pathlib.Path(sys.argv[1]), sys.argv[2]

def compute():
    with open(root / "computes", "a") as fh:
        fh.write(me + "\\n")
    deadline = time.time() + 60
    while len(list(root.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # meanwhile the other process asks for the same artefact
    return {"w": torch.rand(5)}, {"by": me}

(root / f"ready-{me}").touch()
art = Cache(root / "cache").get_or_compute("thing", "slow", compute)
print(tensor_digest(art.tensors["w"]), art.meta["by"], art.status)
"""


@pytest.mark.slow
def test_two_processes_compute_an_artefact_once(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(tmp_path), name], cwd=repo, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len((tmp_path / "computes").read_text().split()) == 1
    (digest_a, by_a, status_a), (digest_b, by_b, status_b) = (out.split() for out, _ in outs)
    assert digest_a == digest_b and by_a == by_b and sorted([status_a, status_b]) == ["computed", "hit"]


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTREX_CACHE", str(tmp_path / "here"))
    assert Cache().root == tmp_path / "here"
    monkeypatch.delenv("ATTREX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Cache().root == tmp_path / "xdg" / "attrex"
