"""Attention with log-sum-exp, block-sparse attention and the LSE merge: references and dispatch.

Each operation has a plain PyTorch reference here and a Triton kernel with the same signature in
:mod:`.attention_triton`. The public functions pick Triton for CUDA tensors when Triton is
installed and the reference elsewhere; Triton is imported only then, so the package works without
it. ``DITACCEL_KERNELS=reference`` forces the references; ``DITACCEL_KERNELS=triton`` forces the
kernels, also on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests run them).

All take (batch, heads, seq, head_dim) tensors; queries and keys may have different lengths; LSE is
the natural log, float32, ``-inf`` for a row that sees no key (its output is 0). FLOPs: the
references run matmuls the FLOP counter sees and mark them as attention; the kernels report theirs.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os

import torch

from ..metrics.flops import counting_flops, report_flops
from .block_mask import BlockMask, split_blocks

# score matrices of the references are built in chunks of at most this many elements
_CHUNK_ELEMENTS = 1 << 26


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the public functions take the Triton path for these tensors."""
    choice = os.environ.get("DITACCEL_KERNELS", "auto").lower()
    if choice not in ("auto", "triton", "reference"):
        raise ValueError(f"DITACCEL_KERNELS must be auto, triton or reference, got {choice!r}")
    if choice == "reference" or not triton_available():
        return False
    return choice == "triton" or all(t.is_cuda for t in tensors)


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("attention expects (batch, heads, seq, head_dim) tensors")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if v.shape[-1] != q.shape[-1]:
        raise ValueError("value head_dim must equal the query head_dim")


def _softmax_with_lse(scores: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and LSE of fp32 scores, masked by ``valid``; rows with no valid entry: 0, -inf."""
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    finite = torch.isfinite(lse)
    probs = torch.exp(scores - torch.where(finite, lse, 0.0)[..., None])
    return probs, lse


# --- dense attention with LSE ---------------------------------------------------------------------


def attention_with_lse_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention of ``q`` (B, H, Lq, D) over ``k``, ``v`` (B, H, Lk, D): (output, LSE)."""
    _check(q, k, v)
    scale = _scale(q, scale)
    batch, heads, q_len, dim = q.shape
    kv_len = k.shape[2]
    rows = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * kv_len))
    kf, vf = k.float(), v.float()
    outs, lses = [], []
    for start in range(0, q_len, rows):
        scores = torch.matmul(q[:, :, start : start + rows].float(), kf.transpose(-1, -2)) * scale
        probs, lse = _softmax_with_lse(scores, None)
        outs.append(torch.matmul(probs, vf))
        lses.append(lse)
    out = torch.cat(outs, dim=2).to(q.dtype) if outs else q.new_zeros(q.shape)
    lse = torch.cat(lses, dim=2) if lses else q.new_zeros(q.shape[:3], dtype=torch.float32)
    report_flops(4 * batch * heads * q_len * kv_len * dim, attention=True, counted=True)
    return out, lse


def _fused_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether PyTorch's fused CPU attention can serve :func:`attention_with_lse` (not when the
    references are forced, nor for an empty key set, whose LSE must be ``-inf``)."""
    return (
        os.environ.get("DITACCEL_KERNELS", "auto").lower() == "auto"
        and all(t.device.type == "cpu" for t in (q, k, v))
        and q.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and q.dtype == k.dtype == v.dtype
        and k.shape[2] > 0
    )


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention with its log-sum-exp: Triton on CUDA, PyTorch's fused kernel on CPU, the
    reference elsewhere."""
    _check(q, k, v)
    if not use_triton(q, k, v):
        if _fused_cpu(q, k, v):
            # PyTorch's fused CPU kernel (the one SDPA runs) returns its LSE too; the FLOP
            # counter knows the op, attention included
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, scale=_scale(q, scale)
            )[:2]
            return out, lse.float()
        return attention_with_lse_reference(q, k, v, scale)
    from . import attention_triton

    out = attention_triton.attention_with_lse(q, k, v, scale)
    batch, heads, q_len, dim = q.shape
    report_flops(4 * batch * heads * q_len * k.shape[2] * dim, attention=True)
    return out


# --- block-sparse attention -----------------------------------------------------------------------


def _check_mask(q: torch.Tensor, k: torch.Tensor, mask: BlockMask) -> None:
    if mask.q_len != q.shape[2] or mask.kv_len != k.shape[2]:
        raise ValueError(
            f"mask is for {mask.q_len} queries x {mask.kv_len} keys, got {q.shape[2]} x {k.shape[2]}"
        )
    for have, want, what in (
        (mask.index.shape[0], q.shape[0], "batch"),
        (mask.index.shape[1], q.shape[1], "heads"),
    ):
        if have not in (1, want):
            raise ValueError(f"mask has {have} {what}, the tensors {want}")


def _row_groups(mask: BlockMask, batch: int, heads: int) -> list[tuple[int, torch.Tensor]]:
    """The (batch, head, query block) rows of the mask grouped by how many key blocks they visit:
    ``[(count, row ids)]`` (one host sync). Rows of a group all attend to equally many keys, so a
    group is one dense batched attention with no padding."""
    count = mask.count.expand(batch, heads, -1).reshape(-1)
    order = torch.argsort(count, stable=True)
    values, sizes = torch.unique_consecutive(count[order], return_counts=True)
    groups, start = [], 0
    for value, size in zip(values.tolist(), sizes.tolist(), strict=True):
        groups.append((value, order[start : start + size]))
        start += size
    return groups


def _sparse_by_groups(q, k, v, mask: BlockMask, scale: float, with_lse: bool):
    """Block-sparse attention computed group by group (see :func:`_row_groups`)."""
    batch, heads, q_len, dim = q.shape
    bq, bk = mask.block_q, mask.block_k
    n_q, n_k = mask.q_blocks, mask.kv_blocks
    qb = split_blocks(q, bq).reshape(-1, bq, dim)  # (R, bq, D), R = B * H * n_q
    kb = split_blocks(k, bk).reshape(batch * heads, n_k, bk, dim)
    vb = split_blocks(v, bk).reshape(batch * heads, n_k, bk, dim)
    partial = k.shape[2] % bk != 0
    key_ok = torch.ones(n_k, bk, dtype=torch.bool, device=q.device)
    key_ok[-1, k.shape[2] - (n_k - 1) * bk :] = False
    index = mask.index.expand(batch, heads, -1, -1).reshape(batch * heads * n_q, -1).long()
    out = torch.zeros(qb.shape, dtype=torch.float32 if with_lse else q.dtype, device=q.device)
    lse = torch.full((qb.shape[0], bq), float("-inf"), device=q.device) if with_lse else None
    executed = 0
    for count, rows in _row_groups(mask, batch, heads):
        if count == 0:
            continue
        step = max(1, _CHUNK_ELEMENTS // (count * bk * (dim + bq)))
        for chunk in rows.split(step):
            blocks = index[chunk, :count]  # (n, c)
            pairs = (chunk // n_q)[:, None]
            keys = kb[pairs, blocks].flatten(1, 2)  # (n, c * bk, D)
            values = vb[pairs, blocks].flatten(1, 2)
            valid = key_ok[blocks].flatten(1, 2) if partial else None  # (n, c * bk)
            if with_lse:
                scores = torch.matmul(qb[chunk].float(), keys.float().transpose(-1, -2)) * scale
                probs, chunk_lse = _softmax_with_lse(scores, None if valid is None else valid[:, None, :])
                out[chunk] = torch.matmul(probs, values.float())
                lse[chunk] = chunk_lse
                executed += 4 * chunk.numel() * bq * count * bk * dim
            else:
                attn_mask = None if valid is None else valid[:, None, None, :]
                out[chunk] = torch.nn.functional.scaled_dot_product_attention(
                    qb[chunk][:, None], keys[:, None], values[:, None], attn_mask=attn_mask, scale=scale
                )[:, 0]
    out = out.reshape(batch, heads, n_q * bq, dim)[:, :, :q_len].to(q.dtype)
    if not with_lse:
        return out, None
    report_flops(executed, attention=True, counted=True)
    return out, lse.reshape(batch, heads, n_q * bq)[:, :, :q_len]


def block_sparse_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockMask, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention where each query block sees only the key blocks ``mask`` lists: (output, LSE).

    Query blocks are grouped by how many key blocks they visit and each group gathers its key /
    value blocks and attends to them, so the work (and the counted FLOPs) follows the mask."""
    _check(q, k, v)
    _check_mask(q, k, mask)
    return _sparse_by_groups(q, k, v, mask, _scale(q, scale), with_lse=True)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockMask,
    scale: float | None = None,
    *,
    return_lse: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block-sparse attention with its log-sum-exp: Triton on CUDA, the reference elsewhere.

    ``return_lse=False`` (LSE ``None``) lets the CPU path run each group through PyTorch's fused
    attention, a few times faster than the reference's explicit softmax."""
    _check(q, k, v)
    _check_mask(q, k, mask)
    if not use_triton(q, k, v):
        if return_lse:
            return block_sparse_attention_reference(q, k, v, mask, scale)
        return _sparse_by_groups(q, k, v, mask, _scale(q, scale), with_lse=False)
    from . import attention_triton

    for block in (mask.block_q, mask.block_k):
        if block < 16 or block & (block - 1):
            raise ValueError(f"the Triton kernel needs power-of-two blocks of at least 16, got {block}")
    out, lse = attention_triton.block_sparse_attention(q, k, v, mask, scale)
    if counting_flops():  # the visited pairs need a host sync: only while a bench counts
        pairs = (
            mask.visited_pairs() * (q.shape[0] // mask.index.shape[0]) * (q.shape[1] // mask.index.shape[1])
        )
        report_flops(4 * pairs * q.shape[-1], attention=True)
    return out, (lse if return_lse else None)


# --- merging partial attentions -------------------------------------------------------------------


def _check_merge(out_a, lse_a, out_b, lse_b) -> None:
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape or out_a.shape[:-1] != lse_a.shape:
        raise ValueError(
            f"cannot merge outputs {tuple(out_a.shape)} / {tuple(out_b.shape)} with LSE "
            f"{tuple(lse_a.shape)} / {tuple(lse_b.shape)}"
        )


def merge_attention_reference(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint key sets from each part's (output, LSE):
    L = logaddexp(L_a, L_b), O = exp(L_a - L) O_a + exp(L_b - L) O_b (empty parts: LSE -inf)."""
    _check_merge(out_a, lse_a, out_b, lse_b)
    la, lb = lse_a.float(), lse_b.float()
    lse = torch.logaddexp(la, lb)
    finite = torch.isfinite(lse)
    safe = torch.where(finite, lse, 0.0)
    wa = torch.where(finite, torch.exp(la - safe), 0.0)[..., None]
    wb = torch.where(finite, torch.exp(lb - safe), 0.0)[..., None]
    out = wa * out_a.float() + wb * out_b.float()
    return out.to(out_a.dtype), lse


def merge_attention(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LSE merge: Triton on CUDA, the reference elsewhere."""
    if not use_triton(out_a, out_b):
        return merge_attention_reference(out_a, lse_a, out_b, lse_b)
    _check_merge(out_a, lse_a, out_b, lse_b)
    from . import attention_triton

    return attention_triton.merge_attention(out_a, lse_a, out_b, lse_b)
