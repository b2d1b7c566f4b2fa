"""Uploads (core.data.uploads): what a browser sends is checked, unpacked safely and kept per session."""

from __future__ import annotations

import gc
import io
import json
import os
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core.data import build, custom, uploads
from core.data.scenario import custom_spec
from core.errors import AttrexError
from core.models import ModelSource, predict, train
from core.models.custom import read_checkpoints


def _zip(entries: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    """A zip of ``entries`` (name -> bytes); ``modes`` sets an entry's Unix mode (a link, a device ...)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (modes or {}).get(name, stat.S_IFREG | 0o644) << 16
            z.writestr(info, data)
    return buf.getvalue()


def _folder_zip(folder: Path, wrap: str = "") -> bytes:
    return _zip({wrap + str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})


@pytest.fixture
def holder(tmp_path):
    folder = uploads.UploadFolder(tmp_path / "cache")
    yield folder
    folder.remove()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from _userdata import image_folder

    return image_folder(tmp_path_factory.mktemp("digits") / "digits", per_class=6)


@pytest.mark.parametrize("wrap", ["", "digits/"])
def test_a_zipped_image_folder_reads_as_the_folder_itself(digits, holder, wrap):
    root = uploads.store_data("digits.zip", _folder_zip(digits, wrap), holder)
    a, b = custom.load(digits), custom.load(root)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert np.array_equal(a.x_test, b.x_test) and a.names_train == b.names_train
    assert root.is_relative_to(holder.path)


def test_the_same_upload_in_two_folders_is_the_same_data(digits, tmp_path):
    """A person's data is named by its content, so an upload finds the models trained on the same files before."""
    one, two = uploads.UploadFolder(tmp_path / "c"), uploads.UploadFolder(tmp_path / "c")
    try:
        paths = [uploads.store_data("d.zip", _folder_zip(digits), f) for f in (one, two)]
        assert paths[0] != paths[1]
        a, b = (build(custom_spec(str(p))) for p in paths)
        assert a.fingerprint == b.fingerprint
    finally:
        one.remove()
        two.remove()


@pytest.mark.parametrize("name, mode, why", [
    ("/etc/evil.png", None, "absolute"),
    ("../evil.png", None, "outside"),
    ("cls/../../evil.png", None, "outside"),
    ("C:/evil.png", None, "absolute"),
    ("cls\\evil.png", None, "absolute"),
    ("cls/link.png", stat.S_IFLNK | 0o777, "a link"),
    ("cls/dev.png", stat.S_IFCHR | 0o600, "a device"),
    ("cls/fifo.png", stat.S_IFIFO | 0o600, "a device"),
    ("cls/run.py", None, "not one of"),
])
def test_a_hostile_zip_entry_refuses_the_whole_upload_and_writes_nothing(holder, name, mode, why):
    data = _zip({"a/0.png": b"x", "b/0.png": b"y", name: b"payload"}, {name: mode} if mode else None)
    with pytest.raises(AttrexError, match=why):
        uploads.store_data("data.zip", data, holder)
    assert not any((holder.path / "data").iterdir())


def test_zip_limits_on_files_and_unpacked_bytes(holder):
    many = _zip({f"c{i % 2}/{i}.png": b"" for i in range(11)})
    with pytest.raises(AttrexError, match="11 entries; at most 10"):
        uploads.store_data("m.zip", many, holder, uploads.Limits(files=10))
    bomb = _zip({"a/0.png": bytes(3 * 2**20)})  # 3 MB of zeros deflate to a few KB
    assert len(bomb) < 2**20 // 10
    with pytest.raises(AttrexError, match="more than 1 MB"):
        uploads.store_data("b.zip", bomb, holder, uploads.Limits(unpacked_mb=1))
    with pytest.raises(AttrexError, match="at most 1 MB"):
        uploads.store_data("big.csv", bytes(2 * 2**20), holder, uploads.Limits(upload_mb=1))


def test_hidden_files_and_macos_folders_are_skipped(digits, holder):
    entries = {str(p.relative_to(digits)): p.read_bytes() for p in digits.rglob("*.png")}
    entries |= {"__MACOSX/digit0/._00001.png": b"junk", "digit0/.DS_Store": b"junk"}
    root = uploads.store_data("d.zip", _zip(entries), holder)
    assert len(custom.load(root).names_train) == len(custom.load(digits).names_train)


@pytest.mark.parametrize("name, data, why", [
    ("a.zip", b"not a zip", "not a readable zip"),
    ("a.tar", b"x", "must be a .zip or .csv"),
    ("a.csv", b"", "empty"),
])
def test_bad_data_files_are_refused(holder, name, data, why):
    with pytest.raises(AttrexError, match=why):
        uploads.store_data(name, data, holder)


def test_texts_and_arrays_are_stored_under_a_fixed_name(holder):
    path = uploads.store_data("../../my texts.csv", b"text,label\na b,x\nc d,y\ne f,x\ng h,y\n", holder)
    assert path == holder.path / "data" / "data.csv"
    assert custom.load(path).info.kind == "text"


def test_weights_are_safetensors_only(holder, tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with pytest.raises(AttrexError, match="safetensors") as exc:
        uploads.store_weights("model.pt", buf.getvalue(), holder)
    assert "weights_only" not in str(exc.value)
    with pytest.raises(AttrexError, match="not a safetensors file"):
        uploads.store_weights("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage", holder)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    path = uploads.store_weights("w.safetensors", (tmp_path / "w.safetensors").read_bytes(), holder)
    assert path.is_relative_to(holder.path)


def test_checkpoints_zip_needs_its_list_and_safetensors_only(holder, tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "e1.safetensors"))
    st_bytes = (tmp_path / "e1.safetensors").read_bytes()
    listed = json.dumps([{"file": "e1.safetensors", "lr": 0.1}]).encode()
    with pytest.raises(AttrexError, match="lacks checkpoints.json"):
        uploads.store_checkpoints("c.zip", _zip({"e1.safetensors": st_bytes}), holder)
    with pytest.raises(AttrexError, match="not one of"):
        uploads.store_checkpoints("c.zip", _zip({"checkpoints.json": listed, "e1.pt": b"pickle"}), holder)
    root = uploads.store_checkpoints("c.zip", _zip({"ck/checkpoints.json": listed, "ck/e1.safetensors": st_bytes}),
                                     holder)
    assert [p.name for p, _ in read_checkpoints(root)] == ["e1.safetensors"]


def test_a_checkpoint_list_cannot_point_outside_its_folder(tmp_path):
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "checkpoints.json").write_text(json.dumps([{"file": "../outside.safetensors", "lr": 0.1}]))
    with pytest.raises(AttrexError, match="must lie in the checkpoint folder"):
        read_checkpoints(folder)


def test_an_upload_folder_goes_with_its_holder_and_old_orphans_are_swept(tmp_path):
    root = tmp_path / "cache"
    kept, dropped = uploads.UploadFolder(root), uploads.UploadFolder(root)
    path = dropped.path
    del dropped
    gc.collect()
    assert not path.exists()  # the session's state was dropped: its uploads go with it
    orphan = root / uploads.UPLOADS / ("0" * 32)
    orphan.mkdir()
    old = time.time() - uploads.MAX_AGE - 60
    for p in (orphan, kept.path):
        os.utime(p, (old, old))
    assert uploads.sweep(root) == 1
    assert not orphan.exists() and kept.path.exists()  # a live session's folder stays, however old
    kept.remove()
    assert not kept.path.exists()


def test_uploaded_weights_of_an_attrex_architecture_load_as_that_model(mnist, mnist_trained, tmp_path, holder):
    weights = tmp_path / "final.safetensors"
    save_file({k: v.contiguous() for k, v in mnist_trained.model.state_dict().items()}, str(weights))
    stored = uploads.store_weights("final.safetensors", weights.read_bytes(), holder)
    loaded = train(mnist, ModelSource("attrex:cnn", str(stored)))
    assert torch.equal(predict(loaded.model, mnist.x_test[:50]), predict(mnist_trained.model, mnist.x_test[:50]))
    assert not loaded.retrainable and type(loaded.model) is type(mnist_trained.model)
    with pytest.raises(AttrexError, match="names no architecture"):
        ModelSource("attrex:nonsense", str(stored))
    with pytest.raises(AttrexError, match="belong to another model"):
        train(mnist, ModelSource("attrex:mlp", str(stored)))
