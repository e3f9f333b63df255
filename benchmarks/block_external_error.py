"""Per-layer error of block-external's served attention, and how fast the external part drifts.

Runs the shapes-flux instruction edits (default cases) with ``block-external:...,measure=true``:
cached steps still compute the external rows so that every attention layer can compare what it
served the generated tokens (fresh internal attention + the cached external part) with full
attention over fresh keys. Writes the per-layer, per-step mean error and the per-layer drift of
the cached part between refreshes as JSON, and a figure.

    python benchmarks/block_external_error.py --methods block-external:refresh=4 \\
        block-external:refresh=4,mode=kv --json docs/results/block_external_error.json --plot docs/results/block_external_error.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ditaccel import AcceleratedPipeline, load_pipeline, models
from ditaccel.bench import case_call


def measure(spec: str, cases: int, steps: int) -> dict:
    entry = models.get("shapes-flux")
    pipe = load_pipeline("shapes-flux", pipeline_class=entry.pipeline_for("edit"))
    pipe.set_progress_bar_config(disable=True)
    acc = AcceleratedPipeline.from_pipe(pipe, f"{spec},measure=true")
    errors: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    drift: dict[str, list[float]] = defaultdict(list)
    for case in entry.cases["edit"]()[:cases]:
        call = case_call(case, acc.adapter, steps=steps, height=entry.height, width=entry.width,
                         extra=entry.call_defaults)  # fmt: skip
        acc(**call)
        for layer, values in acc.stats.extra["external_error"].items():
            for step, error in values:
                errors[layer][step].append(error)
        for layer, value in acc.stats.extra.get("external_drift", {}).items():
            drift[layer].append(value)
    return {
        "method": spec,
        "error": {
            layer: {str(s): float(np.mean(v)) for s, v in sorted(by.items())} for layer, by in errors.items()
        },
        "drift": {layer: float(np.mean(v)) for layer, v in drift.items()},
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results) + 1, figsize=(4.5 * (len(results) + 1), 3.6))
    for ax, result in zip(axes, results, strict=False):
        for layer, by_step in result["error"].items():
            steps = [int(s) for s in by_step]
            ax.plot(
                steps,
                list(by_step.values()),
                marker="o",
                ms=3,
                label=layer.replace("transformer_blocks", "tb"),
            )
        ax.set_title(result["method"], fontsize=8)
        ax.set_xlabel("cached step")
        ax.set_ylabel("relative L1 error vs full attention")
        ax.set_yscale("log")
    axes[0].legend(fontsize=6)
    ax = axes[-1]
    for i, result in enumerate(results):
        layers = list(result["drift"])
        ax.bar(np.arange(len(layers)) + 0.8 * i / len(results), list(result["drift"].values()),
               width=0.8 / len(results), label=result["method"])  # fmt: skip
        ax.set_xticks(np.arange(len(layers)), [name.split(".")[0][:6] + "." + name.split(".")[1] for name in layers],
                      rotation=60, fontsize=7)  # fmt: skip
    ax.set_title("drift of the cached part between refreshes", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", nargs="+", default=["block-external:refresh=4", "block-external:refresh=4,mode=kv"]
    )
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--json", type=Path, default=Path("block_external_error.json"))
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = [measure(spec, args.cases, args.steps) for spec in args.methods]
    for result in results:
        print(result["method"])
        for layer, by_step in result["error"].items():
            values = list(by_step.values())
            print(
                f"  {layer:40s} error mean {np.mean(values):.4f} max {np.max(values):.4f}  drift {result['drift'][layer]:.4f}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": "shapes-flux", "task": "edit", "steps": args.steps, "cases": args.cases,
                                     "results": results}, indent=1))  # fmt: skip
    print(f"wrote {args.json}")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
