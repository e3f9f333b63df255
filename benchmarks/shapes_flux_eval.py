"""The held-out evaluation of a shapes-flux checkpoint, as training runs it: the checker on 16 scenes
and 16 edits the training streams never draw (28 steps, 128 px), with the per-attribute shares, the
background share, the text sensitivity and the edits' preserve PSNR (against the source, outside the
edit mask). Compares checkpoints on one footing, e.g. the shipped model against a candidate.

    python benchmarks/shapes_flux_eval.py ditaccel/models/shapes-flux --json docs/results/shapes_flux_eval_shipped.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import FluxPipeline

from ditaccel.models.train_shapes_flux import TRAINED, TrainConfig, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a shapes-flux pipeline folder")
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = FluxPipeline.from_pretrained(args.model, local_files_only=True)
    cfg = replace(TrainConfig(), eval_cases=args.cases, eval_steps=args.steps)
    row = evaluate(pipe, [getattr(pipe, name) for name in TRAINED], cfg)
    record = {"model": str(args.model), "eval_cases": args.cases, "eval_steps": args.steps, **row}
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
