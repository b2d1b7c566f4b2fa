"""A person's own data and model arriving as uploaded files: checked, unpacked and kept in a folder of their own.

What a browser may send (the app's *Your data* form; :data:`LIMITS` are stated on the page):

- **data**: a ``.zip`` of an image folder (``<class>/*.png|jpg``, optionally under ``train/``
  and ``test/``, optionally wrapped in one top folder), or one ``.csv``/``.jsonl`` of texts, or
  an ``.npz`` of arrays; read afterwards by :func:`core.data.custom.load` like any path;
- **a known-bad list**: a ``.csv`` (:func:`core.data.custom.known_bad`);
- **weights**: a ``.safetensors`` file (never a pickle: a browser's file is never unpickled);
- **checkpoints**: a ``.zip`` of ``.safetensors`` files with ``checkpoints.json``.

A zip is unpacked entry by entry, never with ``extractall``: an entry with an absolute path,
a ``..`` part, a drive or a backslash, a link, a device, a FIFO or a socket, an encrypted
entry, more entries or more uncompressed bytes than :data:`LIMITS` allow (counted as the
bytes are read, not as the archive declares them), or a file of a kind the upload does not
take, refuses the whole upload. Hidden files and ``__MACOSX/`` are skipped.

Each session's files live in ``<cache>/.uploads/<id>/`` (:class:`UploadFolder`), ``id`` 128
random bits that no link carries. The folder is removed when the session's holder is dropped
(the session ends) or a newer upload replaces it, and :func:`sweep` removes folders left by a
server that stopped, once they are older than :data:`MAX_AGE`. Nothing here imports Streamlit.
"""

from __future__ import annotations

import io
import secrets
import shutil
import stat
import time
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.cache import remove_path
from core.data import custom
from core.errors import AttrexError

UPLOADS = ".uploads"  # under the cache root; the leading dot keeps it out of the cache's entry listing
MAX_AGE = 24 * 3600   # seconds after which a folder no live session holds is swept


@dataclass(frozen=True)
class Limits:
    """What one upload may hold."""

    upload_mb: int = 50              # one file as sent (Streamlit's server.maxUploadSize in .streamlit/config.toml)
    files: int = 20_000              # entries in a zip
    unpacked_mb: int = 512           # bytes of a zip's entries once unpacked, all together
    image_side: int = custom.MAX_SIDE      # pixels a side of an image read as it is (more needs an image size)
    image_pixels: int = custom.MAX_PIXELS  # pixels of any one image, even to be resized (core.data.custom checks both)

    def describe(self) -> str:
        return (f"at most {self.upload_mb} MB a file; a zip at most {self.files:,} files and {self.unpacked_mb} MB "
                f"unpacked; images at most {self.image_side} pixels a side (more with an image size to resize "
                f"to, up to {self.image_pixels // 2**20} megapixels)")


LIMITS = Limits()
DATA_SUFFIXES = (".zip", ".csv", ".jsonl", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEXT_SUFFIXES = (".csv", ".jsonl")
CHUNK = 1 << 20


class UploadFolder:
    """One session's upload folder; removed when this object is dropped (or :meth:`remove` is called)."""

    def __init__(self, root: Path):
        sweep(root)
        self.path = root / UPLOADS / secrets.token_hex(16)
        self.path.mkdir(parents=True)
        _live[str(self.path)] = self
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def remove(self) -> None:
        self._finalizer()

    def part(self, name: str) -> Path:
        """A fresh sub-folder ``name`` (an earlier one of that name is removed)."""
        target = self.path / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        return target


_live: weakref.WeakValueDictionary[str, UploadFolder] = weakref.WeakValueDictionary()


def sweep(root: Path, max_age: float = MAX_AGE) -> int:
    """Remove the upload folders under ``root`` that no live session of this process holds and that are older
    than ``max_age`` seconds (a server that stopped leaves its sessions' folders behind). Returns how many."""
    base = root / UPLOADS
    if not base.is_dir():
        return 0
    removed = 0
    for folder in base.iterdir():
        try:
            old = time.time() - folder.lstat().st_mtime > max_age
        except OSError:
            continue
        if old and str(folder) not in _live:
            remove_path(folder)
            removed += 1
    return removed


# ----------------------------------------------------------------------------- storing what was sent


def store_data(name: str, data: bytes, folder: UploadFolder, limits: Limits = LIMITS) -> Path:
    """An uploaded data set, stored; returns the path :func:`core.data.custom.load` reads (a folder or a file)."""
    suffix = _suffix(name, DATA_SUFFIXES, "data")
    _check_size(data, limits)
    target = folder.part("data")
    if suffix != ".zip":
        path = target / f"data{suffix}"
        path.write_bytes(data)
        return path
    root = unpack_zip(data, target, IMAGE_SUFFIXES + TEXT_SUFFIXES, limits)
    if not any(root.iterdir()):
        raise AttrexError("the zip holds no images or texts (.png, .jpg, .jpeg, .csv, .jsonl)")
    return root


def store_known_bad(name: str, data: bytes, folder: UploadFolder, limits: Limits = LIMITS) -> Path:
    _suffix(name, (".csv",), "known-bad list")
    _check_size(data, limits)
    path = folder.part("known-bad") / "known-bad.csv"
    path.write_bytes(data)
    return path


def store_weights(name: str, data: bytes, folder: UploadFolder, limits: Limits = LIMITS) -> Path:
    """Uploaded weights: a ``.safetensors`` file (its header is checked here; nothing else is accepted)."""
    _suffix(name, (".safetensors",), "weights", hint=" (attrex never unpickles a file sent from a browser; "
            "save a state dict with safetensors.torch.save_file)")
    _check_size(data, limits)
    path = folder.part("weights") / "weights.safetensors"
    path.write_bytes(data)
    check_safetensors(path)
    return path


def store_checkpoints(name: str, data: bytes, folder: UploadFolder, limits: Limits = LIMITS) -> Path:
    """Uploaded checkpoints: a zip of ``.safetensors`` files and ``checkpoints.json``; returns their folder."""
    from core.models.custom import CHECKPOINTS_FILE

    _suffix(name, (".zip",), "checkpoints")
    _check_size(data, limits)
    root = unpack_zip(data, folder.part("checkpoints"), (".safetensors", ".json"), limits)
    if not (root / CHECKPOINTS_FILE).is_file():
        raise AttrexError(f"the checkpoints zip lacks {CHECKPOINTS_FILE} at its top: a JSON list of "
                          '{"file": ..., "lr": ...} in training order')
    for path in root.rglob("*.safetensors"):
        check_safetensors(path)
    return root


def check_safetensors(path: Path) -> None:
    """Refuse a file that is not a safetensors file (only its header is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # the library's errors name the file's bytes; say what was wrong instead
        raise AttrexError(f"{path.name} is not a safetensors file (attrex reads weights saved with "
                          "safetensors.torch.save_file)") from None
    if not keys:
        raise AttrexError(f"{path.name} holds no tensors")


def _suffix(name: str, accepted: tuple[str, ...], what: str, hint: str = "") -> str:
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    if suffix not in accepted:
        raise AttrexError(f"the {what} must be a {' or '.join(accepted)} file; this one ends in "
                          f"{suffix or 'no suffix'}{hint}")
    return suffix


def _check_size(data: bytes, limits: Limits) -> None:
    if not data:
        raise AttrexError("the file is empty")
    if len(data) > limits.upload_mb * 2**20:
        raise AttrexError(f"the file has {len(data) / 2**20:.1f} MB; at most {limits.upload_mb} MB is accepted")


# ----------------------------------------------------------------------------- zip archives


def unpack_zip(data: bytes, target: Path, suffixes: tuple[str, ...], limits: Limits = LIMITS) -> Path:
    """Unpack the zip ``data`` into the empty folder ``target``, keeping only files ending in ``suffixes``;
    returns the folder that holds the content (the one top folder, where everything sits in one).

    Every entry is checked first (see the module docstring), so a refused archive writes nothing; then
    each file is copied with its size counted as it is read. On any refusal ``target`` is emptied.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise AttrexError("the file is not a readable zip archive") from None
    if len(infos) > limits.files:
        raise AttrexError(f"the zip holds {len(infos):,} entries; at most {limits.files:,} are accepted")
    wanted: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    for info in infos:
        parts = _entry_parts(info)
        if parts is None:
            continue
        if PurePosixPath(*parts).suffix.lower() not in suffixes:
            raise AttrexError(f"the zip holds {_shown(info.filename)}, which is not one of {', '.join(suffixes)}")
        wanted.append((info, PurePosixPath(*parts)))
    budget = limits.unpacked_mb * 2**20
    if sum(info.file_size for info, _ in wanted) > budget:
        raise AttrexError(f"the zip unpacks to more than {limits.unpacked_mb} MB")
    try:
        for info, rel in wanted:
            dest = target.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(dest, "xb") as out:
                written = 0
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    budget -= len(chunk)
                    if written > info.file_size or budget < 0:  # the archive lied about its sizes
                        raise AttrexError(f"the zip unpacks to more than {limits.unpacked_mb} MB")
                    out.write(chunk)
    except AttrexError:
        _empty(target)
        raise
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError):
        _empty(target)
        raise AttrexError("the zip archive is damaged or uses a compression attrex cannot read") from None
    return _content_root(target)


def _entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """The relative path parts of a file entry; ``None`` for a directory or a skipped entry; refuses a bad one."""
    name = info.filename
    mode = info.external_attr >> 16
    if info.flag_bits & 0x1:
        raise AttrexError("the zip has encrypted entries; send an unencrypted zip")
    if "\\" in name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise AttrexError(f"the zip has an entry with an absolute or non-portable path ({_shown(name)})")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise AttrexError(f"the zip has an entry that points outside it ({_shown(name)})")
    kind = stat.S_IFMT(mode)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        what = "a link" if kind == stat.S_IFLNK else "a device, pipe or socket"
        raise AttrexError(f"the zip has an entry that is {what} ({_shown(name)}); only files and folders are accepted")
    if info.is_dir() or not parts:
        return None
    if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    return parts


def _content_root(target: Path) -> Path:
    """``target``, or its one sub-folder where it holds nothing else (a zipped folder)."""
    children = list(target.iterdir())
    if len(children) == 1 and children[0].is_dir():
        inner = list(children[0].iterdir())
        # a wrapper folder holds the class folders (or train/ test/, or the text files), never images itself
        if inner and not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in inner):
            return children[0]
    return target


def _empty(target: Path) -> None:
    for child in target.iterdir():
        remove_path(child)


def _shown(name: str) -> str:
    """An entry's name for a message: printable, and cut."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean if len(clean) <= 80 else clean[:79] + "…"
