"""Training with checkpoints, cached on disk.

``train(scenario)`` trains the scenario's default architecture (or ``config.arch``), saving
``n_checkpoints`` checkpoints spread over training, each with the learning rate in force
when it was taken (TracIn weights checkpoints by it). Same scenario and config, same
weights, bit for bit; the result is cached under a key of the scenario's fingerprint, the
config and this module's code version, so a second call loads it at once.

Seeds: ``TrainConfig.seed`` ``None`` (the default) means the scenario's seed, so one seed
(``ScenarioSpec.seed``, ``attrex prepare --seed``, the app's sidebar) fixes both the data and
the training. :func:`resolve` fills it in before anything is keyed: ``TrainedModel.config``
always holds the seed the model was trained with, and ``TrainConfig(seed=5)`` and ``None``
on a scenario of seed 5 are the same model under the same key.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from core.cache import Cache, CacheError, make_key
from core.data.scenario import Scenario
from core.errors import AttrexError
from core.models import custom
from core.models.architectures import ARCHITECTURES, AttrexModel, build_model
from core.models.custom import ModelSource

# Part of every model's cache key: bump it when training changes what it produces. Each
# architecture carries its own version (Architecture.version).
CODE_VERSION = "training-1"
Progress = Callable[[float, str], None]
AUGMENTATIONS = {"none": (0, False), "shift": (2, False), "crop-flip": (4, True)}  # padding, flip


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. ``lr`` decays by a cosine from ``lr`` to ``lr * final_lr_ratio``."""

    arch: str = "cnn"
    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" (with momentum), "adam" (weight decay as an L2 term) or "adamw" (decoupled)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    final_lr_ratio: float = 0.1
    n_checkpoints: int = 5
    augment: str = "none"  # "none", "shift" (random crop after 2-pixel padding) or "crop-flip" (pad 4 + horizontal flip)
    seed: int | None = None  # initialisation, batch order and augmentation; None: the scenario's seed

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise AttrexError(f"unknown architecture {self.arch!r}; accepted: {', '.join(ARCHITECTURES)}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise AttrexError(f"optimizer must be 'sgd', 'adam' or 'adamw'; got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "n_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise AttrexError(f"{name} must be a positive integer; got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AttrexError(f"learning rate must be a positive number; got {self.lr!r}")
        if self.augment not in AUGMENTATIONS:
            raise AttrexError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {self.augment!r}")
        if not 0 <= self.final_lr_ratio <= 1:
            raise AttrexError(f"final_lr_ratio must lie in [0, 1]; got {self.final_lr_ratio!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise AttrexError(f"seed must be an integer >= 0 or None (the scenario's seed); got {self.seed!r}")

    def checkpoint_epochs(self) -> list[int]:
        """Epochs (1-based) after which a checkpoint is taken, spread evenly; the last is the final epoch."""
        n = min(self.n_checkpoints, self.epochs)
        return sorted({round(self.epochs * (j + 1) / n) for j in range(n)})

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate for optimisation step ``step`` (0-based) of ``total``."""
        lo = self.lr * self.final_lr_ratio
        return lo + 0.5 * (self.lr - lo) * (1 + math.cos(math.pi * step / max(total - 1, 1)))


DEFAULT_CONFIGS: dict[str, TrainConfig] = {
    # MNIST: 2-pixel shifts and a cosine down to lr/100 lift seeds 0-4 from 96.9-97.2% (12 epochs, no
    # augmentation, down to lr/10) to 98.2-98.9% (benchmarks/model_seeds.py)
    "mnist": TrainConfig(arch="cnn", epochs=20, batch_size=64, lr=0.1, final_lr_ratio=0.01, augment="shift"),
    "fashion-mnist": TrainConfig(arch="cnn", epochs=12, batch_size=64, lr=0.1),
    "cifar10": TrainConfig(arch="resnet-small", epochs=20, batch_size=128, lr=0.1, augment="crop-flip"),
    # AG News: decoupled weight decay (AdamW, 1.0) keeps seeds 0-4 within 83.3-83.8% (Adam without decay: 80.8-85.8%)
    # and the backdoor's attack success at >= 99.9% (94.0-98.3%)
    "agnews": TrainConfig(arch="text", epochs=10, batch_size=64, optimizer="adamw", lr=1e-2, weight_decay=1.0),
}
ARCH_DEFAULTS: dict[str, dict] = {  # what changes when another architecture is chosen for a data set
    "mlp": {"lr": 0.1, "epochs": 10},
    "logreg": {"lr": 0.1, "epochs": 10, "weight_decay": 1e-3},
    "resnet18": {"lr": 0.05, "epochs": 15, "batch_size": 128},
}


# What a data set's default recipe tunes for its default architecture only: another architecture
# starts from these values instead (MNIST's MLP and logistic regression train without shifts).
NOT_INHERITED: dict[str, dict] = {"mnist": {"augment": "none", "final_lr_ratio": 0.1}}


def recipe_of(scenario: Scenario) -> str:
    """The data set whose default training ``scenario`` gets: its own, or for a person's own data the
    built-in set it resembles (grey images: MNIST's, colour: CIFAR-10's, texts: AG News's)."""
    if scenario.spec.dataset in DEFAULT_CONFIGS:
        return scenario.spec.dataset
    if scenario.kind == "text":
        return "agnews"
    return "mnist" if scenario.input_shape[0] == 1 else "cifar10"


def default_config(dataset: str, arch: str | None = None, **overrides) -> TrainConfig:
    """The default training of ``dataset`` (for ``arch``, when another architecture is asked for).

    Without a ``seed`` the config trains with the scenario's seed (see :func:`resolve`).
    """
    base = DEFAULT_CONFIGS[dataset]
    if arch and arch != base.arch:
        base = replace(base, arch=arch, **{**NOT_INHERITED.get(dataset, {}), **ARCH_DEFAULTS.get(arch, {})})
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Checkpoint:
    """Weights after ``epoch`` epochs (``step`` optimisation steps); ``lr`` was in force for the last step."""

    index: int
    epoch: int
    step: int
    lr: float
    state: dict[str, torch.Tensor]


@dataclass
class TrainedModel:
    """A trained model with its checkpoints and history.

    ``history``: one dict per epoch (``epoch``, ``lr``, ``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc``, ``seconds``). ``attack_success``: share of the triggered
    test split classified as the backdoor target (``None`` without a backdoor).
    """

    model: AttrexModel
    config: TrainConfig
    checkpoints: list[Checkpoint]
    history: list[dict]
    attack_success: float | None
    train_seconds: float
    key: str
    cache_status: str = "computed"
    cache_messages: list[str] = field(default_factory=list)
    # False for a person's model loaded without checkpoints: its one "checkpoint" is the final weights,
    # and methods that sum over checkpoints (TracIn, FLIA) refuse rather than pretend
    checkpoints_given: bool = True

    @property
    def retrainable(self) -> bool:
        """Whether attrex knows how this model was trained (its recipe), so it can train it again on other data."""
        return isinstance(self.config, TrainConfig)

    @classmethod
    def wrap(cls, model: AttrexModel, key: str, config: TrainConfig | None = None,
             checkpoints: list[tuple[dict[str, torch.Tensor], float]] | None = None) -> TrainedModel:
        """A model trained elsewhere (a test's tiny convex problem, say) as a :class:`TrainedModel`.

        ``checkpoints``: ``(state_dict, lr)`` pairs; by default one checkpoint, the model's
        current weights with ``lr = 1``. ``key`` must identify the weights (it keys caches).
        """
        states = checkpoints or [({k: v.detach().clone() for k, v in model.state_dict().items()}, 1.0)]
        ckpts = [Checkpoint(i, i + 1, i + 1, float(lr), state) for i, (state, lr) in enumerate(states)]
        config = config or TrainConfig(arch="logreg", seed=0)
        config = config if config.seed is not None else replace(config, seed=0)  # no scenario here to take it from
        return cls(model.eval(), config, ckpts, [{"test_acc": float("nan")}], None, 0.0, key)

    def model_at(self, index: int) -> AttrexModel:
        """A copy of the model holding checkpoint ``index``'s weights (eval mode)."""
        m = copy.deepcopy(self.model)
        load_state(m, self.checkpoints[index].state)
        return m.eval()

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the scenario's clean test split after the last epoch."""
        return self.history[-1]["test_acc"]

    def summary(self) -> dict:
        return {
            "arch": self.config.arch,
            "test_accuracy": self.test_accuracy,
            "attack_success": self.attack_success,
            "train_seconds": round(self.train_seconds, 1),
            "epochs": self.config.epochs,
            "checkpoints_given": self.checkpoints_given,
            "checkpoints": [{"epoch": c.epoch, "step": c.step, "lr": c.lr} for c in self.checkpoints],
            "cache": self.cache_status,
            "key": self.key,
        }


def load_state(model: AttrexModel, state: dict[str, torch.Tensor]) -> None:
    """Load weights, refusing (with a clear message) weights that belong to another architecture."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            parts.append(f"shape mismatch at {wrong[:3]} ({tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})")
        raise AttrexError(f"these weights belong to another model than {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state)


@torch.no_grad()
def predict(model: AttrexModel, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits ``[N, n_classes]`` in eval mode, batched."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)
    model.train(was_training)
    return out


def predict_proba(model: AttrexModel, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities ``[N, n_classes]`` (softmax of :func:`predict`)."""
    return predict(model, x, batch_size).softmax(-1)


def _augment(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    """Per sample: random crop after zero padding, and a random horizontal flip where ``kind`` asks for one."""
    pad, flip = AUGMENTATIONS[kind]
    if pad == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [n, 1, h, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [n, 1, 1, w]
    crops = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    # in x's memory layout: a one-channel batch keeps the strides that give the faster convolution (~30% here)
    out = torch.empty_like(x).copy_(crops)
    if flip:
        out = torch.where((torch.rand(n, generator=g) < 0.5)[:, None, None, None], out.flip(-1), out)
    return out


# Initialisation draws from torch's global generator: hold this lock and fork the generator so
# that a training running in another thread can neither disturb nor be disturbed by it.
_INIT_LOCK = threading.Lock()


def _new_model(scenario: Scenario, arch: str, seed: int) -> AttrexModel:
    """A model initialised from ``seed``, leaving torch's global random state as it was."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, scenario.input_shape, scenario.n_classes, len(scenario.vocab))


def _fit(scenario: Scenario, cfg: TrainConfig, progress: Progress | None) -> tuple[dict, dict]:
    model = _new_model(scenario, cfg.arch, cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = scenario.x_train, scenario.y_train
    n = len(x)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    g = torch.Generator().manual_seed(cfg.seed)
    ckpt_epochs = set(cfg.checkpoint_epochs())
    tensors: dict[str, torch.Tensor] = {}
    checkpoints, history = [], []
    step, t0 = 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=g)
        loss_sum, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size: (b + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            if scenario.kind == "image":
                xb = _augment(xb, cfg.augment, g)
            lr = cfg.lr_at(step, total)
            for group in opt.param_groups:
                group["lr"] = lr
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            if progress and (b % 10 == 0 or b == steps_per_epoch - 1):
                progress(step / total, f"epoch {epoch}/{cfg.epochs} · loss {loss_sum / ((b + 1) * cfg.batch_size):.3f}")
        logits = predict(model, scenario.x_test)
        record = {
            "epoch": epoch, "lr": lr, "train_loss": loss_sum / n, "train_acc": correct / n,
            "test_loss": F.cross_entropy(logits, scenario.y_test).item(),
            "test_acc": (logits.argmax(1) == scenario.y_test).float().mean().item(),
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if epoch in ckpt_epochs:
            i = len(checkpoints)
            checkpoints.append({"index": i, "epoch": epoch, "step": step, "lr": lr})
            for k, v in model.state_dict().items():
                tensors[f"ckpt{i}/{k}"] = v.clone()
    attack = attack_success(model, scenario)
    meta = {"label": f"{cfg.arch} on {scenario.spec.name or scenario.spec.dataset} (seed {cfg.seed}, "
                     f"{len(scenario.y_train):,} training points)",
            "config": asdict(cfg), "checkpoints": checkpoints, "history": history, "attack_success": attack,
            "train_seconds": time.perf_counter() - t0}
    return tensors, meta


def attack_success(model: AttrexModel, scenario: Scenario) -> float | None:
    """Share of the triggered test samples ``model`` sends to the backdoor's target; ``None`` without a backdoor."""
    if "triggered" not in scenario.test_splits():
        return None
    x_trig, target = scenario.test_split("triggered")
    return (predict(model, x_trig).argmax(1) == target).float().mean().item()


def train(
    scenario: Scenario,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    cache: Cache | None = None,
) -> TrainedModel:
    """Train (or load from the cache) a model for ``scenario``; see the module docstring."""
    return _train_or_load(scenario, config, progress, cache, compute=True)


def load_cached(scenario: Scenario, config: TrainConfig | None = None, cache: Cache | None = None) -> TrainedModel | None:
    """The model :func:`train` would return, if the cache holds it sound; ``None`` (nothing computed) otherwise."""
    return _train_or_load(scenario, config, None, cache, compute=False)


def _train_or_load(scenario: Scenario, config: TrainConfig | ModelSource | None, progress: Progress | None,
                   cache: Cache | None, compute: bool) -> TrainedModel | None:
    if isinstance(config, ModelSource):
        return _load_source(scenario, config, progress)
    cfg = resolve(scenario, config)
    model = _new_model(scenario, cfg.arch, cfg.seed)  # the weights are replaced by the trained ones below
    cache = cache or Cache()
    key = cache_key(scenario, cfg)
    epochs = cfg.checkpoint_epochs()
    expected = {k: v.shape for k, v in model.state_dict().items()}

    def validate(tensors: dict, meta: dict) -> None:
        if [c["epoch"] for c in meta["checkpoints"]] != epochs:
            raise ValueError(f"checkpoints at epochs {[c['epoch'] for c in meta['checkpoints']]}, expected {epochs}")
        for i, c in enumerate(meta["checkpoints"]):
            if c["index"] != i or not (isinstance(c["lr"], float) and c["lr"] >= 0):
                raise ValueError(f"checkpoint record {i} is malformed")
            for k, shape in expected.items():
                t = tensors[f"ckpt{i}/{k}"]
                if t.shape != shape:
                    raise ValueError(f"ckpt{i}/{k} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if len(meta["history"]) != cfg.epochs:
            raise ValueError(f"history of {len(meta['history'])} epochs, expected {cfg.epochs}")
        for value in (meta["history"][-1]["test_acc"], meta["train_seconds"]):
            if not isinstance(value, (int, float)):
                raise ValueError(f"{value!r} where a number belongs")

    if compute:
        art = cache.get_or_compute("model", key, lambda: _fit(scenario, cfg, progress), validate)
    else:
        try:
            art = cache.load("model", key, validate)
        except (FileNotFoundError, CacheError):
            return None
    meta = art.meta
    checkpoints = [
        Checkpoint(c["index"], c["epoch"], c["step"], c["lr"],
                   {k: art.tensors[f"ckpt{c['index']}/{k}"] for k in expected})
        for c in meta["checkpoints"]
    ]
    load_state(model, checkpoints[-1].state)
    model.eval()
    if progress:
        progress(1.0, "loaded from cache" if art.status == "hit" else "trained")
    return TrainedModel(model, cfg, checkpoints, meta["history"], meta["attack_success"], meta["train_seconds"],
                        key, art.status, art.messages)


def _load_source(scenario: Scenario, source: ModelSource, progress: Progress | None) -> TrainedModel:
    """A person's model (:mod:`core.models.custom`): built, loaded, split, checked, its accuracy measured."""
    t0 = time.perf_counter()
    if progress:
        progress(0.0, f"loading {source.entry}")
    arch = custom.registry_arch(source.entry)
    if arch is not None:  # one of attrex's own architectures: built, not imported, and already split
        model = build_model(arch, scenario.input_shape, scenario.n_classes, len(scenario.vocab))
        load_state(model, custom.read_state(source.weights))
        model.eval()
        rename = dict
    else:
        net = custom.build_module(source.entry, scenario.n_classes)
        model = custom.split(net, custom.read_state(source.weights), scenario.x_train[:16], scenario.n_classes,
                             source.head_layer, source.features_layer)
        rename = model.state_from_net
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    listed = custom.read_checkpoints(source.checkpoints) if source.checkpoints else []
    checkpoints = []
    for i, (path, lr) in enumerate(listed):
        state = rename(custom.read_state(path))
        try:
            load_state(copy.deepcopy(model), state)
        except AttrexError as exc:
            raise AttrexError(f"checkpoint {path.name}: {exc}") from None
        checkpoints.append(Checkpoint(i, i + 1, 0, lr, state))
    checkpoints = checkpoints or [Checkpoint(0, 0, 0, 1.0, final)]
    logits = predict(model, scenario.x_test)
    history = [{"epoch": len(listed), "test_acc": (logits.argmax(1) == scenario.y_test).float().mean().item(),
                "test_loss": F.cross_entropy(logits, scenario.y_test).item()}]
    attack = attack_success(model, scenario)
    if progress:
        progress(1.0, "loaded")
    return TrainedModel(model, source, checkpoints, history, attack, time.perf_counter() - t0,
                        custom.source_key(source, scenario.fingerprint), "loaded",
                        checkpoints_given=bool(listed))


def is_cached(scenario: Scenario, config: TrainConfig | ModelSource | None = None, cache: Cache | None = None) -> bool:
    """Whether :func:`train` would load this model (from the cache, or a person's files) rather than train it."""
    if isinstance(config, ModelSource):
        return True
    return (cache or Cache()).contains("model", cache_key(scenario, resolve(scenario, config)))


def resolve(scenario: Scenario, config: TrainConfig | ModelSource | None = None) -> TrainConfig | ModelSource:
    """The config :func:`train` uses: the data set's default without one, and the scenario's seed where it has none."""
    if isinstance(config, ModelSource):
        return config
    cfg = config or default_config(recipe_of(scenario))
    return cfg if cfg.seed is not None else replace(cfg, seed=scenario.spec.seed)


def cache_key(scenario: Scenario, cfg: TrainConfig | None = None) -> str:
    """Key of the trained model: the scenario's data fingerprint, the (resolved) config and the code version."""
    cfg = resolve(scenario, cfg)
    parts = {"scenario": scenario.fingerprint, "config": asdict(cfg), "arch_version": ARCHITECTURES[cfg.arch].version}
    return make_key(parts, CODE_VERSION)
