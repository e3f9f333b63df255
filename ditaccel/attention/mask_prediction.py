"""Predict which key blocks each query block needs, from pooled queries and keys (SpargeAttn).

Attention between two blocks of tokens is estimated from the blocks' mean query and mean key
(keys mean-subtracted over the sequence first: a component shared by every key shifts all scores of
a query equally and carries no preference). A softmax of these pooled scores over key blocks
(weighted by how many tokens each holds) estimates how the attention mass of a query block spreads;
blocks are kept by top-k fraction or up to a cumulative mass. The estimate is only trusted for
blocks whose tokens point the same way: a query block whose tokens are not self-similar keeps
every key block, and a key block that is not self-similar is kept for every query block. The
diagonal (a query block's own tokens) and any blocks the caller forces (text tokens) are always kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..kernels import BlockMask
from ..kernels.block_mask import block_sizes, num_blocks, split_blocks


@dataclass(frozen=True)
class MaskRule:
    """How many key blocks to keep: ``density`` (top-k share of the key blocks) or ``mass``
    (smallest set of blocks holding that share of the pooled attention), with ``min_similarity``
    (mean cosine similarity of a block's tokens to their mean below which the pooled estimate is
    not trusted and the block is kept). ``head_density``: per head, replaces ``density`` (top-k)."""

    mode: Literal["topk", "mass"] = "topk"
    density: float = 0.5
    mass: float = 0.95
    min_similarity: float = 0.5
    head_density: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("topk", "mass"):
            raise ValueError(f"mode must be topk or mass, got {self.mode!r}")
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if not 0.0 < self.mass <= 1.0:
            raise ValueError(f"mass must be in (0, 1], got {self.mass}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")
        if any(not 0.0 < d <= 1.0 for d in self.head_density):
            raise ValueError(f"head densities must be in (0, 1], got {self.head_density}")


def _pooled(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block means (B, H, n, D), token counts (n,) and self-similarity (B, H, n) of (B, H, L, D)."""
    padded = split_blocks(x, block)
    sizes = block_sizes(x.shape[2], block, x.device, x.dtype)
    means = padded.sum(3) / sizes[:, None]
    unit = torch.nn.functional.normalize(padded, dim=-1)
    direction = torch.nn.functional.normalize(means, dim=-1)
    similarity = (unit * direction[..., None, :]).sum(-1).sum(-1) / sizes  # padding rows add 0
    return means, sizes, similarity


def predict_block_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    rule: MaskRule,
    *,
    block_q: int,
    block_k: int,
    scale: float | None = None,
    keep_queries: torch.Tensor | None = None,
    keep_keys: torch.Tensor | None = None,
    trim: bool = True,
) -> BlockMask:
    """The block mask for attention of ``q`` (B, H, Lq, D) over ``k`` (B, H, Lk, D).

    ``keep_queries`` / ``keep_keys``: boolean (n_q_blocks,) / (n_kv_blocks,) blocks always dense /
    always kept. The diagonal is kept when queries and keys are the same tokens (Lq == Lk and
    equal blocks)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    qf, kf = q.float(), k.float()
    pooled_q, _, sim_q = _pooled(qf, block_q)
    pooled_k, sizes_k, sim_k = _pooled(kf - kf.mean(dim=2, keepdim=True), block_k)
    scores = torch.matmul(pooled_q, pooled_k.transpose(-1, -2)) * scale + torch.log(sizes_k)
    probs = torch.softmax(scores, dim=-1)
    n_q, n_k = probs.shape[-2:]
    if rule.mode == "topk" and rule.head_density:
        if len(rule.head_density) != probs.shape[1]:
            raise ValueError(f"{len(rule.head_density)} head densities for {probs.shape[1]} heads")
        top = [max(1, math.ceil(d * n_k)) for d in rule.head_density]
        wanted = (
            torch.arange(max(top), device=probs.device)[None, None]
            < torch.tensor(top, device=probs.device)[:, None, None]
        )
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep.scatter_(-1, probs.topk(max(top), dim=-1).indices, wanted.expand(*probs.shape[:-1], max(top)))
    elif rule.mode == "topk":
        top = max(1, math.ceil(rule.density * n_k))
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep.scatter_(-1, probs.topk(top, dim=-1).indices, True)
    else:
        ordered, order = probs.sort(dim=-1, descending=True)
        before = ordered.cumsum(-1) - ordered  # mass of the blocks ranked above each one
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, order, before < rule.mass)
    keep |= (sim_q < rule.min_similarity)[..., :, None]
    keep |= (sim_k < rule.min_similarity)[..., None, :]
    if q.shape[2] == k.shape[2] and block_q == block_k:
        keep |= torch.eye(n_q, n_k, dtype=torch.bool, device=keep.device)
    if keep_queries is not None:
        keep |= keep_queries.to(keep.device)[:, None]
    if keep_keys is not None:
        keep |= keep_keys.to(keep.device)[None, :]
    return BlockMask.from_dense(keep, block_q, block_k, q.shape[2], k.shape[2], trim=trim)


def token_blocks(start: int, stop: int, length: int, block: int, device=None) -> torch.Tensor:
    """Boolean (n_blocks,) of the blocks that hold any of the tokens ``start:stop``."""
    flags = torch.zeros(num_blocks(length, block), dtype=torch.bool, device=device)
    if stop > start:
        flags[start // block : (stop - 1) // block + 1] = True
    return flags
