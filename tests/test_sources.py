"""Loaders: the embedded subsets, full sets from a directory in every accepted layout, and bad files."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from core.data import build, get_spec, load
from core.errors import AttrexError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    body = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


def _tiny_images(n: int, shape: tuple[int, ...], k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % k


def test_embedded_assets_are_the_real_data():
    raw = load("mnist")
    assert raw.x_train.shape == (6000, 1, 28, 28) and raw.x_train.dtype == np.uint8
    # MNIST digits: dark background, bright strokes; mean pixel close to the published 0.1307
    assert 0.11 < raw.x_train.mean() / 255 < 0.15
    cifar = load("cifar10")
    assert cifar.x_train.shape == (5000, 3, 32, 32)
    text = load("agnews")
    assert len(text.texts_train) == 6000 and len(text.texts_test) == 1600


def test_npz_directory_layout(tmp_path):
    x, y = _tiny_images(40, (28, 28))
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    sc = build(get_spec("mnist", data_dir=str(tmp_path)))
    assert sc.x_train.shape == (40, 1, 28, 28)
    assert np.allclose(sc.x_train[:, 0].numpy() * 255, x)
    assert sc.source == str(tmp_path)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_torchvision_idx_layout(tmp_path, suffix):
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    x, y = _tiny_images(30, (28, 28))
    _idx(raw_dir / f"train-images-idx3-ubyte{suffix}", x)
    _idx(raw_dir / f"train-labels-idx1-ubyte{suffix}", y)
    _idx(raw_dir / f"t10k-images-idx3-ubyte{suffix}", x[:10])
    _idx(raw_dir / f"t10k-labels-idx1-ubyte{suffix}", y[:10])
    raw = load("fashion-mnist", tmp_path)
    assert raw.x_train.shape == (30, 1, 28, 28) and np.array_equal(raw.x_train[:, 0], x)
    assert np.array_equal(raw.y_test, y[:10])


def test_corrupt_idx_file(tmp_path):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw_dir / f"{stem}.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(AttrexError, match="cannot read"):
        load("mnist", tmp_path)


def test_cifar_binary_and_python_layouts(tmp_path):
    x, y = _tiny_images(20, (3, 32, 32))
    (tmp_path / "cifar-10-batches-bin").mkdir()
    (tmp_path / "cifar-10-batches-py").mkdir()
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        part = slice(i * 3, i * 3 + 3)
        rec = np.concatenate([y[part, None].astype(np.uint8), x[part].reshape(3, -1)], axis=1)
        (tmp_path / "cifar-10-batches-bin" / f"{name}.bin").write_bytes(rec.tobytes())
        batch = {"data": x[part].reshape(3, -1), "labels": [int(v) for v in y[part]]}
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(batch))
    raw_bin = load("cifar10", tmp_path)
    assert raw_bin.x_train.shape == (15, 3, 32, 32) and np.array_equal(raw_bin.x_train, x[:15])
    (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").unlink()
    import shutil

    shutil.rmtree(tmp_path / "cifar-10-batches-bin")
    raw_py = load("cifar10", tmp_path)
    assert np.array_equal(raw_py.x_train, x[:15]) and np.array_equal(raw_py.y_test, y[15:18])


def test_untrusted_pickle_is_refused_and_never_runs(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    flag = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (flag,))

    for name in [f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(AttrexError, match="refusing to load"):
        load("cifar10", tmp_path)
    assert not flag.exists()


@pytest.mark.parametrize("subfolder", ["ag_news_csv", ""])
def test_agnews_csv_layout(tmp_path, subfolder):
    folder = tmp_path / subfolder
    folder.mkdir(exist_ok=True)
    rows = [f'"{c}","Title {i}","Body of story {i}"' for i, c in enumerate([1, 2, 3, 4] * 3)]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    (folder / "test.csv").write_text("\n".join(rows[:4]) + "\n")
    raw = load("agnews", tmp_path)
    assert raw.y_train.tolist() == [0, 1, 2, 3] * 3
    assert raw.texts_test[0] == "Title 0 Body of story 0"


@pytest.mark.skipif(not (SHARED / "mnist.npz").is_file(), reason="the full data sets in ../shared/data are absent")
def test_full_mnist_from_the_shared_copy():
    raw = load("mnist", SHARED)
    assert raw.x_train.shape == (60000, 1, 28, 28) and len(raw.y_test) == 10000


def test_missing_directory_and_missing_files(tmp_path):
    with pytest.raises(AttrexError, match="does not exist"):
        load("mnist", tmp_path / "nope")
    with pytest.raises(AttrexError, match="mnist.npz or MNIST/raw"):
        load("mnist", tmp_path)
    with pytest.raises(AttrexError, match="ag_news.jsonl.gz"):
        load("agnews", tmp_path)


def test_wrong_shape_wrong_dtype_and_bad_labels(tmp_path):
    x, y = _tiny_images(10, (27, 27))
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(AttrexError, match=r"shape \(10, 27, 27\).*N×28×28"):
        load("mnist", tmp_path)
    x, y = _tiny_images(10, (28, 28))
    np.savez(tmp_path / "mnist.npz", x_train=x.astype(np.float32), y_train=y, x_test=x, y_test=y)
    with pytest.raises(AttrexError, match="dtype float32"):
        load("mnist", tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y + 10, x_test=x, y_test=y)
    with pytest.raises(AttrexError, match="labels span"):
        load("mnist", tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y[:5], x_test=x, y_test=y)
    with pytest.raises(AttrexError, match="10 inputs but labels"):
        load("mnist", tmp_path)
    (tmp_path / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(AttrexError, match="cannot read"):
        load("mnist", tmp_path)


def test_object_arrays_are_not_unpickled(tmp_path):
    x, y = _tiny_images(4, (28, 28))
    np.savez(tmp_path / "mnist.npz", x_train=np.array([object()] * 4, dtype=object), y_train=y, x_test=x, y_test=y)
    with pytest.raises(AttrexError, match="cannot read"):
        load("mnist", tmp_path)


def test_agnews_jsonl_from_a_directory(tmp_path):
    rows = [{"text": f"story {i}", "label": i % 4, "split": "train" if i < 8 else "test"} for i in range(12)]
    with gzip.open(tmp_path / "ag_news.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    sc = build(get_spec("agnews", data_dir=str(tmp_path)))
    assert sc.texts_train[3] == "story 3" and len(sc.y_test) == 4


def test_non_integer_labels(tmp_path):
    x, y = _tiny_images(4, (28, 28))
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y.astype(str), x_test=x, y_test=y)
    with pytest.raises(AttrexError, match="labels must be integers"):
        load("mnist", tmp_path)


def test_jsonl_with_bad_rows(tmp_path):
    with gzip.open(tmp_path / "ag_news.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"text": "x", "label": 0}) + "\n")
    with pytest.raises(AttrexError, match="split"):
        load("agnews", tmp_path)
