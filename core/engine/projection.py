"""Seeded random projections ``R ∈ R^{P×D}`` with ``E[RᵀR] = I``, so projected dot products are unbiased.

Both kinds are generated block by block from ``(seed, block index)``, so no dense ``P × D``
matrix is ever needed for a large ``D``, and the same seed gives the same projection in any
process (shards of a precompute agree):

- ``gaussian``: entries ``N(0, 1/P)`` (the TracIn-RP / TRAK projection). Projecting costs
  ``O(D·P)``; the blocks are kept in memory when they fit ``keep_bytes``, else regenerated.
- ``sparse``: a count sketch (Charikar et al. 2002; the sparse Johnson–Lindenstrauss
  transform with one non-zero per column): coordinate ``j`` goes to bucket ``h(j)`` with sign
  ``s(j) = ±1``. Projecting costs ``O(D)`` whatever ``P``, which is what makes a query over
  all parameters fast.
"""

from __future__ import annotations

import torch

from core.errors import AttrexError

BLOCK = 1 << 16  # input coordinates per generated block
KINDS = ("sparse", "gaussian")


class Projector:
    """Project ``[N, D]`` to ``[N, P]``; see the module docstring."""

    def __init__(self, dim: int, out_dim: int, seed: int = 0, kind: str = "sparse", keep_bytes: int = 1 << 28):
        if kind not in KINDS:
            raise AttrexError(f"projection must be one of {', '.join(KINDS)}; got {kind!r}")
        if out_dim < 1 or dim < 1:
            raise AttrexError(f"projection dimensions must be positive; got {dim} -> {out_dim}")
        self.dim, self.out_dim, self.seed, self.kind = dim, out_dim, seed, kind
        self._blocks: dict[int, tuple[torch.Tensor, ...]] = {}
        self._keep = kind == "sparse" or dim * out_dim * 4 <= keep_bytes

    def _block(self, b: int) -> tuple[torch.Tensor, ...]:
        if b in self._blocks:
            return self._blocks[b]
        width = min(BLOCK, self.dim - b * BLOCK)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        if self.kind == "gaussian":
            out = (torch.randn(width, self.out_dim, generator=g) / self.out_dim ** 0.5,)
        else:
            bucket = torch.randint(0, self.out_dim, (width,), generator=g)
            sign = torch.randint(0, 2, (width,), generator=g).float() * 2 - 1
            out = (bucket, sign)
        if self._keep:
            self._blocks[b] = out
        return out

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        if g.dim() != 2 or g.shape[1] != self.dim:
            raise AttrexError(f"projector expects [N, {self.dim}]; got {list(g.shape)}")
        out = torch.zeros(len(g), self.out_dim, dtype=g.dtype)
        for b in range((self.dim + BLOCK - 1) // BLOCK):
            cols = g[:, b * BLOCK: (b + 1) * BLOCK]
            if self.kind == "gaussian":
                out += cols @ self._block(b)[0].to(g.dtype)
            else:
                bucket, sign = self._block(b)
                out.index_add_(1, bucket, cols * sign.to(g.dtype))
        return out


class BlockProjector:
    """Project :class:`~core.engine.grads.GradBlocks` without materialising the factored layers.

    ``sparse``: the dense part by a count sketch, and each linear layer's outer product
    ``δ ⊗ a`` by a tensor sketch (Pham & Pagh 2013): the circular convolution of count
    sketches of ``δ`` and ``a``, computed with FFTs. It is a count sketch of the flattened
    outer product whose bucket is ``(h₁(j) + h₂(k)) mod P`` and whose sign is ``s₁(j)s₂(k)``,
    so dot products stay unbiased, at ``O(a + d + P log P)`` per sample instead of
    ``O(a·d)``. ``gaussian``: the gradients are materialised in chunks and multiplied by a
    dense Gaussian ``R`` (see :class:`Projector`).
    """

    def __init__(self, dense_dim: int, factor_dims: list[tuple[int, int]], out_dim: int, seed: int = 0,
                 kind: str = "sparse"):
        self.out_dim, self.kind = out_dim, kind
        if kind == "gaussian":
            total = dense_dim + sum(a * d for a, d in factor_dims)
            self._flat = Projector(total, out_dim, seed, "gaussian")
            return
        self._dense = Projector(dense_dim, out_dim, seed, "sparse") if dense_dim else None
        self._factors = [(Projector(a, out_dim, seed + 7919 * (2 * j + 1), "sparse"),
                          Projector(d, out_dim, seed + 7919 * (2 * j + 2), "sparse"))
                         for j, (a, d) in enumerate(factor_dims)]

    def __call__(self, blocks, chunk: int = 256) -> torch.Tensor:
        if self.kind == "gaussian":
            return torch.cat([self._flat(blocks.flat(i, i + chunk)) for i in range(0, len(blocks), chunk)])
        n, p = len(blocks), self.out_dim
        out = self._dense(blocks.dense) if self._dense is not None else torch.zeros(n, p)
        for (pa, pd), (a, d) in zip(self._factors, blocks.factors, strict=True):
            spectrum = torch.fft.rfft(pa(a), n=p) * torch.fft.rfft(pd(d), n=p)
            out += torch.fft.irfft(spectrum, n=p)
        return out
