"""A person's own data set: an image folder, a CSV or JSONL of texts, or ``.npz`` arrays.

:func:`load` reads what ``path`` holds and returns a :class:`~core.data.sources.RawData` the
scenario builder treats like a built-in data set. Accepted layouts:

- **Image folder** (torchvision's ``ImageFolder``): ``DIR/<class>/*.png|jpg|jpeg``, one
  folder per class (sorted names are the classes). A test split is ``DIR/train/<class>/…``
  beside ``DIR/test/<class>/…``; without one, a seeded, per-class ``test_share`` of the
  images is held out. Grey images stay grey (one channel); any colour image makes the set
  RGB. Mixed sizes need ``image_size`` (every image is resized to it, bilinear).
- **Texts**: a ``.csv`` (header with ``text`` and ``label``, optionally ``split``) or a
  ``.jsonl`` (one object per line with the same keys) file, or a folder holding
  ``train.csv|jsonl`` and ``test.csv|jsonl``. Labels are class names or integers; without a
  ``split`` column a ``test_share`` is held out as for images.
- **Arrays**: a ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 images
  ``N×H×W``, ``N×H×W×C`` or ``N×C×H×W`` with C 1 or 3; integer labels) and optionally
  ``class_names``; read with ``allow_pickle=False``.

Training ids follow a fixed order (classes sorted, files sorted by path within a class; rows in
file order), so ids given in a known-bad list (:func:`known_bad`) stay meaningful. Every
problem raises :class:`~core.errors.AttrexError` naming the file and what is accepted; nothing
is ever unpickled.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.data.sources import DatasetInfo, RawData
from core.errors import AttrexError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEXT_SUFFIXES = (".csv", ".jsonl")
MAX_SIDE = 1024  # larger images need image_size: a precompute over them would not fit in memory anyway
MAX_PIXELS = 4096 * 4096  # no image is decoded beyond this, even to be resized (checked before decoding)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def load(path: str | Path, image_size: tuple[int, int] | None = None, test_share: float = 0.2,
         seed: int = 0) -> RawData:
    """The data set at ``path`` (see the module docstring for the layouts).

    Messages name files relative to the data's folder, never echo a file's contents, and an operating
    system error (a folder that cannot be read) is an :class:`AttrexError` saying so, not a traceback.
    """
    try:
        return _load(Path(path).expanduser(), image_size, test_share, seed)
    except OSError as exc:
        raise AttrexError(f"cannot read the data: {exc.strerror or type(exc).__name__.lower()}") from None


def _load(root: Path, image_size: tuple[int, int] | None, test_share: float, seed: int) -> RawData:
    if not root.exists():
        raise AttrexError(f"{str(root)!r} does not exist; pass an image folder, a .csv or .jsonl of texts, or a .npz")
    if not 0 < test_share < 1:
        raise AttrexError(f"the held-out test share must lie in (0, 1); got {test_share!r}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 4 or max(image_size) > MAX_SIDE):
        raise AttrexError(f"image size must be HxW with sides in [4, {MAX_SIDE}]; got {image_size!r}")
    rng = np.random.default_rng(seed)
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == ".npz":
            raw = _npz(root)
        elif suffix in TEXT_SUFFIXES:
            raw = _held_out_texts(_read_texts(root), test_share, rng, root)
        else:
            raise AttrexError(f"{root.name}: a data file must be .npz, .csv or .jsonl; got {suffix or 'no suffix'!r}")
    else:
        raw = _folder(root, image_size, test_share, rng)
    raw.source = str(root.resolve())
    _check(raw)
    return raw


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (or ``"S"`` for a square) as ``(H, W)``."""
    h, sep, w = text.strip().lower().partition("x")
    if not h.strip().isdigit() or (sep and not w.strip().isdigit()):
        raise AttrexError(f"an image size is HxW (e.g. 32x32) or one side for a square; got {text!r}")
    return int(h), int(w if sep else h)


# ----------------------------------------------------------------------------- folders


def _folder(root: Path, image_size, test_share: float, rng: np.random.Generator) -> RawData:
    texts = {split: _find_text(root, split) for split in ("train", "test")}
    if texts["train"]:
        if not texts["test"]:
            return _held_out_texts(_read_texts(texts["train"]), test_share, rng, root)
        (t_tr, l_tr, _), (t_te, l_te, _) = _read_texts(texts["train"]), _read_texts(texts["test"])
        names, y_tr = _classes(l_tr, texts["train"])
        return _text_raw(names, t_tr, y_tr, t_te, _labels_in(l_te, names, texts["test"]))
    singles = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if len(singles) == 1 and not any(p.is_dir() for p in root.iterdir() if not p.name.startswith(".")):
        return _held_out_texts(_read_texts(singles[0]), test_share, rng, singles[0])
    if (root / "train").is_dir():
        names, files_tr, y_tr = _image_folder(root / "train", "train/")
        if (root / "test").is_dir():
            names_te, files_te, y_te = _image_folder(root / "test", "test/")
            outside = sorted(set(names_te) - set(names))
            if outside:
                raise AttrexError(f"test/ has {len(outside)} class folder(s) that train/ lacks")
            y_te = np.asarray([names.index(names_te[c]) for c in y_te], np.int64)
        else:
            files_tr, y_tr, files_te, y_te = _hold_out(files_tr, y_tr, test_share, rng)
    else:
        names, files, y = _image_folder(root, "the data folder")
        files_tr, y_tr, files_te, y_te = _hold_out(files, y, test_share, rng)
    x_tr, x_te, shape = _read_images([files_tr, files_te], image_size, root)
    info = DatasetInfo("custom", "image", shape, tuple(names))
    return RawData(info, y_train=y_tr, y_test=y_te, x_train=x_tr, x_test=x_te,
                   names_train=[str(f.relative_to(root)) for f in files_tr])


def _find_text(root: Path, stem: str) -> Path | None:
    for suffix in TEXT_SUFFIXES:
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    return None


def _image_folder(folder: Path, shown: str) -> tuple[list[str], list[Path], np.ndarray]:
    """Classes, image files and labels of ``folder`` (``shown``: how messages name it)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise AttrexError(f"{shown} holds no class folders; an image folder has one sub-folder per class "
                          "(DIR/<class>/*.png), or a .csv/.jsonl of texts")
    files, labels = [], []
    for c, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith("."))
        files += found
        labels += [c] * len(found)
    if not files:
        raise AttrexError(f"{shown}: the class folders hold no .png, .jpg or .jpeg images")
    return classes, files, np.asarray(labels, np.int64)


def _hold_out(items: Sequence, y: np.ndarray, share: float, rng: np.random.Generator):
    """Split ``items`` into training and test: ``share`` of every class held out (at least one where a class has two)."""
    test = []
    for c in np.unique(y):
        ids = np.flatnonzero(y == c)
        k = min(len(ids) - 1, max(1, round(share * len(ids))))
        test.extend(rng.choice(ids, k, replace=False).tolist() if k > 0 else [])
    test_mask = np.zeros(len(y), bool)
    test_mask[test] = True
    tr, te = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    pick = (lambda ids: [items[i] for i in ids]) if isinstance(items, list) else (lambda ids: items[ids])
    return pick(tr), y[tr], pick(te), y[te]


def _read_images(groups: list[list[Path]], size: tuple[int, int] | None, root: Path):
    """uint8 ``N×C×H×W`` arrays, one per group, and the common ``(C, H, W)``."""
    images: list[list[Image.Image]] = []
    grey = True
    sizes: dict[tuple[int, int], Path] = {}
    for group in groups:
        loaded = []
        for f in group:
            try:
                img = Image.open(f)
                if img.format not in ("PNG", "JPEG"):
                    raise AttrexError(f"{f.relative_to(root)} is {img.format}, not a PNG or JPEG image")
                if img.size[0] * img.size[1] > MAX_PIXELS:
                    raise AttrexError(f"{f.relative_to(root)} is {img.size[0]}×{img.size[1]} pixels; at most "
                                      f"{MAX_PIXELS // 2**20} megapixels an image are read")
                if size is None and max(img.size) > MAX_SIDE:
                    raise AttrexError(f"{f.relative_to(root)} is {img.size[0]}×{img.size[1]} pixels; "
                                      f"pass an image size (at most {MAX_SIDE} a side) to resize")
                img.load()
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
                raise AttrexError(f"cannot read {f.relative_to(root)} as a PNG or JPEG image") from None
            grey &= img.mode in GREY_MODES
            sizes.setdefault(img.size, f)
            loaded.append(img)
        images.append(loaded)
    if size is None and len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise AttrexError(f"the images have {len(sizes)} different sizes (e.g. {fa.relative_to(root)} is {a[0]}×{a[1]}, "
                          f"{fb.relative_to(root)} is {b[0]}×{b[1]}); pass an image size (HxW) to resize them all")
    h, w = size if size is not None else next(iter(sizes))[::-1]
    mode, c = ("L", 1) if grey else ("RGB", 3)
    # 16-bit grey scaled to 8 bits, not clipped (imported here: inputs imports scenario, which imports this module)
    from core.data.inputs import eight_bit

    def array(img: Image.Image) -> np.ndarray:
        img = eight_bit(img).convert(mode)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(img, np.uint8).reshape(h, w, c).transpose(2, 0, 1)

    arrays = [np.stack([array(i) for i in group]) if group else np.zeros((0, c, h, w), np.uint8) for group in images]
    return arrays[0], arrays[1], (c, h, w)


# ----------------------------------------------------------------------------- texts


def _read_texts(path: Path) -> tuple[list[str], list[str], list[str | None]]:
    """``(texts, labels as strings, split per row or None)`` of a CSV (header) or JSONL file."""
    rows: list[dict] = []
    if not path.read_bytes().strip():
        raise AttrexError(f"{path.name} is empty: it holds no rows")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(fh)
                if not reader.fieldnames or not {"text", "label"} <= {f.strip() for f in reader.fieldnames}:
                    raise AttrexError(f"{path.name}: the CSV needs a header with the columns text and label "
                                      f"(optionally split); its first line has {len(reader.fieldnames or [])} "
                                      "column(s), none of them both")
                rows = [{k.strip(): v for k, v in r.items() if k} for r in reader]
            else:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        r = json.loads(line)
                        if not isinstance(r, dict) or "text" not in r or "label" not in r:
                            raise AttrexError(f"{path.name}:{lineno}: each line must be a JSON object with text and label")
                        rows.append(r)
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise AttrexError(f"cannot read {path.name}: {_why(exc)}") from None
    if not rows:
        raise AttrexError(f"{path.name} holds no rows")
    for i, r in enumerate(rows):
        if not str(r.get("text") or "").strip() or str(r.get("label") if r.get("label") is not None else "").strip() == "":
            raise AttrexError(f"{path.name}: row {i + 1} has an empty text or label")
    splits = [str(r["split"]).strip().lower() if r.get("split") not in (None, "") else None for r in rows]
    bad = {s for s in splits if s not in (None, "train", "test")}
    if bad:
        raise AttrexError(f"{path.name}: split must be train or test; {len(bad)} other value(s) found")
    return [str(r["text"]) for r in rows], [str(r["label"]).strip() for r in rows], splits


def _held_out_texts(read, share: float, rng: np.random.Generator, path: Path) -> RawData:
    """One file's texts: split by its ``split`` column, or with a seeded per-class ``share`` held out."""
    texts, labels, splits = read
    if all(s is None for s in splits):
        names, y = _classes(labels, path)
        return _text_raw(names, *_hold_out(texts, y, share, rng))
    if None in splits:
        raise AttrexError(f"{path.name}: the split column is empty on some rows; give train or test on every row")
    tr = [i for i, s in enumerate(splits) if s == "train"]
    te = [i for i, s in enumerate(splits) if s == "test"]
    names, y_tr = _classes([labels[i] for i in tr], path)
    y_te = _labels_in([labels[i] for i in te], names, path)
    return _text_raw(names, [texts[i] for i in tr], y_tr, [texts[i] for i in te], y_te)


def _classes(labels: list[str], path: Path) -> tuple[list[str], np.ndarray]:
    """Class names (sorted; integers in numeric order) and the labels as class ids."""
    distinct = set(labels)
    numeric = all(s.lstrip("-").isdigit() for s in distinct)
    names = sorted(distinct, key=int) if numeric else sorted(distinct)
    if len(names) < 2:
        raise AttrexError(f"{path.name}: the training labels hold one class only ({names}); a classifier needs two")
    return names, np.asarray([names.index(s) for s in labels], np.int64)


def _labels_in(labels: list[str], names: list[str], path: Path) -> np.ndarray:
    outside = sorted(set(labels) - set(names))
    if outside:
        raise AttrexError(f"{path.name}: test labels {outside[:5]} are not among the training classes {names[:10]}")
    return np.asarray([names.index(s) for s in labels], np.int64)


def _text_raw(names, t_tr, y_tr, t_te, y_te) -> RawData:
    info = DatasetInfo("custom", "text", (), tuple(names))
    return RawData(info, y_train=np.asarray(y_tr, np.int64), y_test=np.asarray(y_te, np.int64),
                   texts_train=list(t_tr), texts_test=list(t_te))


# ----------------------------------------------------------------------------- arrays


def _npz(path: Path) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
            if missing:
                raise AttrexError(f"{path.name} lacks the arrays {sorted(missing)}; it must hold x_train, y_train, "
                                  "x_test, y_test (and optionally class_names)")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            names = [str(s) for s in z["class_names"].tolist()] if "class_names" in z.files else None
    except AttrexError:
        raise
    except Exception:  # zip errors, object arrays refused without pickle, ...: the library's text may quote the file
        raise AttrexError(f"cannot read {path.name} as a numpy archive of plain arrays (object arrays, which "
                          "would need unpickling, are refused)") from None
    x_tr, x_te = _nchw(arrays["x_train"], f"{path.name}:x_train"), _nchw(arrays["x_test"], f"{path.name}:x_test")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise AttrexError(f"{path.name}: x_train images are {x_tr.shape[1:]} but x_test images {x_te.shape[1:]}")
    y = {}
    for k in ("y_train", "y_test"):
        if not np.issubdtype(arrays[k].dtype, np.integer) or arrays[k].ndim != 1:
            raise AttrexError(f"{path.name}:{k} must be a 1-d array of integer labels; got {arrays[k].dtype} "
                              f"of shape {arrays[k].shape}")
        y[k] = arrays[k].astype(np.int64)
    k = int(max(y["y_train"].max(initial=0), y["y_test"].max(initial=0))) + 1
    names = names or [str(i) for i in range(k)]
    info = DatasetInfo("custom", "image", tuple(x_tr.shape[1:]), tuple(names))
    return RawData(info, y_train=y["y_train"], y_test=y["y_test"], x_train=x_tr, x_test=x_te)


def _nchw(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise AttrexError(f"{what} has dtype {x.dtype}; expected uint8 pixel values 0-255")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise AttrexError(f"{what} has shape {tuple(x.shape)}; expected N×H×W, N×H×W×C or N×C×H×W with C 1 or 3")


# ----------------------------------------------------------------------------- checks


def _check(raw: RawData) -> None:
    k = len(raw.info.class_names)
    if k < 2:
        raise AttrexError(f"the data has one class only ({list(raw.info.class_names)}); a classifier needs two")
    for split, y in (("training", raw.y_train), ("test", raw.y_test)):
        n = len(raw.texts_train if split == "training" else raw.texts_test) if raw.info.kind == "text" else \
            len(raw.x_train if split == "training" else raw.x_test)
        if n == 0:
            raise AttrexError(f"the {split} split is empty")
        if len(y) != n:
            raise AttrexError(f"the {split} split has {n} inputs but {len(y)} labels")
        if y.min() < 0 or y.max() >= k:
            raise AttrexError(f"{split} labels span {y.min()}..{y.max()}, outside the {k} classes 0..{k - 1}")
    if len(np.unique(raw.y_train)) < 2:
        raise AttrexError("the training split holds one class only; a classifier needs two")


def known_bad(path: str | Path, n_train: int, class_names: Sequence[str],
              train_names: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """Training ids a person knows to be bad, from a CSV with a header: ``id`` (a training id) or
    ``path`` (an image file, relative to the data folder), and optionally ``label``, the correct class.

    Returns ``(ids, correct labels or None)``; a correct label left empty on a row keeps the given one (-1).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise AttrexError("the known-bad list does not exist; it is a CSV with the column id (or path)")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip() for f in reader.fieldnames or []}
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AttrexError(f"cannot read the known-bad list {path.name}: {_why(exc)}") from None
    except OSError as exc:
        raise AttrexError(f"cannot read the known-bad list {path.name}: {exc.strerror}") from None
    if not fields & {"id", "path"}:
        raise AttrexError(f"{path.name}: the known-bad list needs a header with the column id (or path); its first "
                          f"line has {len(fields)} column(s), neither of them")
    if not rows:
        raise AttrexError(f"{path.name}: the known-bad list is empty")
    where = {name: i for i, name in enumerate(train_names)}
    ids, labels = [], []
    for lineno, r in enumerate(rows, 2):
        if r.get("id", "") != "":
            if not (r["id"].isascii() and r["id"].isdigit()) or len(r["id"]) > 12 or int(r["id"]) >= n_train:
                raise AttrexError(f"{path.name}:{lineno}: the id must be a training id in [0, {n_train - 1}]")
            ids.append(int(r["id"]))
        elif r.get("path", "") in where:
            ids.append(where[r["path"]])
        else:
            raise AttrexError(f"{path.name}:{lineno}: {r.get('path')!r} is not a training file of the data (a file "
                              "held out as a test sample is not one: see the test share, or give the data train/ "
                              "and test/ folders)")
        label = r.get("label", "")
        if label and label not in class_names:
            raise AttrexError(f"{path.name}:{lineno}: label {label!r} is not one of the classes {list(class_names)[:10]}")
        labels.append(list(class_names).index(label) if label else -1)
    if len(set(ids)) != len(ids):
        raise AttrexError(f"{path.name}: a training id is listed twice")
    has_labels = any(lab >= 0 for lab in labels)
    return np.asarray(ids, np.int64), np.asarray(labels, np.int64) if has_labels else None


def _why(exc: Exception) -> str:
    """What a parse error says, without the text it quotes from the file."""
    if isinstance(exc, UnicodeDecodeError):
        return f"it is not UTF-8 text (byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno}, column {exc.colno}"
    return "the CSV is malformed"
