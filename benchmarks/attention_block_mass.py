"""How concentrated a model's attention is: the share of attention mass the best half of the key
blocks holds, per attention layer, at a mid-schedule step.

Block-sparse attention (``sparse-attention``) keeps the key blocks with the most mass for each
query block; it pays when a few blocks hold most of it, as in large trained DiTs. For every query
row this takes the softmax attention over all keys, sums it per key block of ``--block`` tokens,
and adds up the largest half of those block sums (the oracle's 50% mask); the mean over rows and
heads is the layer's figure. 0.5 is attention spread evenly; 1.0 is all of it in half the blocks.

    python benchmarks/attention_block_mass.py --json docs/results/attention_block_mass.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ditaccel import GenerationRequest, adapter_for, load_pipeline  # noqa: E402
from ditaccel import models as embedded  # noqa: E402
from ditaccel.attention import sdpa_route  # noqa: E402

_HOOK = "attention_block_mass"


def best_half_mass(q: torch.Tensor, k: torch.Tensor, scale: float | None, block: int) -> float:
    """Mean over heads and query rows of the attention mass in the best half of the key blocks."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    probs = torch.softmax(torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale, dim=-1)
    keys = probs.shape[-1]
    blocks = math.ceil(keys / block)
    padded = torch.nn.functional.pad(probs, (0, blocks * block - keys))
    per_block = padded.unflatten(-1, (blocks, block)).sum(-1)
    best = per_block.sort(dim=-1, descending=True).values[..., : blocks // 2]
    return float(best.sum(-1).mean())


def measure(model: str, steps: int, prompts: int, size: int, block: int, step: int) -> dict[str, list[float]]:
    """Per attention site: the figure at denoising step ``step``, one value per prompt."""
    entry = embedded.get(model)
    task = entry.bench_tasks[0]
    pipe = load_pipeline(model, pipeline_class=entry.pipeline_for(task))
    pipe.set_progress_bar_config(disable=True)
    adapter = adapter_for(pipe)
    denoiser = adapter.denoisers()[0]
    sites = adapter.sequence_attention_sites(denoiser)
    calls = [0]
    figures: dict[str, list[float]] = {site.name: [] for site in sites}

    def handler_for(name: str):
        def handler(q, k, v, scale):
            if calls[0] - 1 == step:
                figures[name].append(best_half_mass(q, k, scale, block))
            return None  # attention itself runs as usual

        return handler

    counter = denoiser.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    for site in sites:
        sdpa_route.attach(site.module, _HOOK, handler_for(site.name))
    try:
        for case in entry.cases[task]()[:prompts]:
            calls[0] = 0
            request = GenerationRequest(
                prompt=case.prompt, image=case.image, seed=case.seed, steps=steps,
                height=size, width=size, output_type="latent", extra=dict(entry.call_defaults),
            )  # fmt: skip
            pipe(**adapter.build_call(request))
    finally:
        counter.remove()
        for site in sites:
            sdpa_route.detach(site.module, _HOOK)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-flux")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--block", type=int, default=32, help="key block size (tokens)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    step = args.steps // 2
    record = {"model": args.model, "steps": args.steps, "step": step, "prompts": args.prompts,
              "block": args.block, "sizes": {}}  # fmt: skip
    for size in args.sizes:
        figures = measure(args.model, args.steps, args.prompts, size, args.block, step)
        layers = {name: float(np.mean(values)) for name, values in figures.items()}
        record["sizes"][str(size)] = {"layers": layers, "mean": float(np.mean(list(layers.values())))}
        print(f"{size} px, key blocks of {args.block}, step {step}: best half of the blocks holds")
        for name, value in layers.items():
            print(f"  {name:40s} {value:.3f}")
        print(f"  {'mean':40s} {record['sizes'][str(size)]['mean']:.3f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
