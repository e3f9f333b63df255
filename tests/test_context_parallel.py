"""Context parallelism: every method keeps the same decisions on every rank.

diffusers' context parallelism needs an accelerator (it places rank r on device r), so here the
decision logic runs under a 2-process gloo group on the CPU: the reduced change of a sharded
sequence is the same number on both ranks and equals the change of the whole sequence, and
``adaptive-cache`` on two ranks whose transformers see different tokens still reuses the same
steps when the group is its context-parallel group. Token and attention methods are refused under
context parallelism. The run on GPUs is ``benchmarks/context_parallel_check.py``.
"""

import os
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ditaccel import AcceleratedPipeline
from ditaccel.hooks.parallel import global_relative_l1
from ditaccel.methods.adaptive_cache import relative_l1
from ditaccel.testing import example_call, tiny_pipeline

FLUX = "tiny-random-flux"
THRESHOLDS = (0.25, 0.3, 0.35, 0.5)
# what each rank's transformer sees differs, as two shards of one sequence do
SHARDS = [dict(prompt="a red circle"), dict(prompt="a blue striped square", height=64, width=64)]


class _WorldMesh:
    """Stands in for the device mesh diffusers' ContextParallelConfig sets up: its group is the
    whole (gloo) world."""

    def get_group(self):
        return dist.group.WORLD


def fake_context_parallel(transformer) -> None:
    """Mark ``transformer`` as context-parallel over the world group, as ``enable_parallelism``
    would (which needs one accelerator per rank)."""
    cp = SimpleNamespace(_flattened_mesh=_WorldMesh(), _mesh=None)
    transformer._parallel_config = SimpleNamespace(context_parallel_config=cp)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        # 1. the reduced change of a sequence split unevenly over the ranks
        g = torch.Generator().manual_seed(0)
        current, previous = torch.randn(2, 37, 8, generator=g), torch.randn(2, 37, 8, generator=g)
        shard = slice(0, 20) if rank == 0 else slice(20, 37)
        reduced = [
            float(global_relative_l1(current[:, shard], previous[:, shard], h, dist.group.WORLD))
            for h in (1, 2)
        ]
        whole = [float(relative_l1(current, previous, h)) for h in (1, 2)]
        # 2. adaptive-cache decides the same on both ranks although each sees other tokens
        pipe = tiny_pipeline(FLUX)
        pipe.set_progress_bar_config(disable=True)
        steps = {}
        for parallel in (False, True):
            if parallel:
                fake_context_parallel(pipe.transformer)
            for threshold in THRESHOLDS:
                spec = f"adaptive-cache:threshold={threshold},warmup=1,final=0,max_reuse=2"
                acc = AcceleratedPipeline.from_pipe(pipe, spec)
                acc(**example_call(FLUX, steps=10, seed=rank, **SHARDS[rank]))
                steps[parallel, threshold] = sorted({r.step for r in acc.stats.records if r.blocks_reused})
                pipe = acc.remove()
        refused = None
        try:
            AcceleratedPipeline.from_pipe(pipe, "sparse-attention:density=0.5")(**example_call(FLUX, steps=2))
        except ValueError as error:
            refused = str(error)
        results[rank] = dict(reduced=reduced, whole=whole, steps=steps, refused=refused)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2)
    return [results[0], results[1]]


def test_the_reduced_change_is_the_whole_sequences_on_every_rank(ranks):
    for rank in ranks:
        np.testing.assert_allclose(rank["reduced"], ranks[0]["whole"], rtol=1e-5)


def test_adaptive_cache_keeps_the_same_steps_on_every_rank(ranks):
    first, second = (rank["steps"] for rank in ranks)
    # deciding from its own tokens, each rank would skip other steps at some threshold
    assert any(first[False, t] != second[False, t] for t in THRESHOLDS)
    assert all(first[True, t] == second[True, t] for t in THRESHOLDS)
    assert any(first[True, t] for t in THRESHOLDS)  # and it does reuse


def test_token_and_attention_methods_are_refused_under_context_parallelism(ranks):
    for rank in ranks:
        assert rank["refused"] is not None and "cannot run under context parallelism" in rank["refused"]
