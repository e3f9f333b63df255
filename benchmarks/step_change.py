"""How much the transformer output changes from one denoising step to the next.

For each model, runs the default prompts and records the relative L1 change of the transformer
output (the velocity / noise prediction) between consecutive steps, ``mean|o_t - o_t-1| /
mean|o_t-1|``, averaged over prompts. A trained model changes slowly mid-schedule (the redundancy
caching exploits); a random one does not. Prints a table and writes a JSON and a PNG plot.

Usage: python benchmarks/step_change.py --models shapes-flux tiny-random-flux --steps 28 --out docs/results/step_change
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ditaccel import GenerationRequest, adapter_for, load_pipeline  # noqa: E402
from ditaccel import models as embedded  # noqa: E402


def output_change(model: str, steps: int, prompts: int) -> list[float]:
    """Mean over prompts of the relative L1 output change at steps 1..steps-1."""
    entry = embedded.get(model)
    task = entry.bench_tasks[0]
    pipe = load_pipeline(model, pipeline_class=entry.pipeline_for(task))
    pipe.set_progress_bar_config(disable=True)
    adapter = adapter_for(pipe)
    outputs: list[torch.Tensor] = []
    handle = adapter.denoisers()[0].register_forward_hook(
        lambda m, a, out: outputs.append(out[0].detach().clone())
    )
    curves = []
    try:
        for case in entry.cases[task]()[:prompts]:
            outputs.clear()
            request = GenerationRequest(
                prompt=case.prompt, image=case.image, seed=case.seed, steps=steps,
                height=entry.height, width=entry.width, output_type="latent", extra=dict(entry.call_defaults),
            )  # fmt: skip
            pipe(**adapter.build_call(request))
            curves.append(
                [
                    float((b - a).abs().mean() / a.abs().mean())
                    for a, b in zip(outputs, outputs[1:], strict=False)
                ]
            )
    finally:
        handle.remove()
    return np.mean(curves, axis=0).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["shapes-flux", "tiny-random-flux"])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("docs/results/step_change"))
    args = parser.parse_args()
    curves = {m: output_change(m, args.steps, args.prompts) for m in args.models}
    print("step " + " ".join(f"{m:>18}" for m in curves))
    for i in range(args.steps - 1):
        print(f"{i + 1:4d} " + " ".join(f"{curves[m][i]:18.3f}" for m in curves))
    mid = slice(args.steps // 4, 3 * args.steps // 4)
    for m, c in curves.items():
        print(f"{m}: mid-schedule mean {np.mean(c[mid]):.3f}, last step {c[-1]:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"steps": args.steps, "curves": curves}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m, c in curves.items():
        ax.plot(range(1, args.steps), c, marker=".", label=m)
    ax.set(xlabel="denoising step", ylabel="relative L1 change of transformer output", yscale="log")
    ax.set_title("step-to-step change: trained vs random")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
