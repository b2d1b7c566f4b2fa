"""A person's own model: a Python entry point, its weights and, optionally, its training checkpoints.

    source = ModelSource("mypkg.nets:build", "final.safetensors", checkpoints="ckpts/")
    trained = train(scenario, source)          # loads (never trains) and checks the model

- ``entry``: ``package.module:function`` (or ``path/to/file.py:function``) returning an
  ``nn.Module``; the function is called with ``n_classes=`` when it takes that argument. The
  current folder is importable, as for ``python -m``. Importing it runs its code: an entry
  point is taken from the command line or the local app's form, never from a browser serving
  others. ``attrex:<architecture>`` names one of attrex's own architectures
  (:data:`core.models.ARCHITECTURES`) instead: nothing is imported, and this is what an
  uploaded model names.
- ``weights``: a ``.safetensors`` file or a PyTorch state dict read with
  ``torch.load(weights_only=True)`` (never unpickled otherwise); a dict holding a
  ``state_dict`` entry is unwrapped.
- ``checkpoints``: a folder with ``checkpoints.json``, a list of ``{"file": ..., "lr": ...}``
  (in training order; ``lr`` the learning rate in force when the checkpoint was taken, as
  TracIn weights them). Without it the methods that need checkpoints (TracIn, GAS, FLIA)
  refuse with a message, and the others run on the final weights.

attrex splits the model into ``features`` (the penultimate representation) and ``head`` (the
last linear layer, whose output is the model's output). It finds the head itself (the last
``nn.Linear`` of the model, as in a plain ``Sequential`` or torchvision's ResNet, VGG and
MobileNet); ``head_layer`` names it otherwise, and ``features_layer`` names the layer whose
(flattened) output feeds it where the head is not the model's last operation. The split is
checked on training inputs: ``head(features(x))`` must equal ``model(x)``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import AttrexError
from core.models.architectures import AttrexModel

CHECKPOINTS_FILE = "checkpoints.json"
REGISTRY_PREFIX = "attrex:"  # an entry naming one of attrex's own architectures
SPLIT_TOLERANCE = 1e-4  # |head(features(x)) - model(x)| relative to max |model(x)|; float32 re-association is ~1e-6


@dataclass(frozen=True)
class ModelSource:
    """Where a person's model comes from (see the module docstring). Hashable and picklable."""

    entry: str
    weights: str
    checkpoints: str | None = None
    features_layer: str | None = None
    head_layer: str | None = None
    seed: int = 0  # what the seed means for a trained model: nothing here, kept for the shared interface

    def __post_init__(self) -> None:
        from core.models.architectures import ARCHITECTURES

        module, sep, fn = self.entry.partition(":")
        if registry_arch(self.entry) is not None:
            if fn not in ARCHITECTURES:
                raise AttrexError(f"{self.entry!r} names no architecture of attrex; accepted: "
                                  + ", ".join(REGISTRY_PREFIX + a for a in ARCHITECTURES))
        elif not sep or not module.strip() or not fn.strip().isidentifier():
            raise AttrexError(f"the model entry point must be package.module:function (or file.py:function); "
                              f"got {self.entry!r}")
        for what in ("weights", "checkpoints"):
            value = getattr(self, what)
            if value is not None:
                object.__setattr__(self, what, str(Path(value).expanduser().resolve()))
        if not Path(self.weights).is_file():
            raise AttrexError(f"weights file {self.weights!r} does not exist (a .safetensors or a state dict .pt)")
        if self.checkpoints is not None and not (Path(self.checkpoints) / CHECKPOINTS_FILE).is_file():
            raise AttrexError(f"checkpoint folder {self.checkpoints!r} lacks {CHECKPOINTS_FILE}: a JSON list of "
                              '{"file": ..., "lr": ...} in training order')

    @property
    def arch(self) -> str:
        return self.entry

    @property
    def epochs(self) -> None:  # unknown: attrex did not train it
        return None


def registry_arch(entry: str) -> str | None:
    """The architecture an ``attrex:<name>`` entry names, else ``None`` (an entry point to import)."""
    return entry[len(REGISTRY_PREFIX):] if entry.startswith(REGISTRY_PREFIX) else None


def build_module(entry: str, n_classes: int) -> nn.Module:
    """Import ``entry`` and call it (with ``n_classes=`` where it takes it); refuses what is not an ``nn.Module``."""
    module_name, _, fn_name = entry.partition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise AttrexError(f"model file {str(path)!r} does not exist")
            spec = importlib.util.spec_from_file_location(f"attrex_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if str(Path.cwd()) not in sys.path and "" not in sys.path:
                sys.path.append(str(Path.cwd()))
            module = importlib.import_module(module_name)
    except AttrexError:
        raise
    except Exception as exc:  # ImportError, SyntaxError, an error at import time ...
        raise AttrexError(f"cannot import {module_name!r} for the model: {type(exc).__name__}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise AttrexError(f"{module_name} has no function {fn_name!r}")
    try:
        takes_k = "n_classes" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_k = False
    try:
        net = fn(n_classes=n_classes) if takes_k else fn()
    except Exception as exc:
        raise AttrexError(f"{entry} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise AttrexError(f"{entry} returned {type(net).__name__}, not a torch nn.Module")
    return net


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``weights_only`` torch file.

    A pickle holding other objects is refused saying what attrex reads instead (torch's own
    message would advise loading it with ``weights_only=False``, which runs code from the file).
    """
    import pickle

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's weights-only unpickler met something other than tensors
        named = str(exc).partition("Unsupported global: GLOBAL ")[2].split(" ", 1)[0]
        what = f"a pickle with Python objects besides tensors (such as {named})" if named else "not a weights-only state dict"
        raise AttrexError(f"{path.name} is {what}; attrex never unpickles objects, which would run code from the file. "
                          "It reads safetensors files and weights-only state dicts: save the weights with "
                          "safetensors.torch.save_file(model.state_dict(), ...) or torch.save(model.state_dict(), ...)"
                          ) from None
    except Exception as exc:
        raise AttrexError(f"cannot read weights from {path.name} as safetensors or a weights-only state dict: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise AttrexError(f"{path.name} does not hold a state dict (names mapped to tensors)")
    return state


class SplitModel(AttrexModel):
    """A person's network as an :class:`AttrexModel`: the network with its head taken out, and ``head``.

    Default split: the head (``head_layer``) is replaced by an identity inside the network,
    held as ``extractor``, so ``extractor(x)`` is the head's input. With ``features_layer``:
    ``features`` is that layer's flattened output, read by a forward hook while the network
    (held as ``network``, the head still inside) runs to its end.
    """

    def __init__(self, net: nn.Module, head_layer: str, features_layer: str | None = None):
        super().__init__()
        head = net.get_submodule(head_layer)
        parent_name, _, child = head_layer.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        if features_layer is None:
            setattr(parent, child, nn.Identity())
        self.head = head
        # default split: the body is the feature extractor (DualView-LRP propagates through it); with a
        # features layer it runs to the model's end, so it is not one, and has another name
        self.body_name = "extractor" if features_layer is None else "network"
        setattr(self, self.body_name, net)
        self.head_layer = head_layer
        self.features_layer = features_layer

    def features(self, x: torch.Tensor) -> torch.Tensor:
        body = getattr(self, self.body_name)
        if self.features_layer is None:
            return body(x).flatten(1)
        seen: list[torch.Tensor] = []
        handle = body.get_submodule(self.features_layer).register_forward_hook(lambda m, i, o: seen.append(o))
        try:
            body(x)
        finally:
            handle.remove()
        return seen[0].flatten(1)

    def state_from_net(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The person's state dict (their module's names) renamed to this model's."""
        prefix, body = self.head_layer + ".", self.body_name + "."
        out = {}
        for k, v in state.items():
            if k.startswith(prefix):
                out["head." + k[len(prefix):]] = v
                if self.features_layer is not None:  # the head stays inside the body too
                    out[body + k] = v
            else:
                out[body + k] = v
        return out


def _find_head(net: nn.Module) -> str:
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AttrexError("the model has no nn.Linear layer; attrex needs a last linear layer (the head): pass "
                          "--head-layer and --features-layer")
    return linears[-1]


def split(net: nn.Module, state: dict[str, torch.Tensor], probe: torch.Tensor, n_classes: int,
          head_layer: str | None = None, features_layer: str | None = None) -> SplitModel:
    """``net`` with ``state`` loaded, split into features and head, and checked on ``probe`` inputs."""
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise AttrexError(f"the weights do not fit the model: {str(exc).splitlines()[0][:300]}") from None
    net.eval()
    head_layer = head_layer or _find_head(net)
    names = dict(net.named_modules())
    for what, name in (("head layer", head_layer), ("features layer", features_layer)):
        if name is not None and name not in names:
            raise AttrexError(f"the model has no {what} {name!r}; its layers include {list(names)[1:12]}")
    if not isinstance(names[head_layer], nn.Linear):
        raise AttrexError(f"head layer {head_layer!r} is a {type(names[head_layer]).__name__}, not an nn.Linear")
    if names[head_layer].out_features != n_classes:
        raise AttrexError(f"the head {head_layer!r} has {names[head_layer].out_features} outputs but the data has "
                          f"{n_classes} classes")
    with torch.no_grad():
        try:
            expected = net(probe)
        except Exception as exc:
            raise AttrexError(f"the model cannot run on the data's inputs (shape {tuple(probe.shape[1:])}): "
                              f"{type(exc).__name__}: {exc}") from None
        model = SplitModel(net, head_layer, features_layer).eval()
        try:
            got = model(probe)
        except Exception as exc:
            got = exc
    if isinstance(got, Exception) or got.shape != expected.shape or \
            (got - expected).abs().max() > SPLIT_TOLERANCE * expected.abs().max().clamp_min(1e-12):
        raise AttrexError(
            f"attrex could not split the model into features and a last linear layer at {head_layer!r}: "
            "head(features(x)) differs from model(x). Pass --head-layer (the nn.Linear producing the output) and "
            "--features-layer (the layer whose flattened output feeds it)")
    return model


def read_checkpoints(folder: str | Path) -> list[tuple[Path, float]]:
    """``(file, lr)`` of every checkpoint listed in ``folder/checkpoints.json``, in order."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / CHECKPOINTS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise AttrexError(f"cannot read {CHECKPOINTS_FILE} as JSON text") from None
    if isinstance(listed, dict):
        listed = listed.get("checkpoints")
    if not isinstance(listed, list) or not listed:
        raise AttrexError(f"{CHECKPOINTS_FILE} must be a non-empty list of {{\"file\": ..., \"lr\": ...}}")
    out = []
    for i, item in enumerate(listed):
        if not isinstance(item, dict) or not isinstance(item.get("file"), str) or \
                isinstance(item.get("lr"), bool) or not isinstance(item.get("lr"), (int, float)):
            raise AttrexError(f"{CHECKPOINTS_FILE} entry {i} must be {{\"file\": name, \"lr\": number}}")
        lr = float(item["lr"])
        if not (lr > 0 and math.isfinite(lr)):
            raise AttrexError(f"{CHECKPOINTS_FILE} entry {i}: the learning rate must be a positive number; got {lr}")
        path = (folder / item["file"]).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise AttrexError(f"{CHECKPOINTS_FILE} entry {i}: a checkpoint file must lie in the checkpoint folder")
        if not path.is_file():
            raise AttrexError(f"{CHECKPOINTS_FILE} entry {i}: {Path(item['file']).name} does not exist in the "
                              "checkpoint folder")
        out.append((path, lr))
    return out


def source_key(source: ModelSource, fingerprint: str) -> str:
    """sha256 over the entry point, the layer options, every weight file's bytes and the data's fingerprint."""
    h = hashlib.sha256(json.dumps([source.entry, source.head_layer, source.features_layer, fingerprint]).encode())
    files = [Path(source.weights)] + ([p for p, _ in read_checkpoints(source.checkpoints)] if source.checkpoints else [])
    for p in files:
        h.update(p.read_bytes())
    if source.checkpoints:
        h.update((Path(source.checkpoints) / CHECKPOINTS_FILE).read_bytes())
    return h.hexdigest()
