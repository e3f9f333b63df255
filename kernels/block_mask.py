"""Which key blocks each query block visits: the block-sparse kernels' interface.

A mask is kept as index lists, not as a boolean matrix, because that is what the kernel loop walks:
``index[b, h, i, :count[b, h, i]]`` are the key blocks (ascending) that query block ``i`` of batch
``b`` and head ``h`` attends to; entries past the count are padding. The boolean form converts
both ways for tests and for building masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def num_blocks(length: int, block: int) -> int:
    return -(-length // block)


def block_sizes(length: int, block: int, device=None, dtype=torch.int64) -> torch.Tensor:
    """Tokens in each block of a ``length``-token sequence (the last block may be partial)."""
    n = num_blocks(length, block)
    sizes = torch.full((n,), block, device=device, dtype=dtype)
    sizes[-1] = length - (n - 1) * block
    return sizes


def split_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """(B, H, L, D) -> (B, H, n_blocks, block, D), zero-padded at the end."""
    batch, heads, length, dim = x.shape
    pad = -length % block
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(batch, heads, -1, block, dim)


@dataclass(frozen=True)
class BlockMask:
    """Key-block lists of shape (B, H, n_q_blocks, width) with counts (B, H, n_q_blocks), int32."""

    index: torch.Tensor
    count: torch.Tensor
    block_q: int
    block_k: int
    q_len: int
    kv_len: int

    def __post_init__(self) -> None:
        if self.block_q < 1 or self.block_k < 1:
            raise ValueError(f"block sizes must be positive, got {self.block_q}, {self.block_k}")
        n_q, n_k = num_blocks(self.q_len, self.block_q), num_blocks(self.kv_len, self.block_k)
        if self.index.dim() != 4 or self.count.shape != self.index.shape[:3]:
            raise ValueError(
                f"index must be (B, H, n_q_blocks, width) and count (B, H, n_q_blocks); "
                f"got {tuple(self.index.shape)} and {tuple(self.count.shape)}"
            )
        if self.index.shape[2] != n_q:
            raise ValueError(
                f"{self.q_len} queries in blocks of {self.block_q} are {n_q} blocks, mask has {self.index.shape[2]}"
            )
        if self.index.shape[3] > n_k:
            raise ValueError(f"mask lists {self.index.shape[3]} key blocks per row, there are only {n_k}")

    @property
    def q_blocks(self) -> int:
        return self.index.shape[2]

    @property
    def kv_blocks(self) -> int:
        return num_blocks(self.kv_len, self.block_k)

    @classmethod
    def from_dense(
        cls, keep: torch.Tensor, block_q: int, block_k: int, q_len: int, kv_len: int, *, trim: bool = True
    ) -> BlockMask:
        """From a boolean (B, H, n_q_blocks, n_kv_blocks) matrix. ``trim`` cuts the lists to the
        longest row (one host sync; leave it off on a GPU, where the kernel reads only counts)."""
        count = keep.sum(-1, dtype=torch.int32)
        # a stable descending sort of the flags lists the kept blocks first, in ascending order
        index = torch.sort(keep.to(torch.int8), dim=-1, descending=True, stable=True).indices.to(torch.int32)
        if trim:
            width = max(int(count.max()) if count.numel() else 0, 1)
            index = index[..., :width].contiguous()
        return cls(index, count, block_q, block_k, q_len, kv_len)

    @classmethod
    def full(
        cls, batch: int, heads: int, q_len: int, kv_len: int, block_q: int, block_k: int, device=None
    ) -> BlockMask:
        n_q, n_k = num_blocks(q_len, block_q), num_blocks(kv_len, block_k)
        keep = torch.ones((batch, heads, n_q, n_k), dtype=torch.bool, device=device)
        return cls.from_dense(keep, block_q, block_k, q_len, kv_len)

    def to_dense(self) -> torch.Tensor:
        """Boolean (B, H, n_q_blocks, n_kv_blocks) matrix of the visited blocks."""
        slots = torch.arange(self.index.shape[-1], device=self.index.device)
        valid = slots < self.count[..., None]
        # padding slots write into one spare column, dropped after
        keep = torch.zeros(
            (*self.index.shape[:3], self.kv_blocks + 1), dtype=torch.bool, device=self.index.device
        )
        keep.scatter_(-1, torch.where(valid, self.index, self.kv_blocks).long(), True)
        return keep[..., :-1]

    def token_mask(self) -> torch.Tensor:
        """Boolean (B, H, q_len, kv_len) mask of the query-key pairs attended (for references)."""
        keep = self.to_dense()
        rows = keep.repeat_interleave(self.block_q, dim=2)[:, :, : self.q_len]
        return rows.repeat_interleave(self.block_k, dim=3)[..., : self.kv_len]

    def density(self) -> float:
        """Share of the (query block, key block) pairs visited (host sync)."""
        total = self.count.numel() * self.kv_blocks
        return float(self.count.sum()) / total if total else 1.0

    def visited_pairs(self) -> int:
        """Query-key token pairs computed, counting partial edge blocks exactly (host sync)."""
        key_sizes = block_sizes(self.kv_len, self.block_k, self.index.device)
        query_sizes = block_sizes(self.q_len, self.block_q, self.index.device)
        keep = self.to_dense().to(key_sizes.dtype)
        return int(((keep @ key_sizes) * query_sizes).sum())
