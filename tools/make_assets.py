"""Rebuild the small embedded data sets in ``assets/`` from the full copies.

Usage: ``python -m tools.make_assets [--source ../shared/data]``

Each image set keeps a balanced subset: for every class ``c = 0, 1, ...`` in order,
``rng.choice(np.flatnonzero(y == c), k, replace=False)`` with
``rng = numpy.random.default_rng(SEED)``; the chosen indices are concatenated and sorted,
so the original order is kept. The archive records, per kept sample, its index in the
original split (``train_orig_idx``, ``test_orig_idx``) so provenance is exact. AG News is
small enough to ship whole. The sha256 of every file written is printed, for
``assets/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np

SEED = 0
SIZES = {  # name -> (train per class, test per class)
    "mnist": (600, 100),
    "fashion_mnist": (600, 100),
    "cifar10": (500, 100),
}
MNIST_NAMES = [str(i) for i in range(10)]


def balanced(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    for name, (k_train, k_test) in SIZES.items():
        rng = np.random.default_rng(SEED)
        with np.load(args.source / f"{name}.npz", allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        tr = balanced(data["y_train"], k_train, rng)
        te = balanced(data["y_test"], k_test, rng)
        # indices into the original (full) splits: the shared copies of CIFAR-10 and
        # Fashion-MNIST are themselves subsets and carry ``train_idx``.
        orig_tr = data["train_idx"][tr] if "train_idx" in data else tr
        names = data["class_names"] if "class_names" in data else np.array(MNIST_NAMES)
        out = args.out / f"{name}.npz"
        np.savez_compressed(
            out,
            x_train=data["x_train"][tr],
            y_train=data["y_train"][tr].astype(np.int64),
            x_test=data["x_test"][te],
            y_test=data["y_test"][te].astype(np.int64),
            class_names=names.astype(str),
            train_orig_idx=orig_tr.astype(np.int64),
            test_orig_idx=te.astype(np.int64),
        )
    shutil.copyfile(args.source / "ag_news.jsonl.gz", args.out / "ag_news.jsonl.gz")

    for f in sorted(args.out.glob("*.npz")) + [args.out / "ag_news.jsonl.gz"]:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        print(f"{f.name}\t{f.stat().st_size}\t{digest}")


if __name__ == "__main__":
    main()
