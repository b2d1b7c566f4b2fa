"""Per-sample gradients, exactly and in bounded memory.

Two ways to get the gradient of a per-sample output (a loss or a logit) with respect to a
chosen subset of the parameters, for every sample of a batch:

- :func:`per_sample_grads`: ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``) in
  chunks, flattened to ``[N, D]``;
- :func:`gradient_blocks`: the same gradients in factored form. The per-sample gradient of
  a linear layer ``y = W a + b`` is the outer product ``δ ⊗ [a, 1]`` of the gradient at its
  output and its (bias-augmented) input, so it is kept as the two factors, and dot products
  between samples are ``(δ·δ')(a·a')`` -- exact, at the cost of ``in + out`` numbers
  instead of ``in × out``. The remaining parameters (convolutions, norms, embeddings) are
  kept as flat per-sample gradients from :func:`per_sample_grads`.

Models are used in eval mode (batch norm with running statistics), so samples in a batch
do not interact and the gradient of the summed output at a layer's output is each sample's
own ``δ``.

Output kinds (``kind``), per sample ``i`` with logits ``z`` and target ``t``:
``ce`` cross-entropy ``-log softmax(z)[t]`` (``t`` a class index); ``soft`` cross-entropy
against a target distribution ``t`` (``[K]``); ``logit`` the logit ``z[t]``; ``margin``
TRAK's ``log p_t / (1 - p_t) = z[t] - logsumexp_{c≠t} z[c]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from core.errors import AttrexError

KINDS = ("ce", "soft", "logit", "margin")


def select_params(model: nn.Module, subset: str = "all") -> list[str]:
    """Names of the parameters in ``subset``: ``all``, ``last`` (the head) or comma-separated name prefixes."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if subset == "all":
        chosen = names
    elif subset == "last":
        chosen = [n for n in names if n.startswith("head.")]
    else:
        prefixes = [s.strip() for s in subset.split(",") if s.strip()]
        chosen = [n for n in names if any(n == p or n.startswith(p.rstrip(".") + ".") for p in prefixes)]
    if not chosen:
        raise AttrexError(f"parameter subset {subset!r} selects no parameter; names start with: "
                          + ", ".join(sorted({n.split('.')[0] for n in names})))
    return chosen


def n_params(model: nn.Module, names: list[str]) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def output(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample output ``[N]`` of ``kind`` (see the module docstring) for logits ``[N, K]``."""
    if kind == "ce":
        return F.cross_entropy(logits, target, reduction="none")
    if kind == "soft":
        return -(target * logits.log_softmax(-1)).sum(-1)
    if kind == "logit":
        return logits.gather(1, target[:, None]).squeeze(1)
    if kind == "margin":
        own = logits.gather(1, target[:, None]).squeeze(1)
        others = logits.scatter(1, target[:, None], float("-inf"))
        return own - others.logsumexp(1)
    raise AttrexError(f"unknown output kind {kind!r}; accepted: {', '.join(KINDS)}")


DENSE_BYTES = 1 << 30  # per-sample gradients materialised at once, at most (a few rows of a ResNet-18)


def rows_within(width: int, cap: int, budget: int = DENSE_BYTES) -> int:
    """How many rows of ``width`` float32 per-sample gradients fit in ``budget`` bytes: between 1 and ``cap``.

    On the default models this is ``cap`` (a CNN's 0.2M parameters take 0.8 MB a row); on
    torchvision's ResNet-18 (11M, 45 MB a row) it is 24, where 1,024 rows would need 45 GB.
    """
    return max(1, min(cap, budget // (4 * max(width, 1))))


def per_sample_grads(
    model: nn.Module, names: list[str], x: torch.Tensor, target: torch.Tensor, kind: str = "ce", chunk: int = 128,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, G)`` with ``G [b, D]`` the flattened per-sample gradients of chunk ``x[start:start+b]``.

    ``D`` is the total size of the parameters ``names`` in the model's order.
    """
    model.eval()
    all_params = dict(model.named_parameters())
    params = {n: all_params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in all_params.items() if n not in params}
    buffers = dict(model.named_buffers())

    def loss(p, xi, ti):
        out = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        return output(kind, out, ti.unsqueeze(0)).sum()

    g_fn = vmap(grad(loss), in_dims=(None, 0, 0))
    for start in range(0, len(x), chunk):
        g = g_fn(params, x[start: start + chunk], target[start: start + chunk])
        yield start, torch.cat([g[n].reshape(len(g[n]), -1) for n in names], 1)


@dataclass
class GradBlocks:
    """Per-sample gradients of ``N`` samples: ``dense [N, D0]``, linear layers as factors, embeddings as lookups.

    ``factors[j] = (A [N, a_j], Δ [N, d_j])``: layer ``j``'s per-sample gradient is
    ``Δ[i] ⊗ A[i]`` (``A`` carries a trailing 1 when the bias is included).
    ``lookups[j] = (ids [N, L], E [N, L, dim], V)`` (only when asked for, see
    :func:`gradient_blocks`): an embedding table's per-sample gradient ``[V, dim]`` is
    ``Σ_p onehot(ids[i, p]) ⊗ E[i, p]``, the rows of the tokens the sample uses (``L·dim``
    numbers instead of ``V·dim``; padding rows carry zeros).
    """

    dense: torch.Tensor
    factors: list[tuple[torch.Tensor, torch.Tensor]]
    lookups: list[tuple[torch.Tensor, torch.Tensor, int]] = field(default_factory=list)

    GATHER = 1 << 25  # numbers gathered at once by :meth:`dot`

    def __len__(self) -> int:
        return len(self.dense)

    def dot(self, other: GradBlocks) -> torch.Tensor:
        """Gradient dot products ``[len(self), len(other)]``, exact."""
        out = self.dense @ other.dense.T
        for (a, d), (a2, d2) in zip(self.factors, other.factors, strict=True):
            out += (d @ d2.T) * (a @ a2.T)
        for (ids, e, vocab), (ids2, e2, _) in zip(self.lookups, other.lookups, strict=True):
            # ``other``'s tables densified per sample ([m, V, dim], m is a query batch), then each of
            # our looked-up rows is gathered from them: Σ_p E[i, p] · T_j[ids[i, p]]
            width = e.shape[2]
            for m0 in range(0, len(ids2), 16):
                tables = torch.zeros(min(16, len(ids2) - m0), vocab, width, dtype=e2.dtype)
                for k in range(len(tables)):
                    tables[k].index_add_(0, ids2[m0 + k], e2[m0 + k])
                step = max(1, self.GATHER // max(1, ids.shape[1] * width * len(tables)))
                for s in range(0, len(ids), step):
                    rows = tables[:, ids[s: s + step]]                     # [t, n, L, dim]
                    out[s: s + step, m0: m0 + len(tables)] += torch.einsum("npd,tnpd->nt", e[s: s + step], rows)
        return out

    def sq_norms(self) -> torch.Tensor:
        """Squared gradient norms ``[N]``."""
        out = self.dense.pow(2).sum(1)
        for a, d in self.factors:
            out += a.pow(2).sum(1) * d.pow(2).sum(1)
        for ids, e, _ in self.lookups:
            out += ((e @ e.transpose(1, 2)) * (ids[:, :, None] == ids[:, None, :])).sum((1, 2))
        return out

    def flat(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The gradients of samples ``start:stop`` materialised as ``[b, D]`` (dense part, linear layers, embeddings)."""
        parts = [self.dense[start:stop]]
        for a, d in self.factors:
            parts.append((d[start:stop, :, None] * a[start:stop, None, :]).flatten(1))
        for ids, e, vocab in self.lookups:
            ids, e = ids[start:stop], e[start:stop]
            width = e.shape[2]
            table = torch.zeros(len(ids), vocab * width, dtype=e.dtype)
            cols = ids[:, :, None] * width + torch.arange(width)
            parts.append(table.scatter_add_(1, cols.flatten(1), e.flatten(1)))
        return torch.cat(parts, 1)

    def scale(self, factor: float) -> GradBlocks:
        """The gradients times ``factor`` (applied to the dense part, each ``Δ`` and each ``E``)."""
        return GradBlocks(self.dense * factor, [(a, d * factor) for a, d in self.factors],
                          [(ids, e * factor, v) for ids, e, v in self.lookups])

    @property
    def width(self) -> int:
        """Numbers stored per sample."""
        return (self.dense.shape[1] + sum(a.shape[1] + d.shape[1] for a, d in self.factors)
                + sum(ids.shape[1] * (1 + e.shape[2]) for ids, e, _ in self.lookups))

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}/dense": self.dense.contiguous()}
        for j, (a, d) in enumerate(self.factors):
            out[f"{prefix}/A{j}"], out[f"{prefix}/D{j}"] = a.contiguous(), d.contiguous()
        for j, (ids, e, _) in enumerate(self.lookups):
            out[f"{prefix}/I{j}"], out[f"{prefix}/E{j}"] = ids.contiguous(), e.contiguous()
        return out

    @property
    def vocab_sizes(self) -> list[int]:
        """The tables' row counts (not in :meth:`to_tensors`: every tensor there has one row per sample)."""
        return [v for _, _, v in self.lookups]

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, vocab_sizes: list[int] = ()) -> GradBlocks:
        j, factors = 0, []
        while f"{prefix}/A{j}" in tensors:
            factors.append((tensors[f"{prefix}/A{j}"], tensors[f"{prefix}/D{j}"]))
            j += 1
        j, lookups = 0, []
        while f"{prefix}/I{j}" in tensors:
            if j >= len(vocab_sizes):
                raise ValueError(f"{prefix}: looked-up embedding rows without the size of their table")
            lookups.append((tensors[f"{prefix}/I{j}"], tensors[f"{prefix}/E{j}"], int(vocab_sizes[j])))
            j += 1
        return cls(tensors[f"{prefix}/dense"], factors, lookups)

    @staticmethod
    def cat(parts: list[GradBlocks]) -> GradBlocks:
        dense = torch.cat([p.dense for p in parts])
        factors = [(torch.cat([p.factors[j][0] for p in parts]), torch.cat([p.factors[j][1] for p in parts]))
                   for j in range(len(parts[0].factors))]
        lookups = [(torch.cat([p.lookups[j][0] for p in parts]), torch.cat([p.lookups[j][1] for p in parts]),
                    parts[0].lookups[j][2]) for j in range(len(parts[0].lookups))]
        return GradBlocks(dense, factors, lookups)


def _factorable_linears(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Linear, bool, bool]]:
    """Linear layers with a selected weight or bias: ``(name, module, has_weight, has_bias)``."""
    chosen = set(names)
    out = []
    for mname, m in model.named_modules():
        if isinstance(m, nn.Linear):
            w, b = f"{mname}.weight" in chosen, m.bias is not None and f"{mname}.bias" in chosen
            if w or b:
                out.append((mname, m, w, b))
    return out


def dense_names(model: nn.Module, names: list[str]) -> list[str]:
    """The selected parameters that :func:`gradient_blocks` keeps as flat gradients (not linear layers)."""
    linear = set()
    for mname, *_ in _factorable_linears(model, names):
        linear.update({f"{mname}.weight", f"{mname}.bias"})
    return [n for n in names if n not in linear]


def _embeddings(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Embedding]]:
    """Embedding tables whose weight is selected."""
    chosen = set(names)
    return [(mname, m) for mname, m in model.named_modules()
            if isinstance(m, nn.Embedding) and f"{mname}.weight" in chosen]


def flat_names(model: nn.Module, names: list[str], lookups: bool = False) -> list[str]:
    """The parameters whose per-sample gradients :func:`gradient_blocks` materialises as flat rows: neither
    factored linear layers nor, with ``lookups``, embedding tables."""
    skip = {f"{mname}.weight" for mname, _ in _embeddings(model, names)} if lookups else set()
    return [n for n in dense_names(model, names) if n not in skip]


def flat_width(model: nn.Module, names: list[str], lookups: bool = False) -> int:
    """Width of :attr:`GradBlocks.dense` for these parameters (no forward pass needed)."""
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in flat_names(model, names, lookups))


def gradient_blocks(
    model: nn.Module, names: list[str], x: torch.Tensor, target: torch.Tensor, kind: str = "ce", chunk: int = 256,
    lookups: bool = False,
) -> GradBlocks:
    """Per-sample gradients of ``names`` for ``x``, factored where the layer is linear (see the module docstring).

    ``lookups``: keep each selected embedding table's gradient as the rows its sample looks up
    (:attr:`GradBlocks.lookups`) instead of a dense ``V·dim`` vector per sample.
    """
    model.eval()
    linears = _factorable_linears(model, names)
    tables = _embeddings(model, names) if lookups else []
    rest = flat_names(model, names, lookups)
    params = dict(model.named_parameters())
    dense_parts, factor_parts, lookup_parts = [], [], []
    for start in range(0, len(x), chunk):
        xb, tb = x[start: start + chunk], target[start: start + chunk]
        captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def hook(name, captured=captured, flat=True):
            def fn(module, inputs, out):
                if flat and inputs[0].dim() != 2:
                    raise AttrexError(f"layer {name} sees inputs of shape {list(inputs[0].shape)}; expected [N, features]")
                captured[name] = (inputs[0].detach(), out)
            return fn

        # One sample: its gradient is the ordinary gradient, taken in the same backward pass as the
        # linear layers' deltas (vmap's per-call set-up costs more than the whole backward here).
        single = [params[n] for n in rest] if len(xb) == 1 else []
        handles = [m.register_forward_hook(hook(mname)) for mname, m, _, _ in linears]
        handles += [m.register_forward_hook(hook(mname, flat=False)) for mname, m in tables]
        try:
            with torch.enable_grad():
                logits = model(xb)
                outs = [captured[n][1] for n, *_ in linears] + [captured[n][1] for n, _ in tables]
                grads = torch.autograd.grad(output(kind, logits, tb).sum(), outs + single) if outs or single else []
        finally:
            for h in handles:
                h.remove()
        deltas = grads[:len(linears)]
        fac = []
        for (mname, _, w, b), delta in zip(linears, deltas, strict=True):
            a = captured[mname][0]
            cols = ([a] if w else []) + ([torch.ones(len(a), 1, dtype=a.dtype)] if b else [])
            fac.append((torch.cat(cols, 1), delta.detach()))
        factor_parts.append(fac)
        looked = []
        for (mname, m), e in zip(tables, grads[len(linears): len(outs)], strict=True):
            ids = captured[mname][0]
            e = e.detach()
            if m.padding_idx is not None:  # nn.Embedding never updates its padding row
                e = e.masked_fill((ids == m.padding_idx)[..., None], 0.0)
            looked.append((ids, e, m.num_embeddings))
        lookup_parts.append(looked)
        if single:
            dense_parts.append(torch.cat([g.reshape(1, -1) for g in grads[len(outs):]], 1))
        elif rest:
            vmap_rows = rows_within(sum(params[n].numel() for n in rest), chunk)
            dense_parts.append(torch.cat([g for _, g in per_sample_grads(model, rest, xb, tb, kind, vmap_rows)]))
        else:
            dense_parts.append(torch.zeros(len(xb), 0))
    dense = torch.cat(dense_parts)
    factors = [(torch.cat([f[j][0] for f in factor_parts]), torch.cat([f[j][1] for f in factor_parts]))
               for j in range(len(linears))]
    looked = [(torch.cat([p[j][0] for p in lookup_parts]), torch.cat([p[j][1] for p in lookup_parts]),
               lookup_parts[0][j][2]) for j in range(len(tables))]
    return GradBlocks(dense, factors, looked)
