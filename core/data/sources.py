"""Raw data sets: the embedded subsets in ``assets/`` or a full copy from a directory.

Every loader returns a :class:`RawData` of numpy arrays, checked for shape, dtype and label
range before anything else sees it. Accepted layouts of a data directory:

- images, attrex/Keras style: ``mnist.npz``, ``fashion_mnist.npz``, ``cifar10.npz`` with
  ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 images, ``N×28×28`` or
  ``N×32×32×3``) and optionally ``class_names``;
- images, torchvision's layout: ``MNIST/raw/*-ubyte[.gz]``, ``FashionMNIST/raw/*-ubyte[.gz]``,
  ``cifar-10-batches-bin/*.bin`` or ``cifar-10-batches-py/`` (read with an unpickler that
  accepts numpy arrays and plain containers only, never arbitrary objects);
- AG News: ``ag_news.jsonl.gz`` (attrex/shared layout) or the official ``train.csv`` and
  ``test.csv`` (class 1-4, title, description), also inside ``ag_news_csv/``.

No archive is ever opened with ``allow_pickle=True``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import AttrexError

ASSETS = Path(__file__).resolve().parents[2] / "assets"


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is: its modality, input shape and classes."""

    name: str
    kind: str  # "image" or "text"
    shape: tuple[int, ...]  # one sample: (C, H, W) for images, () for text
    class_names: tuple[str, ...]
    npz_name: str = ""
    torchvision_dir: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "image", (1, 28, 28), tuple(str(i) for i in range(10)), "mnist.npz", "MNIST"),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "image", (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "fashion_mnist.npz", "FashionMNIST",
    ),
    "cifar10": DatasetInfo(
        "cifar10", "image", (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "cifar10.npz", "cifar-10-batches-py",
    ),
    "agnews": DatasetInfo("agnews", "text", (), ("World", "Sports", "Business", "Sci/Tech")),
}


@dataclass
class RawData:
    """A data set as loaded: images ``uint8`` in ``N×C×H×W``, or texts; labels ``int64``."""

    info: DatasetInfo
    y_train: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    texts_train: list[str] = field(default_factory=list)
    texts_test: list[str] = field(default_factory=list)
    source: str = ""
    names_train: list[str] = field(default_factory=list)  # a file name per training point (image folders)


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise AttrexError(f"unknown data set {name!r}; accepted: {', '.join(DATASETS)}")
    return DATASETS[name]


def load(name: str, data_dir: str | Path | None = None) -> RawData:
    """Load data set ``name`` from the embedded assets (``data_dir=None``) or from a directory."""
    info = dataset_info(name)
    if data_dir is None:
        root, label = ASSETS, "embedded assets"
    else:
        root = Path(data_dir).expanduser()
        label = str(root)
        if not root.is_dir():
            raise AttrexError(
                f"data directory {str(root)!r} does not exist or is not a directory; pass a folder "
                f"holding {_accepted_layouts(info)}"
            )
    raw = _load_text(info, root) if info.kind == "text" else _load_images(info, root)
    raw.source = label
    _check(raw)
    return raw


def _accepted_layouts(info: DatasetInfo) -> str:
    if info.kind == "text":
        return "ag_news.jsonl.gz, or train.csv and test.csv (optionally inside ag_news_csv/)"
    if info.name == "cifar10":
        return "cifar10.npz, cifar-10-batches-bin/ or cifar-10-batches-py/"
    return f"{info.npz_name} or {info.torchvision_dir}/raw/*-ubyte[.gz]"


# ----------------------------------------------------------------------------- images


def _load_images(info: DatasetInfo, root: Path) -> RawData:
    npz = root / info.npz_name
    if npz.is_file():
        return _images_from_npz(info, npz)
    if info.name == "cifar10":
        if (root / "cifar-10-batches-bin").is_dir():
            return _cifar_bin(info, root / "cifar-10-batches-bin")
        if (root / "cifar-10-batches-py").is_dir():
            return _cifar_py(info, root / "cifar-10-batches-py")
    elif (root / info.torchvision_dir / "raw").is_dir():
        return _idx_dir(info, root / info.torchvision_dir / "raw")
    raise AttrexError(f"no {info.name} data found in {str(root)!r}; expected {_accepted_layouts(info)}")


def _images_from_npz(info: DatasetInfo, path: Path) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
            if missing:
                raise AttrexError(f"{path} lacks the arrays {sorted(missing)}; it must hold x_train, y_train, x_test, y_test")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except AttrexError:
        raise
    except Exception as exc:  # zip errors, object arrays refused without pickle, ...
        raise AttrexError(f"cannot read {path} as a numpy archive of plain arrays: {exc}") from exc
    return RawData(
        info,
        x_train=_to_nchw(arrays["x_train"], info, f"{path.name}:x_train"),
        x_test=_to_nchw(arrays["x_test"], info, f"{path.name}:x_test"),
        y_train=_labels(arrays["y_train"], f"{path.name}:y_train"),
        y_test=_labels(arrays["y_test"], f"{path.name}:y_test"),
    )


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise AttrexError(f"{what} has dtype {y.dtype}; labels must be integers")
    return y.astype(np.int64)


def _to_nchw(x: np.ndarray, info: DatasetInfo, what: str) -> np.ndarray:
    """Accept ``N×H×W`` (grey), ``N×H×W×C`` or ``N×C×H×W``; return uint8 ``N×C×H×W``."""
    c, h, w = info.shape
    if x.dtype != np.uint8:
        raise AttrexError(f"{what} has dtype {x.dtype}; expected uint8 pixel values 0-255")
    if x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        return x[:, None]
    if x.ndim == 4 and x.shape[1:] == (h, w, c):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 4 and x.shape[1:] == (c, h, w):
        return x
    accepted = f"N×{h}×{w}" if c == 1 else f"N×{h}×{w}×{c} or N×{c}×{h}×{w}"
    raise AttrexError(f"{what} has shape {tuple(x.shape)}; {info.name} needs images of shape {accepted}")


def _read_idx(path: Path) -> np.ndarray:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise AttrexError(f"cannot read {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise AttrexError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise AttrexError(f"{path} is truncated: header says {dims}, body holds {body.size} bytes")
    return body.reshape(dims)


def _idx_dir(info: DatasetInfo, raw: Path) -> RawData:
    def find(stem: str) -> Path:
        for candidate in (raw / stem, raw / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        raise AttrexError(f"{raw} lacks {stem}[.gz]; torchvision's layout has train-images-idx3-ubyte, "
                          "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")

    return RawData(
        info,
        x_train=_to_nchw(_read_idx(find("train-images-idx3-ubyte")), info, "train-images"),
        y_train=_read_idx(find("train-labels-idx1-ubyte")).astype(np.int64),
        x_test=_to_nchw(_read_idx(find("t10k-images-idx3-ubyte")), info, "t10k-images"),
        y_test=_read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64),
    )


def _cifar_bin(info: DatasetInfo, folder: Path) -> RawData:
    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for n in names:
            path = folder / n
            if not path.is_file():
                raise AttrexError(f"{folder} lacks {n}; the binary CIFAR-10 layout has data_batch_1..5.bin and test_batch.bin")
            rec = np.frombuffer(path.read_bytes(), dtype=np.uint8)
            if rec.size % 3073:
                raise AttrexError(f"{path} is not a CIFAR-10 binary batch (size {rec.size} is not a multiple of 3073)")
            parts.append(rec.reshape(-1, 3073))
        rec = np.concatenate(parts)
        return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), rec[:, 0].astype(np.int64)

    x_tr, y_tr = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    x_te, y_te = read(["test_batch.bin"])
    return RawData(info, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, strings and numbers; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _cifar_py(info: DatasetInfo, folder: Path) -> RawData:
    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            path = folder / n
            if not path.is_file():
                raise AttrexError(f"{folder} lacks {n}; torchvision's CIFAR-10 layout has data_batch_1..5 and test_batch")
            try:
                batch = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
                xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch["labels"], dtype=np.int64))
            except Exception as exc:
                raise AttrexError(f"cannot read {path} as a CIFAR-10 batch: {exc}") from exc
            if len(xs[-1]) != len(ys[-1]):
                raise AttrexError(f"{path} holds {len(xs[-1])} images but {len(ys[-1])} labels")
        return np.concatenate(xs), np.concatenate(ys)

    x_tr, y_tr = read([f"data_batch_{i}" for i in range(1, 6)])
    x_te, y_te = read(["test_batch"])
    return RawData(info, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)


# ----------------------------------------------------------------------------- text


def _load_text(info: DatasetInfo, root: Path) -> RawData:
    jsonl = root / "ag_news.jsonl.gz"
    if jsonl.is_file():
        try:
            with gzip.open(jsonl, "rt", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            split = {"train": ([], []), "test": ([], [])}
            for r in rows:
                texts, labels = split[r["split"]]
                texts.append(str(r["text"]))
                labels.append(int(r["label"]))
        except Exception as exc:
            raise AttrexError(f"cannot read {jsonl}: each line must be JSON with text, label and split (train/test): {exc}") from exc
        (t_tr, y_tr), (t_te, y_te) = split["train"], split["test"]
    else:
        folder = root / "ag_news_csv" if (root / "ag_news_csv").is_dir() else root
        if not (folder / "train.csv").is_file() or not (folder / "test.csv").is_file():
            raise AttrexError(f"no AG News data found in {str(root)!r}; expected {_accepted_layouts(info)}")
        t_tr, y_tr = _agnews_csv(folder / "train.csv")
        t_te, y_te = _agnews_csv(folder / "test.csv")
    return RawData(info, y_train=np.asarray(y_tr, np.int64), y_test=np.asarray(y_te, np.int64),
                   texts_train=t_tr, texts_test=t_te)


def _agnews_csv(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if len(row) != 3 or not row[0].strip().isdigit():
                raise AttrexError(f"{path}:{lineno}: expected 3 columns (class 1-4, title, description)")
            labels.append(int(row[0]) - 1)
            texts.append(f"{row[1]} {row[2]}")
    return texts, labels


# ----------------------------------------------------------------------------- checks


def _check(raw: RawData) -> None:
    k = len(raw.info.class_names)
    for split, y in (("train", raw.y_train), ("test", raw.y_test)):
        x = raw.x_train if split == "train" else raw.x_test
        n = len(raw.texts_train if split == "train" else raw.texts_test) if raw.info.kind == "text" else len(x)
        if y.ndim != 1 or len(y) != n:
            raise AttrexError(f"{raw.info.name} {split}: {n} inputs but labels of shape {tuple(y.shape)}")
        if n == 0:
            raise AttrexError(f"{raw.info.name} {split} split is empty")
        if y.min() < 0 or y.max() >= k:
            raise AttrexError(f"{raw.info.name} {split} labels span {y.min()}..{y.max()}; expected 0..{k - 1}")


def download(name: str, root: str | Path) -> Path:
    """Fetch ``name`` with torchvision's downloader into ``root`` (needs internet); return ``root``.

    The files land in torchvision's layout, which :func:`load` reads. AG News has no
    torchvision downloader: put ``train.csv`` and ``test.csv`` in the folder by hand.
    """
    info = dataset_info(name)
    if info.kind == "text":
        raise AttrexError("AG News has no downloader here: place the official train.csv and test.csv in the data directory")
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        if name == "cifar10":
            # fetch and check the archive only: torchvision's CIFAR10 class would unpickle the
            # batches with plain pickle; :func:`load` reads them with the arrays-only unpickler
            c = tvd.CIFAR10
            download_and_extract_archive(c.url, str(root), filename=c.filename, md5=c.tgz_md5)
        else:  # the four IDX files into <root>/<MNIST|FashionMNIST>/raw, trying each mirror
            cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}[name]
            raw = Path(root) / cls.__name__ / "raw"
            for filename, md5 in cls.resources:
                for i, mirror in enumerate(cls.mirrors):
                    try:
                        download_and_extract_archive(f"{mirror}{filename}", str(raw), filename=filename, md5=md5)
                        break
                    except OSError:
                        if i == len(cls.mirrors) - 1:
                            raise
    except Exception as exc:  # no network, disk full, checksum mismatch, ...
        raise AttrexError(f"downloading {name} into {root} failed: {exc}") from exc
    return Path(root)
