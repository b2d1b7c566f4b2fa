"""Content-addressed disk cache: what is computed once is never computed again.

An artefact is a folder ``<root>/<kind>/<key>/`` with ``tensors.safetensors`` and
``meta.json``. The key is the sha256 of everything that determines the artefact (passed as a
JSON-able dict) plus the code version of its kind, so a change of data, parameters or code
gives a new key. Writes are atomic: the folder is assembled under a temporary name and
renamed into place. Reads are checked: format version, key, the sha256 of the tensors file
and of the metadata, and an optional ``validate`` callback (shapes, dtypes, required
fields). A stale or corrupt artefact (also an entry that is a file, or a link to nothing or
to something unusable) is reported (``Artefact.status`` and a ``logging`` warning), removed
and recomputed; it is never served, and it never crashes the caller.

Several processes asking for the same missing artefact compute it once: the first takes a
lock on ``<root>/<kind>/.<key>.lock``, the others wait and then read its result. A result
that cannot be saved (a read-only cache folder, a full disk) is served all the same, with
``not saved: <why>`` in its status and one warning per cache folder. The temporary folder of
a save that was killed is deleted by a later save once its process is gone (or after
``TMP_MAX_AGE`` seconds, for one written from another machine).

Location: ``$ATTREX_CACHE``, else ``$XDG_CACHE_HOME/attrex``, else ``~/.cache/attrex``.
Only safetensors and JSON are read back: nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

try:
    import fcntl
except ImportError:  # Windows: no locking, a concurrent request computes the artefact again
    fcntl = None

log = logging.getLogger("attrex.cache")

FORMAT_VERSION = 1
TENSORS, META = "tensors.safetensors", "meta.json"
TMP_MAX_AGE = 6 * 3600  # seconds after which any leftover temporary folder is deleted
_HOST = socket.gethostname()
_TMP_NAME = re.compile(r"\.tmp-[^-]*-(\d+)@(.+)-[^-]*$")  # .tmp-<key>-<pid>@<host>-<random>
_unsaved_roots: set[Path] = set()  # cache folders already warned about as not writable


class CacheError(Exception):
    """An artefact on disk that cannot be used; the message says why."""


@dataclass
class Artefact:
    """Tensors and metadata of one cached computation; ``status`` is ``hit``, ``computed`` or ``recomputed: <why>``."""

    tensors: dict[str, torch.Tensor]
    meta: dict
    path: Path
    status: str = "hit"
    messages: list[str] = field(default_factory=list)


def default_root() -> Path:
    if os.environ.get("ATTREX_CACHE"):
        return Path(os.environ["ATTREX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attrex"


def make_key(parts: dict, version: str | int) -> str:
    """sha256 hex of ``parts`` as canonical JSON plus the code ``version``."""
    blob = json.dumps({"parts": parts, "version": str(version)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 hex of a tensor's shape, dtype and bytes: its identity in a cache key."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)} {t.dtype}".encode())
    h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _meta_digest(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _owned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that each own all of their storage, as safetensors requires.

    A tensor that already does is taken as it is (a large precompute is not copied a second
    time to be saved); a view into a larger or shared storage is copied.
    """
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        storage = v.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != v.numel() * v.element_size():
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def remove_path(path: Path) -> None:
    """Delete an entry: a file or a link is unlinked (never what the link points to), a folder removed."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(OSError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _abandoned(tmp: Path) -> bool:
    """Whether a temporary folder is left over from a save that died: its process is gone, or it is old."""
    owner = _TMP_NAME.match(tmp.name)
    if owner and owner[2] == _HOST:
        try:
            os.kill(int(owner[1]), 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass  # alive, run by another user
    try:
        return time.time() - tmp.stat().st_mtime > TMP_MAX_AGE
    except OSError:
        return False


class Cache:
    """A disk cache rooted at ``root`` (see the module docstring for the default)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def contains(self, kind: str, key: str) -> bool:
        """Whether an entry exists (not whether it is sound: :meth:`load` checks that)."""
        return (self.path(kind, key) / META).is_file()

    def load(self, kind: str, key: str, validate: Callable[[dict, dict], None] | None = None) -> Artefact:
        """Read and check an artefact; raise :class:`CacheError` saying why it cannot be used."""
        folder = self.path(kind, key)
        if not folder.is_dir():
            if folder.is_symlink():
                raise CacheError("the entry is a link to nothing")
            if folder.exists():
                raise CacheError("the entry is a file, not a folder")
            raise FileNotFoundError(folder)
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, ValueError) as exc:
            raise CacheError(f"unreadable {META}: {exc}") from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("meta"), dict):
            raise CacheError(f"{META} does not hold an artefact record")
        if meta.get("format") != FORMAT_VERSION:
            raise CacheError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        if meta.get("kind") != kind or meta.get("key") != key:
            raise CacheError("its metadata names another artefact")
        tensors_path = folder / TENSORS
        if not tensors_path.is_file():
            raise CacheError(f"{TENSORS} is missing")
        if _sha256(tensors_path) != meta.get("sha256"):
            raise CacheError(f"{TENSORS} does not match its recorded checksum (truncated or altered)")
        if _meta_digest(meta["meta"]) != meta.get("meta_sha256"):
            raise CacheError(f"the metadata in {META} does not match its recorded checksum (altered)")
        try:
            tensors = load_file(str(tensors_path))
        except Exception as exc:  # safetensors raises its own error types
            raise CacheError(f"{TENSORS} cannot be read: {exc}") from exc
        if validate is not None:
            try:
                validate(tensors, meta["meta"])
            except (KeyError, IndexError, ValueError, TypeError, AttributeError, AssertionError) as exc:
                raise CacheError(f"content check failed: {exc}") from exc
        return Artefact(tensors, meta["meta"], folder)

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> Artefact:
        """Write an artefact atomically; if another writer got there first, keep theirs."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        for old in final.parent.glob(".tmp-*"):
            if _abandoned(old):
                log.info(f"deleting {old}, left over from an interrupted save")
                shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-{os.getpid()}@{_HOST}-", dir=final.parent))
        try:
            clean = _owned(tensors)
            save_file(clean, str(tmp / TENSORS))
            meta = json.loads(json.dumps(meta, default=str))  # what a reader will see, checksummed as such
            record = {"format": FORMAT_VERSION, "kind": kind, "key": key, "created": time.time(),
                      "sha256": _sha256(tmp / TENSORS), "meta_sha256": _meta_digest(meta), "meta": meta}
            (tmp / META).write_text(json.dumps(record, indent=1, default=str))
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer finished first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artefact(clean, meta, final, status="computed")

    def get_or_compute(
        self,
        kind: str,
        key: str,
        compute: Callable[[], tuple[dict[str, torch.Tensor], dict]],
        validate: Callable[[dict, dict], None] | None = None,
    ) -> Artefact:
        """The artefact under ``(kind, key)``: read if present and sound, else computed and saved.

        While one process computes it, others asking for it wait and then read its result. What
        cannot be saved is served all the same, with ``not saved: <why>`` in its status.
        """
        try:
            return self.load(kind, key, validate)
        except (FileNotFoundError, CacheError):
            pass  # looked at again under the lock: another process may be saving it right now
        messages: list[str] = []
        with self._lock(kind, key):
            try:
                return self.load(kind, key, validate)
            except FileNotFoundError:
                status = "computed"
            except CacheError as exc:
                msg = f"cached {kind} {key[:12]} is unusable ({exc}); recomputing"
                log.warning(msg)
                messages.append(msg)
                remove_path(self.path(kind, key))
                status = f"recomputed: {exc}"
            tensors, meta = compute()
            try:
                art = self.save(kind, key, tensors, meta)
            except OSError as exc:
                msg = f"cannot save to the cache folder {self.root} ({exc}); results are computed but not kept"
                if self.root not in _unsaved_roots:
                    _unsaved_roots.add(self.root)
                    log.warning(msg)
                messages.append(msg)
                status += f"; not saved: {exc.strerror or exc}"
                art = Artefact(tensors, json.loads(json.dumps(meta, default=str)), self.path(kind, key))
        art.status, art.messages = status, messages
        return art

    @contextlib.contextmanager
    def _lock(self, kind: str, key: str):
        """Hold an exclusive lock on ``<root>/<kind>/.<key>.lock``; no lock where none can be taken (read-only)."""
        fh = None
        if fcntl is not None:
            try:
                (self.root / kind).mkdir(parents=True, exist_ok=True)
                fh = open(self.root / kind / f".{key}.lock", "a")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.warning(f"another process is computing {kind} {key[:12]}; waiting for it")
                    fcntl.flock(fh, fcntl.LOCK_EX)
            except OSError:
                if fh is not None:
                    fh.close()
                fh = None
        try:
            yield
        finally:
            if fh is not None:
                fh.close()  # releases the lock

    def clear(self, kind: str | None = None) -> None:
        """Remove every artefact (of one kind, if given)."""
        shutil.rmtree(self.root / kind if kind else self.root, ignore_errors=True)

    def remove(self, kind: str, key: str) -> None:
        """Remove one artefact (nothing happens if it is absent)."""
        if not re.fullmatch(r"[0-9a-zA-Z_.-]+", kind) or not re.fullmatch(r"[0-9a-f]{64}", key):
            raise CacheError(f"no such cache entry: {kind}/{key}")
        remove_path(self.path(kind, key))

    def entries(self) -> list[dict]:
        """Every artefact folder: ``kind``, ``key``, ``bytes``, ``modified`` (epoch seconds) and its ``label``
        (what it holds, as its writer described it; empty for entries written before labels existed). Only
        the JSON metadata is read; an unreadable one is listed with ``label`` ``"unreadable"``."""
        out: list[dict] = []
        if not self.root.is_dir():
            return out
        for kind_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(p for p in kind_dir.iterdir() if not p.name.startswith(".")):
                size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file()) if entry.is_dir() else 0
                try:
                    label = str(json.loads((entry / META).read_text())["meta"].get("label", ""))
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    label = "unreadable"
                out.append({"kind": kind_dir.name, "key": entry.name, "bytes": size,
                            "modified": entry.lstat().st_mtime, "label": label})
        return out
