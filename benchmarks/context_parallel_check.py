"""Methods under diffusers' context parallelism on N GPUs: the same decisions on every rank, and
the output of the parallel accelerated pipeline against the single-GPU accelerated one.

The transformer is FLUX.1-dev-width with random weights and a few blocks (as in
``gpu_check.py``); ``enable_parallelism`` shards its sequence over the ranks (Ulysses, or ring
with ``--ring``). For each method: the steps each rank reused (gathered to rank 0; they must be
equal), the wall time, and the relative L2 distance of the final latents from the same method
run on one GPU. Token and attention methods are refused under context parallelism (checked too).

    torchrun --nproc-per-node 2 benchmarks/context_parallel_check.py --json cp_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import build, call_kwargs, rel_error  # noqa: E402

from ditaccel import AcceleratedPipeline  # noqa: E402
from ditaccel.testing import synthetic_profile  # noqa: E402

METHODS = [
    "none",
    "deepcache:interval=2",
    "adaptive-cache:threshold=0.2,order=1",
    "calibrated-cache:flops_ratio=0.5",
]


def run(acc, kwargs: dict, runs: int) -> tuple[torch.Tensor, float]:
    out, times = None, []
    for _ in range(runs + 1):  # the first is a warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = acc(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).images.float()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return out, statistics.mean(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("cp_check.json"))
    parser.add_argument("--ring", action="store_true", help="ring attention instead of Ulysses")
    parser.add_argument("--double", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--text", type=int, default=512)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    args.device, args.dtype, args.toy = f"cuda:{torch.cuda.current_device()}", torch.bfloat16, False
    single = build("t2i", args)
    kwargs = call_kwargs(single, "t2i", args)
    parallel = build("t2i", args)
    degree = {"ring_degree" if args.ring else "ulysses_degree": world}
    parallel.transformer.enable_parallelism(config=ContextParallelConfig(**degree))
    profile = synthetic_profile(single, steps=args.steps).save(args.json.with_suffix(f".profile{rank}.json"))
    rows = []
    for spec in METHODS:
        full = spec.replace("calibrated-cache:", f"calibrated-cache:profile={profile},")
        alone = AcceleratedPipeline.from_pipe(single, [] if spec == "none" else full)
        reference, single_s = run(alone, kwargs, args.runs)
        single = alone.remove()
        acc = AcceleratedPipeline.from_pipe(parallel, [] if spec == "none" else full)
        out, parallel_s = run(acc, kwargs, args.runs)
        reused = sorted({r.step for r in acc.stats.records if r.blocks_reused})
        parallel = acc.remove()
        every = [None] * world
        dist.all_gather_object(every, reused)
        rows.append(dict(method=spec, same_decisions=all(r == every[0] for r in every), reused_steps=every,
                         single_gpu_s=single_s, parallel_s=parallel_s, rel_error_vs_single=rel_error(out, reference)))  # fmt: skip
    refused = None
    try:
        AcceleratedPipeline.from_pipe(parallel, "sparse-attention:density=0.5")(**kwargs)
    except ValueError as error:
        refused = str(error)
    if rank == 0:
        report = dict(world=world, mode="ring" if args.ring else "ulysses", rows=rows, sparse_refused=refused)
        args.json.write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
