"""A person's own data and model, written to disk the way a user would have them (for tests).

``image_folder``: PNGs of the embedded MNIST subset in ``DIR/<class>/``; ``npz_data``: the same
images in one ``.npz`` with class names of one's choice (``HOSTILE_CLASSES``: Markdown, HTML,
math, an emoji shortcode and spreadsheet formulas); ``user_model``: a
small CNN in a plain ``usernet.py`` file, trained here with an ordinary torch loop (not
attrex's), its checkpoints saved as safetensors with ``checkpoints.json`` and its final
weights as a state dict ``.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

USERNET = '''\
from torch import nn


def build(n_classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, n_classes),
    )
'''
LRS = (0.1, 0.05, 0.01)
# class names a stranger's data set may hold, each with the cell a CSV export must write for it
HOSTILE_CLASSES = (
    ("[click me](http://evil.example)", "[click me](http://evil.example)"),
    (":x:", ":x:"),
    ("**bold**", "**bold**"),
    ("<b>x</b>", "<b>x</b>"),
    ("$x$", "$x$"),
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
    ("+1", "'+1"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ('a"b, c', 'a"b, c'),
)


def image_folder(root: Path, per_class: int = 20, classes: int = 10) -> Path:
    """``root/digit<c>/<id>.png``: the first ``per_class`` embedded MNIST training images of each class."""
    from core.data.sources import load

    raw = load("mnist")
    for c in range(classes):
        folder = root / f"digit{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(raw.y_train == c)[:per_class]:
            Image.fromarray(raw.x_train[i, 0]).save(folder / f"{i:05d}.png")
    return root


def npz_data(path: Path, class_names: list[str], train_per_class: int = 12, test_per_class: int = 4) -> Path:
    """``path``: an .npz of the first embedded MNIST training (test) images of each of the first
    ``len(class_names)`` digits, sorted by class, the digits named ``class_names``."""
    from core.data.sources import load

    raw = load("mnist")
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        y = getattr(raw, f"y_{split}")
        ids = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(len(class_names))])
        arrays[f"x_{split}"], arrays[f"y_{split}"] = getattr(raw, f"x_{split}")[ids], y[ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, class_names=np.array(class_names), **arrays)
    return path


def user_model(folder: Path, x: torch.Tensor, y: torch.Tensor, n_classes: int = 10) -> dict[str, Path]:
    """Write ``usernet.py``, train it on ``(x, y)`` for 3 epochs (one checkpoint each), save the weights.

    Returns the paths: ``module`` (usernet.py), ``weights`` (final.pt), ``checkpoints`` (folder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "usernet.py").write_text(USERNET)
    namespace: dict = {}
    exec(USERNET, namespace)  # the same code the entry point imports
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = namespace["build"](n_classes)
    ckpts = folder / "ckpts"
    ckpts.mkdir(exist_ok=True)
    listed = []
    for epoch, lr in enumerate(LRS):
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        perm = torch.randperm(len(y), generator=g)
        for b in range(0, len(y), 16):
            idx = perm[b: b + 16]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        name = f"epoch{epoch + 1}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpts / name))
        listed.append({"file": name, "lr": lr})
    (ckpts / "checkpoints.json").write_text(json.dumps(listed))
    torch.save(net.state_dict(), folder / "final.pt")
    return {"module": folder / "usernet.py", "weights": folder / "final.pt", "checkpoints": ckpts}
