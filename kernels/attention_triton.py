"""Triton attention forward that also returns the log-sum-exp, dense or block-sparse.

One FlashAttention-style kernel serves both: a program owns one query block of one (batch, head)
and walks key blocks with an online softmax; dense attention visits every key block, the
block-sparse variant only those listed for its query block. Keeping the running maximum and sum
in base 2 (as Triton's fused-attention tutorial does) gives the natural-log LSE as
``(m + log2(l)) * ln 2`` at the end. Rows that see no key (an empty key list) get output 0 and LSE
``-inf``, which is what the LSE merge expects of an empty part.

This module imports Triton at the top; :mod:`ditaccel.kernels.attention` imports it only when a
Triton path is taken. The references live there, beside the dispatcher.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .block_mask import BlockMask

LOG2E = 1.4426950408889634
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def _attention_fwd(
    Q, K, V, Out, LSE,  # (B, H, Lq, D), (B, H, Lk, D) x2, (B, H, Lq, D), (B, H, Lq) fp32
    KV_INDEX, KV_COUNT,  # block-sparse only: (B, H, n_q_blocks, max_kv_blocks), (B, H, n_q_blocks)
    qk_scale,  # softmax scale * log2(e)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh, stride_lm,
    stride_ib, stride_ih, stride_iq, stride_ik,
    stride_cb, stride_ch, stride_cq,
    heads, q_len, kv_len, head_dim,
    SPARSE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_len
    d_ok = offs_d < head_dim

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    if SPARSE:
        n_visits = tl.load(KV_COUNT + b * stride_cb + h * stride_ch + pid_m * stride_cq)
    else:
        n_visits = tl.cdiv(kv_len, BLOCK_N)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    for visit in range(0, n_visits):
        if SPARSE:
            kv_block = tl.load(
                KV_INDEX + b * stride_ib + h * stride_ih + pid_m * stride_iq + visit * stride_ik
            )
        else:
            kv_block = visit
        cols = kv_block * BLOCK_N + offs_n
        col_ok = cols < kv_len
        k = tl.load(
            k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
            mask=col_ok[None, :] & d_ok[:, None],
            other=0.0,
        )
        qk = tl.dot(q, k) * qk_scale
        qk = tl.where(col_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no valid key yet
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
            mask=col_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    seen = l_i > 0.0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, (m_i + tl.math.log2(tl.where(seen, l_i, 1.0))) * LN2, float("-inf"))
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSE + b * stride_lb + h * stride_lh + offs_m * stride_lm, lse, mask=row_ok)


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _launch(q, k, v, scale, block_m, block_n, kv_index=None, kv_count=None, num_warps=None, num_stages=2):
    batch, heads, q_len, head_dim = q.shape
    kv_len = k.shape[2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, q_len), dtype=torch.float32, device=q.device)
    sparse = kv_index is not None
    if not sparse:  # the pointers are never read; any tensor with 4 / 3 strides will do
        kv_index, kv_count = (
            lse.new_zeros((1, 1, 1, 1), dtype=torch.int32),
            lse.new_zeros((1, 1, 1), dtype=torch.int32),
        )
    block_d = _block_d(head_dim)
    if num_warps is None:
        num_warps = 4 if block_d <= 64 else 8
    grid = (triton.cdiv(q_len, block_m), batch * heads)
    _attention_fwd[grid](
        q, k, v, out, lse, kv_index, kv_count,
        scale * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(),
        *kv_index.stride(), *kv_count.stride(),
        heads, q_len, kv_len, head_dim,
        SPARSE=sparse, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out, lse


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    *,
    block_m: int = 64,
    block_n: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention of ``q`` (B, H, Lq, D) over ``k``, ``v`` (B, H, Lk, D): (output, LSE)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _launch(q, k, v, scale, block_m, block_n)


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockMask, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention where each query block sees only the key blocks ``mask`` lists: (output, LSE)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    index, count = mask.index, mask.count
    if index.shape[:2] != q.shape[:2]:  # a mask shared by the batch or the heads
        index = index.expand(*q.shape[:2], *index.shape[2:])
        count = count.expand(*q.shape[:2], count.shape[2])
    return _launch(q, k, v, scale, mask.block_q, mask.block_k, index, count)


@triton.jit
def _merge_fwd(
    OA, LA, OB, LB, Out, L,  # (rows, D) x2 with LSE (rows,) x2; outputs the same
    rows, head_dim,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    r_ok = offs_r < rows
    mask = r_ok[:, None] & (offs_d < head_dim)[None, :]
    la = tl.load(LA + offs_r, mask=r_ok, other=float("-inf"))
    lb = tl.load(LB + offs_r, mask=r_ok, other=float("-inf"))
    top = tl.maximum(la, lb)
    top_safe = tl.where(top == float("-inf"), 0.0, top)
    wa = tl.exp(la - top_safe)
    wb = tl.exp(lb - top_safe)
    total = wa + wb
    seen = total > 0.0
    lse = tl.where(seen, top_safe + tl.log(tl.where(seen, total, 1.0)), float("-inf"))
    norm = tl.where(seen, total, 1.0)
    ptr = offs_r[:, None] * head_dim + offs_d[None, :]
    oa = tl.load(OA + ptr, mask=mask, other=0.0).to(tl.float32)
    ob = tl.load(OB + ptr, mask=mask, other=0.0).to(tl.float32)
    out = (oa * (wa / norm)[:, None]) + (ob * (wb / norm)[:, None])
    tl.store(Out + ptr, out.to(Out.dtype.element_ty), mask=mask)
    tl.store(L + offs_r, lse, mask=r_ok)


def merge_attention(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint key sets from each part's (output, LSE)."""
    head_dim = out_a.shape[-1]
    oa = out_a.reshape(-1, head_dim).contiguous()
    ob = out_b.reshape(-1, head_dim).contiguous()
    la = lse_a.reshape(-1).float().contiguous()
    lb = lse_b.reshape(-1).float().contiguous()
    rows = oa.shape[0]
    out = torch.empty_like(oa)
    lse = torch.empty_like(la)
    block_r = 32
    _merge_fwd[(triton.cdiv(rows, block_r),)](
        oa, la, ob, lb, out, lse, rows, head_dim, BLOCK_R=block_r, BLOCK_D=_block_d(head_dim)
    )
    return out.reshape(out_a.shape), lse.reshape(lse_a.shape)
