"""Attention kernels: Triton (under TRITON_INTERPRET=1 on CPU) against the PyTorch references,
and the references against plain dense attention."""

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ditaccel.kernels import (
    BlockMask,
    attention_with_lse,
    attention_with_lse_reference,
    block_sparse_attention,
    block_sparse_attention_reference,
    merge_attention,
    merge_attention_reference,
    use_triton,
)
from ditaccel.kernels.block_mask import num_blocks
from ditaccel.metrics import count_flops

try:
    import triton
except ImportError:  # the PyTorch references are tested regardless; only the Triton tests need it
    triton = None
kt = None
if triton is not None:
    from ditaccel.kernels import attention_triton as kt  # with Triton present, an import error fails

needs_triton = pytest.mark.skipif(triton is None, reason="Triton is not installed")

TOL = {torch.float32: 1e-4, torch.float16: 2e-3}
# benchmarks/gpu_check.sh runs these on the GPU (DITACCEL_TEST_DEVICE=cuda); CPU tensors take
# Triton's interpreter (conftest)
DEVICE = torch.device(os.environ.get("DITACCEL_TEST_DEVICE", "cpu"))


def qkv(batch, heads, q_len, kv_len, dim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=g).to(DEVICE, dtype)
    k = torch.randn(batch, heads, kv_len, dim, generator=g).to(DEVICE, dtype)
    v = torch.randn(batch, heads, kv_len, dim, generator=g).to(DEVICE, dtype)
    return q, k, v


def dense(q, k, v, token_mask=None, scale=None):
    """Plain attention in float64 with LSE; rows with no visible key: 0 and -inf."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if token_mask is not None:
        s = s.masked_fill(~token_mask, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - torch.where(torch.isfinite(lse), lse, 0)[..., None])
    return p @ v.double(), lse


def random_mask(batch, heads, q_len, kv_len, bq, bk, density, seed, empty_row=False):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(batch, heads, num_blocks(q_len, bq), num_blocks(kv_len, bk), generator=g) < density
    if empty_row:
        keep[0, 0, 0] = False
    return BlockMask.from_dense(keep.to(DEVICE), bq, bk, q_len, kv_len)


def close(a, b, tol):
    a, b = a.double(), b.double()
    both_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    return torch.where(both_inf, 0.0, (a - b).abs()).max().item() <= tol


# --- dense attention with LSE ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "shape", [(2, 3, 37, 53, 64), (1, 2, 16, 16, 128), (2, 1, 70, 20, 48)], ids=["q!=kv", "d128", "d48"]
)
@needs_triton
def test_dense_kernel_matches_reference(dtype, shape):
    q, k, v = qkv(*shape, dtype=dtype)
    out_t, lse_t = kt.attention_with_lse(q, k, v, block_m=16, block_n=16)
    out_r, lse_r = attention_with_lse_reference(q, k, v)
    out_d, lse_d = dense(q, k, v)
    assert out_t.dtype == dtype and lse_t.dtype == torch.float32
    assert close(out_t, out_r, TOL[dtype]) and close(lse_t, lse_r, TOL[dtype])
    assert close(out_r, out_d, TOL[dtype]) and close(lse_r, lse_d, 1e-4)


def test_reference_matches_sdpa_and_takes_a_scale():
    q, k, v = qkv(2, 2, 33, 41, 32)
    out, _ = attention_with_lse_reference(q, k, v, scale=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3)
    assert torch.allclose(out, expected, atol=1e-5)


@needs_triton
def test_queries_may_be_a_strided_subset():
    q, k, v = qkv(1, 2, 40, 40, 32)
    sub = q.transpose(1, 2)[:, 5:29].transpose(1, 2)  # not contiguous
    out_t, lse_t = kt.attention_with_lse(sub, k, v, block_m=16, block_n=16)
    out_r, lse_r = attention_with_lse_reference(q, k, v)
    assert close(out_t, out_r[:, :, 5:29], 1e-4) and close(lse_t, lse_r[:, :, 5:29], 1e-4)


# --- block-sparse attention -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(2, 2, 45, 45, 32), (1, 3, 20, 70, 64)], ids=["self", "q!=kv"])
@needs_triton
def test_sparse_kernel_matches_reference_and_masked_dense(dtype, shape):
    q, k, v = qkv(*shape, dtype=dtype, seed=1)
    mask = random_mask(shape[0], shape[1], shape[2], shape[3], 16, 16, 0.5, seed=2, empty_row=True)
    out_t, lse_t = kt.block_sparse_attention(q, k, v, mask)
    out_r, lse_r = block_sparse_attention_reference(q, k, v, mask)
    out_d, lse_d = dense(q, k, v, mask.token_mask())
    assert close(out_t, out_r, TOL[dtype]) and close(lse_t, lse_r, TOL[dtype])
    assert close(out_r, out_d, TOL[dtype]) and close(lse_r, lse_d, 1e-4)
    # the emptied row sees nothing: output 0, LSE -inf
    assert torch.all(out_t[0, 0, :16] == 0) and torch.all(torch.isneginf(lse_t[0, 0, :16]))


@needs_triton
def test_full_mask_is_dense_attention():
    q, k, v = qkv(1, 2, 50, 50, 32)
    mask = BlockMask.full(1, 2, 50, 50, 16, 16)
    out_t, lse_t = kt.block_sparse_attention(q, k, v, mask)
    out_d, lse_d = dense(q, k, v)
    assert close(out_t, out_d, 1e-4) and close(lse_t, lse_d, 1e-4)


@needs_triton
def test_mask_shared_across_batch_and_heads():
    q, k, v = qkv(2, 3, 32, 32, 16)
    shared = random_mask(1, 1, 32, 32, 16, 16, 0.6, seed=3)
    out_t, _ = kt.block_sparse_attention(q, k, v, shared)
    out_r, _ = block_sparse_attention_reference(q, k, v, shared)
    out_d, _ = dense(q, k, v, shared.token_mask().expand(2, 3, -1, -1))
    assert close(out_t, out_r, 1e-4) and close(out_r, out_d, 1e-4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 2),
    q_len=st.integers(1, 50),
    kv_len=st.integers(1, 50),
    dim=st.sampled_from([16, 32, 40]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
@needs_triton
def test_sparse_property(batch, heads, q_len, kv_len, dim, density, seed):
    q, k, v = qkv(batch, heads, q_len, kv_len, dim, seed=seed)
    mask = random_mask(batch, heads, q_len, kv_len, 16, 16, density, seed=seed + 1)
    out_t, lse_t = kt.block_sparse_attention(q, k, v, mask)
    out_r, lse_r = block_sparse_attention_reference(q, k, v, mask)
    out_d, lse_d = dense(q, k, v, mask.token_mask())
    assert close(out_t, out_d, 1e-4) and close(lse_t, lse_d, 1e-4)
    assert close(out_r, out_d, 1e-4) and close(lse_r, lse_d, 1e-4)


# --- LSE merge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@needs_triton
def test_merge_of_two_key_halves_is_full_attention(dtype):
    q, k, v = qkv(2, 2, 30, 47, 32, dtype=dtype, seed=4)
    split = 19
    parts = [
        kt.attention_with_lse(q, k[:, :, s], v[:, :, s], block_m=16, block_n=16)
        for s in (slice(0, split), slice(split, None))
    ]
    out_t, lse_t = kt.merge_attention(*parts[0], *parts[1])
    out_r, lse_r = merge_attention_reference(*parts[0], *parts[1])
    out_d, lse_d = dense(q, k, v)
    assert close(out_t, out_d, TOL[dtype]) and close(lse_t, lse_d, TOL[dtype])
    assert close(out_r, out_d, TOL[dtype]) and close(lse_r, lse_d, TOL[dtype])


def test_merge_of_complementary_sparse_masks_is_full_attention():
    """The pattern block-external reuse relies on: cached part + fresh part, merged by LSE."""
    q, k, v = qkv(1, 2, 40, 40, 32, seed=5)
    mask = random_mask(1, 2, 40, 40, 16, 16, 0.5, seed=6)
    keep = mask.to_dense()
    rest = BlockMask.from_dense(~keep, 16, 16, 40, 40)
    out, lse = merge_attention(*block_sparse_attention(q, k, v, mask), *block_sparse_attention(q, k, v, rest))
    out_d, lse_d = dense(q, k, v)
    assert close(out, out_d, 1e-4) and close(lse, lse_d, 1e-4)


def test_merge_with_an_empty_part_keeps_the_other():
    q, k, v = qkv(1, 1, 8, 8, 16)
    out, lse = attention_with_lse(q, k, v)
    empty_out, empty_lse = torch.zeros_like(out), torch.full_like(lse, float("-inf"))
    for merge in (merge_attention_reference, *([kt.merge_attention] if kt is not None else [])):
        merged, merged_lse = merge(out, lse, empty_out, empty_lse)
        assert close(merged, out, 1e-6) and close(merged_lse, lse, 1e-6)
        both, both_lse = merge(empty_out, empty_lse, empty_out, empty_lse)
        assert torch.all(both == 0) and torch.all(torch.isneginf(both_lse))


# --- dispatch, validation, FLOPs ------------------------------------------------------------------


@needs_triton
def test_dispatch_takes_the_reference_on_cpu(monkeypatch):
    q, _, _ = qkv(1, 1, 4, 4, 16)
    monkeypatch.delenv("DITACCEL_KERNELS", raising=False)
    assert not use_triton(q)
    monkeypatch.setenv("DITACCEL_KERNELS", "triton")
    assert use_triton(q)
    monkeypatch.setenv("DITACCEL_KERNELS", "fast")
    with pytest.raises(ValueError, match="DITACCEL_KERNELS"):
        use_triton(q)


@needs_triton
def test_forced_triton_path_matches_reference(monkeypatch):
    q, k, v = qkv(1, 2, 40, 40, 32)
    mask = random_mask(1, 2, 40, 40, 16, 16, 0.5, seed=7)
    expected = block_sparse_attention_reference(q, k, v, mask)
    monkeypatch.setenv("DITACCEL_KERNELS", "triton")
    got = block_sparse_attention(q, k, v, mask)
    assert close(got[0], expected[0], 1e-4) and close(got[1], expected[1], 1e-4)


def test_bad_inputs_fail_before_compute():
    q, k, v = qkv(1, 2, 32, 32, 16)
    with pytest.raises(ValueError, match="mask is for"):
        block_sparse_attention(q, k, v, BlockMask.full(1, 2, 16, 32, 16, 16))
    with pytest.raises(ValueError, match="incompatible shapes"):
        attention_with_lse(q, k[:, :1], v)
    with pytest.raises(ValueError, match="blocks"):
        BlockMask(
            torch.zeros(1, 1, 3, 2, dtype=torch.int32),
            torch.zeros(1, 1, 3, dtype=torch.int32),
            16,
            16,
            32,
            32,
        )


def test_block_mask_round_trip():
    keep = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) < 0.5
    mask = BlockMask.from_dense(keep, 16, 16, 60, 70)
    assert torch.equal(mask.to_dense(), keep)
    assert mask.density() == pytest.approx(keep.float().mean().item())
    tokens = mask.token_mask()
    assert tokens.shape == (2, 3, 60, 70)
    assert mask.visited_pairs() == int(tokens.sum())


def test_reference_flops_follow_the_mask_and_count_as_attention():
    q, k, v = qkv(1, 2, 64, 64, 16)
    mask = random_mask(1, 2, 64, 64, 16, 16, 0.5, seed=8)
    visited = int(mask.count.sum())
    with count_flops() as dense_count:
        attention_with_lse(q, k, v)
    assert dense_count.attention == 4 * 2 * 64 * 64 * 16
    for return_lse in (True, False):  # explicit softmax, or PyTorch's fused attention per group
        with count_flops() as sparse_count:
            block_sparse_attention(q, k, v, mask, return_lse=return_lse)
        assert sparse_count.attention == 4 * visited * 16 * 16 * 16
        assert sparse_count.total >= sparse_count.attention


@pytest.mark.parametrize("shape", [(2, 2, 45, 45, 32), (1, 3, 20, 70, 16)])
def test_fused_cpu_path_matches_reference(shape):
    q, k, v = qkv(*shape, seed=9)
    mask = random_mask(shape[0], shape[1], shape[2], shape[3], 16, 16, 0.5, seed=10, empty_row=True)
    out, lse = block_sparse_attention(q, k, v, mask, return_lse=False)
    assert lse is None
    assert close(out, block_sparse_attention_reference(q, k, v, mask)[0], 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_attention_on_cpu_takes_the_fused_kernel_and_matches_reference(dtype, monkeypatch):
    """attention_with_lse on CPU runs PyTorch's fused kernel (the one SDPA uses): same output and
    LSE as the reference, on a strided query subset too, counted as attention once."""
    monkeypatch.delenv("DITACCEL_KERNELS", raising=False)
    q, k, v = (t.to(dtype) for t in qkv(2, 3, 40, 56, 32, seed=11))
    sub = q[:, :, 3::2]
    with count_flops() as count:
        out, lse = attention_with_lse(sub, k, v, 0.2)
    ref_out, ref_lse = attention_with_lse_reference(sub, k, v, 0.2)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert close(out.float(), ref_out.float(), tol) and close(lse, ref_lse, 1e-4)
    assert count.total == count.attention == 4 * 2 * 3 * sub.shape[2] * 56 * 32
    fused, seen = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, []

    def spy(*args, **kwargs):
        seen.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", spy)
    attention_with_lse(sub, k, v, 0.2)
    assert seen == [1]
    monkeypatch.setenv("DITACCEL_KERNELS", "reference")  # forced references never take it
    assert close(attention_with_lse(sub, k, v, 0.2)[0].float(), ref_out.float(), tol) and seen == [1]
