"""Time the attention kernels: dense Triton, block-sparse Triton and PyTorch SDPA.

For every dtype, sequence length and density: time per call, executed TFLOP/s and the speedup
over SDPA. The block-sparse masks keep ``density`` of the key blocks of every query block
(diagonal included, the rest at random), so the numbers measure the kernel, not a predictor.
Then one attention layer of ``block-external`` at Kontext size (text + 4096 generated + 4096
reference tokens): the plain layer, a refresh step's extra external partial, and a cached step in
both modes (``output``: fresh internal attention with LSE + merge; ``kv``: attention over fresh
internal and cached external keys). Prints a table and writes a JSON.

On a GPU (the real benchmark; H100 one-liner):
    python benchmarks/attention_kernels.py --json attention_kernels.json
On a CPU, at toy size, under Triton's interpreter (checks the script end to end, times mean nothing):
    TRITON_INTERPRET=1 python benchmarks/attention_kernels.py --toy --json attention_kernels_toy.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def random_mask(heads: int, length: int, block: int, density: float, device, seed: int = 0):
    from ditaccel.kernels import BlockMask
    from ditaccel.kernels.block_mask import num_blocks

    n = num_blocks(length, block)
    per_row = max(1, round(density * n))
    g = torch.Generator(device="cpu").manual_seed(seed)
    scores = torch.rand(1, heads, n, n, generator=g)
    scores.diagonal(dim1=-2, dim2=-1).fill_(2.0)  # the diagonal always wins a place
    keep = torch.zeros(1, heads, n, n, dtype=torch.bool)
    keep.scatter_(-1, scores.topk(per_row, dim=-1).indices, True)
    return BlockMask.from_dense(keep.to(device), block, block, length, length, trim=False)


def timer(device: torch.device, reps: int):
    if device.type == "cuda":
        import triton.testing

        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100)

    def cpu_time(fn):
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return cpu_time


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for dtype_name in args.dtypes:
        for length in args.lengths:
            new = bench_length(args, dtype_name, length)
            print_rows(new, header=False)
            rows += new
    return rows


def bench_length(args: argparse.Namespace, dtype_name: str, length: int) -> list[dict]:
    """SDPA, dense Triton and block-sparse Triton at every density, for one dtype and length."""
    if args.device == "cpu":  # Triton runs CPU tensors only in its interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from ditaccel.kernels import attention_triton as kt

    device = torch.device(args.device)
    measure = timer(device, args.reps)
    g = torch.Generator(device="cpu").manual_seed(length)
    shape = (args.batch, args.heads, length, args.head_dim)
    q, k, v = (torch.randn(shape, generator=g).to(device=device, dtype=DTYPES[dtype_name]) for _ in range(3))
    dense_flops = 4 * args.batch * args.heads * length * length * args.head_dim
    rows = []

    def record(kind: str, density: float, ms: float, flops: int) -> None:
        rows.append({
            "dtype": dtype_name, "seq": length, "kernel": kind, "density": density,
            "ms": ms, "tflops": flops / ms / 1e9, "flops": flops,
        })  # fmt: skip

    record(
        "sdpa", 1.0, measure(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)), dense_flops
    )
    dense = measure(lambda: kt.attention_with_lse(q, k, v, block_m=args.block, block_n=args.block))
    record("triton-dense", 1.0, dense, dense_flops)
    for density in args.densities:
        mask = random_mask(args.heads, length, args.block, density, device)
        flops = 4 * args.batch * mask.visited_pairs() * args.head_dim
        record(
            "triton-sparse",
            mask.density(),
            measure(lambda mask=mask: kt.block_sparse_attention(q, k, v, mask)),
            flops,
        )
    for row in rows:
        row["speedup_vs_sdpa"] = rows[0]["ms"] / row["ms"]
    return rows


def bench_block_external(args: argparse.Namespace, dtype_name: str) -> list[dict]:
    """One attention layer of block-external: plain, refresh-step extra, cached (both modes)."""
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from ditaccel.kernels import attention_triton as kt

    device = torch.device(args.device)
    measure = timer(device, args.reps)
    text, image, reference = args.be_text, args.be_image, args.be_reference
    total, internal = text + image + reference, text + image
    g = torch.Generator(device="cpu").manual_seed(total)
    shape = (args.batch, args.heads, total, args.head_dim)
    q, k, v = (torch.randn(shape, generator=g).to(device=device, dtype=DTYPES[dtype_name]) for _ in range(3))
    qi, ki, vi = (t[:, :, :internal] for t in (q, k, v))
    ke, ve = (t[:, :, internal:].contiguous() for t in (k, v))
    partial = kt.attention_with_lse(qi, ke, ve, block_m=args.block, block_n=args.block)
    flops = lambda lq, lk: 4 * args.batch * args.heads * lq * lk * args.head_dim  # noqa: E731
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def output_mode():
        fresh = kt.attention_with_lse(qi, ki, vi, block_m=args.block, block_n=args.block)
        return kt.merge_attention(*fresh, *partial)

    cases = [
        ("be-plain-layer", lambda: sdpa(q, k, v), flops(total, total)),
        ("be-refresh-extra", lambda: kt.attention_with_lse(qi, ke, ve, block_m=args.block, block_n=args.block),
         flops(internal, reference)),
        ("be-cached-output", output_mode, flops(internal, internal)),
        ("be-cached-kv", lambda: sdpa(qi, torch.cat([ki, ke], 2), torch.cat([vi, ve], 2)), flops(internal, total)),
    ]  # fmt: skip
    rows = []
    for kind, fn, work in cases:
        ms = measure(fn)
        rows.append({"dtype": dtype_name, "seq": total, "kernel": kind, "density": work / flops(total, total),
                     "ms": ms, "tflops": work / ms / 1e9, "flops": work})  # fmt: skip
    for row in rows:
        row["speedup_vs_sdpa"] = rows[0]["ms"] / row["ms"]
    return rows


def print_rows(rows: list[dict], header: bool = True) -> None:
    if header:
        print(
            f"{'dtype':>5} {'seq':>6} {'kernel':>14} {'density':>7} {'ms':>9} {'TFLOP/s':>8} {'vs sdpa':>7}"
        )
    for r in rows:
        print(
            f"{r['dtype']:>5} {r['seq']:>6} {r['kernel']:>14} {r['density']:>7.2f} {r['ms']:>9.3f} "
            f"{r['tflops']:>8.2f} {r.get('speedup_vs_sdpa', float('nan')):>7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("attention_kernels.json"))
    parser.add_argument(
        "--toy", action="store_true", help="CPU-interpreter sizes (fp32 / fp16, short sequences)"
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3, help="CPU timing repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--be-text", type=int, default=None, help="block-external case: text tokens")
    parser.add_argument("--be-image", type=int, default=None, help="block-external case: generated tokens")
    parser.add_argument(
        "--be-reference", type=int, default=None, help="block-external case: reference tokens"
    )
    args = parser.parse_args()
    toy = args.toy or args.device == "cpu"
    args.lengths = args.lengths or ([64, 128] if toy else [4096, 8192, 16384, 32768])
    args.dtypes = args.dtypes or (["fp32", "fp16"] if toy else ["fp16", "bf16"])
    args.heads = args.heads or (2 if toy else 24)
    args.block = args.block or (16 if toy else 64)
    if toy:
        args.head_dim = min(args.head_dim, 64)
    args.be_text = args.be_text or (16 if toy else 512)
    args.be_image = args.be_image or (64 if toy else 4096)
    args.be_reference = args.be_reference or (64 if toy else 4096)
    print_rows([], header=True)
    rows = run(args)
    for dtype_name in args.dtypes:
        block_external = bench_block_external(args, dtype_name)
        print_rows(block_external, header=False)
        rows += block_external
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    result = {
        "device": device_name,
        "interpreted": toy and args.device == "cpu",
        "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "block": args.block,
        "versions": {"torch": torch.__version__, "triton": _triton_version()},
        "rows": rows,
    }  # fmt: skip
    args.json.write_text(json.dumps(result, indent=1, default=lambda x: None if math.isnan(x) else x))
    print(f"wrote {args.json}")


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
