"""How stable context-prune's kept reference tokens are across steps and prompts, and where they are.

Runs the shapes-flux instruction edits (default cases) with ``context-prune:...`` re-scoring at
every step (``refresh=1``) and reports, per case, the Jaccard overlap of each step's kept set with
the previous step's and with the first step's; across prompts, the mean pairwise overlap of the
cases' kept sets at the same step (high: the kept set is positional; low: it follows the content).
The figure shows the kept tokens over four source images, and the overlaps over the steps.

    python benchmarks/context_prune_kept.py --methods context-prune:keep=0.25 \\
        --json docs/results/context_prune_kept.json --plot docs/results/context_prune_kept.png
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from ditaccel import AcceleratedPipeline, load_pipeline, models
from ditaccel.bench import case_call
from ditaccel.editing.overlay import overlay


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="context-prune:keep=0.25")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    entry = models.get("shapes-flux")
    pipe = load_pipeline("shapes-flux", pipeline_class=entry.pipeline_for("edit"))
    pipe.set_progress_bar_config(disable=True)
    acc = AcceleratedPipeline.from_pipe(pipe, f"{args.methods},refresh=1")
    method = acc.method("context-prune")
    histories, sources, grids = [], [], []
    for case in entry.cases["edit"]()[: args.cases]:
        call = case_call(case, acc.adapter, steps=args.steps, height=entry.height, width=entry.width,
                         extra=entry.call_defaults)  # fmt: skip
        acc(**call)
        histories.append(torch.stack([mask for _, branch, mask in method.kept_history if branch == 0]))
        grids.append(method.kept_mask.clone())
        sources.append(call["image"])
    history = torch.stack(histories)  # cases x steps x reference tokens
    cases, steps, _ = history.shape
    previous = [[jaccard(h[s], h[s - 1]) for s in range(1, steps)] for h in history]
    first = [[jaccard(h[s], h[0]) for s in range(1, steps)] for h in history]
    across = [
        float(
            np.mean(
                [jaccard(history[i, s], history[j, s]) for i, j in itertools.combinations(range(cases), 2)]
            )
        )
        for s in range(steps)
    ]
    result = {
        "method": args.methods,
        "pivotal": method.pivotal,
        "pruned_from": method.pruned_from,
        "kept_tokens": int(history[0, 0].sum()),
        "reference_tokens": int(history.shape[2]),
        "jaccard_previous_step": np.mean(previous, 0).round(4).tolist(),
        "jaccard_first_step": np.mean(first, 0).round(4).tolist(),
        "jaccard_across_prompts": np.round(across, 4).tolist(),
        "mean_previous_step": round(float(np.mean(previous)), 4),
        "mean_first_step": round(float(np.mean(first)), 4),
        "mean_across_prompts": round(float(np.mean(across)), 4),
    }
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list) or len(v) < 4}, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = min(4, cases)
        fig, axes = plt.subplots(1, shown + 1, figsize=(3.2 * (shown + 1), 3.4))
        for ax, source, grid in zip(axes[:shown], sources, grids, strict=False):
            ax.imshow(overlay(source, grid))
            ax.set_axis_off()
        axes[0].set_title(f"kept reference tokens (last step), {args.methods}", fontsize=7, loc="left")
        ax = axes[-1]
        x = np.arange(1, steps)
        ax.plot(x, result["jaccard_previous_step"], label="vs previous step")
        ax.plot(x, result["jaccard_first_step"], label="vs first step")
        ax.plot(np.arange(steps), result["jaccard_across_prompts"], label="across prompts")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("Jaccard overlap of kept sets")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
