"""How one shapes-flux transformer block's CPU time grows with the rows it computes, under OpenMP's
default and passive wait policies.

Token-reducing methods (context-prune, region-edit, block-external) can only gain what a block saves
on fewer rows. On this tiny model a block's time is far from proportional to its rows, and
``OMP_WAIT_POLICY=PASSIVE`` (used beside a training run) adds a thread wake-up to each small op. Each
policy is measured in its own process (OpenMP reads the variable once); median of 30 calls after
warm-up, per row count, the least of three rounds over all row counts (other load on a small machine
only ever adds time).

    python benchmarks/block_time.py --json docs/results/block_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = [288, 301, 352, 400, 544, 1056, 2080]  # 544: a 128x128 edit (32 text + 256 + 256 reference)
TEXT = 32


def measure() -> dict[str, dict[str, float]]:
    import torch

    from ditaccel import load_pipeline, models

    entry = models.MODELS["shapes-flux"]
    pipe = load_pipeline("shapes-flux", pipeline_class=entry.pipeline_for("edit"), dtype=torch.float32)
    blocks = {
        "double": pipe.transformer.transformer_blocks[0],
        "single": pipe.transformer.single_transformer_blocks[0],
    }
    width = pipe.transformer.inner_dim
    head = pipe.transformer.config.attention_head_dim
    temb = torch.randn(1, width, generator=torch.Generator().manual_seed(0))
    out: dict[str, dict[str, float]] = {kind: {} for kind in blocks}
    with torch.no_grad():
        for rows in ROWS * 3:
            hidden = torch.randn(1, rows, width)
            rotary = (torch.randn(rows, head), torch.randn(rows, head))
            for kind, block in blocks.items():
                call = dict(
                    hidden_states=hidden[:, TEXT:], encoder_hidden_states=hidden[:, :TEXT], temb=temb,
                    image_rotary_emb=rotary,
                )  # fmt: skip
                times = []
                for _ in range(35):
                    start = time.perf_counter()
                    block(**call)
                    times.append(time.perf_counter() - start)
                ms = 1000 * statistics.median(times[5:])
                out[kind][str(rows)] = min(ms, out[kind].get(str(rows), ms))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        json.dump(measure(), sys.stdout)
        return
    result = {"rows": ROWS, "text_rows": TEXT, "unit": "ms per block call (median)", "policies": {}}
    for policy in ("default", "PASSIVE"):
        env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        child = subprocess.run(
            [sys.executable, __file__, "--json", str(args.json), "--child"],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        times = json.loads(child.stdout)
        result["policies"][policy] = times
        full = times["single"]["544"]
        print(policy, {rows: f"{ms:.2f} ms ({ms / full:.2f})" for rows, ms in times["single"].items()})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
