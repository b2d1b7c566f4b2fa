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

    def hashes(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The count sketch's bucket and sign of input coordinates ``idx`` (any shape; ``sparse`` only)."""
        bucket = torch.empty(idx.shape, dtype=torch.long)
        sign = torch.empty(idx.shape)
        blocks = idx // BLOCK
        for b in blocks.unique().tolist():
            at = blocks == b
            bb, ss = self._block(b)
            bucket[at], sign[at] = bb[idx[at] - b * BLOCK], ss[idx[at] - b * BLOCK]
        return bucket, sign

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
                 kind: str = "sparse", lookup_dims: list[tuple[int, int]] = ()):
        self.out_dim, self.kind = out_dim, kind
        if kind == "gaussian":
            total = dense_dim + sum(a * d for a, d in factor_dims) + sum(v * w for v, w in lookup_dims)
            self._flat = Projector(total, out_dim, seed, "gaussian")
            return
        # an embedding's [V, dim] gradient: the count sketch with bucket (h1(v) + h2(j)) mod P and
        # sign s1(v)·s2(j) (the tensor sketch's hash of the outer product, applied to the rows looked up)
        self._lookups = [(Projector(v, out_dim, seed + 7919 * (2 * j + 1) + 104729, "sparse"),
                          Projector(w, out_dim, seed + 7919 * (2 * j + 2) + 104729, "sparse"))
                         for j, (v, w) in enumerate(lookup_dims)]
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
        for (pv, pw), (ids, e, _) in zip(self._lookups, blocks.lookups, strict=True):
            b1, s1 = pv.hashes(ids)                                   # [n, L]
            b2, s2 = pw.hashes(torch.arange(e.shape[2]))              # [dim]
            buckets = (b1[:, :, None] + b2) % p                       # [n, L, dim]
            out.scatter_add_(1, buckets.flatten(1), (e * s1[:, :, None] * s2).flatten(1).to(out.dtype))
        return out


STORAGE = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8}
_LEVELS = {torch.float16: 1.0, torch.int8: 127.0}  # largest stored magnitude of a scaled row


class ProjectedRows:
    """Projected gradients of many rows ``[N, P]``: float32, or compact as float16 or int8.

    Compact rows are stored divided by a per-row scale (the row's largest magnitude over
    the largest stored level), so neither type overflows or underflows whatever the
    gradient's scale; the scale is kept in float32. float16 halves the memory with a rounding
    error of about ``2^-11`` of the row's largest entry; int8 quarters it, rounding each entry
    to ``1/254`` of the largest one (symmetric linear quantisation, as in vector search).
    A dot product converts the rows block by block into a small float32 buffer, which costs
    about as much as the float32 product itself: both are limited by memory bandwidth.
    """

    ROWS = 1024  # rows converted to float32 at a time

    def __init__(self, values: torch.Tensor, scale: torch.Tensor | None = None):
        if values.dtype not in STORAGE.values() or (values.dtype in _LEVELS) != (scale is not None):
            raise AttrexError(f"projected rows are float32, or float16/int8 with a per-row scale; got {values.dtype}")
        self.values, self.scale = values, scale

    @classmethod
    def empty(cls, n: int, dim: int, storage: str = "float32") -> ProjectedRows:
        dtype = STORAGE[storage]
        return cls(torch.zeros(n, dim, dtype=dtype), torch.zeros(n) if dtype in _LEVELS else None)

    @property
    def compact(self) -> bool:
        return self.scale is not None

    def __len__(self) -> int:
        return len(self.values)

    def put(self, start: int, rows: torch.Tensor) -> None:
        """Store float32 ``rows`` at ``start:start + len(rows)``."""
        stop = start + len(rows)
        if not self.compact:
            self.values[start:stop] = rows
            return
        level = _LEVELS[self.values.dtype]
        scale = rows.abs().amax(1) / level
        self.scale[start:stop] = scale
        scaled = rows / scale.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
        self.values[start:stop] = scaled.round_().clamp_(-level, level) if level > 1 else scaled
    def _blocks(self):
        """``(start, float32 rows)`` block by block (the stored tensor itself when float32)."""
        if not self.compact:
            yield 0, self.values
            return
        buf = torch.empty(min(self.ROWS, len(self)), self.values.shape[1])
        for lo in range(0, len(self), self.ROWS):
            part = buf[: min(self.ROWS, len(self) - lo)]
            part.copy_(self.values[lo: lo + len(part)])
            part.mul_(self.scale[lo: lo + len(part), None])
            yield lo, part

    def dot(self, other: torch.Tensor) -> torch.Tensor:
        """``[N, M]`` dot products with float32 ``other`` ``[M, P]``."""
        out = torch.empty(len(self), len(other))
        for lo, part in self._blocks():
            torch.mm(part, other.T, out=out[lo: lo + len(part)])
        return out

    def sq_norms(self) -> torch.Tensor:
        out = torch.empty(len(self))
        for lo, part in self._blocks():
            out[lo: lo + len(part)] = part.pow(2).sum(1)
        return out

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}/proj": self.values}
        if self.compact:
            out[f"{prefix}/scale"] = self.scale
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> ProjectedRows:
        return cls(tensors[f"{prefix}/proj"], tensors.get(f"{prefix}/scale"))
