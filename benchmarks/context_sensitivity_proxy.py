"""Validate the one-forward proxy of context sensitivity against the exact measurement.

On the shapes-flux instruction edits (default cases), per attention layer: the exact sensitivity
(whole calls with the reference dropped from that layer's keys, change of the final latents) and
the proxy (``context_steps`` sampled steps of the unchanged trajectory, the forward re-run once per
layer with the reference dropped there, change of that forward's output). Reports both, their
Pearson and Spearman correlations, whether they rank the same layer first, and the time each took.

    python benchmarks/context_sensitivity_proxy.py --json docs/results/context_sensitivity_proxy.json \\
        --plot docs/results/context_sensitivity_proxy.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from ditaccel import AcceleratedPipeline, load_pipeline, models
from ditaccel.bench import case_call
from ditaccel.calibration.context_sensitivity import context_sensitivity, context_sensitivity_proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--context-steps", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    entry = models.get("shapes-flux")
    pipe = load_pipeline("shapes-flux", pipeline_class=entry.pipeline_for("edit"))
    pipe.set_progress_bar_config(disable=True)
    acc = AcceleratedPipeline.from_pipe(pipe, [])
    sites = acc.adapter.sequence_attention_sites(pipe.transformer)
    calls = [
        case_call(case, acc.adapter, steps=args.steps, height=entry.height, width=entry.width, extra=entry.call_defaults)
        for case in entry.cases["edit"]()[: args.cases]
    ]  # fmt: skip

    def tick(_what: str) -> None:
        return None

    start = time.perf_counter()
    layers, exact = context_sensitivity(acc, sites, calls, args.steps, tick)
    result = {"steps": args.steps, "cases": args.cases, "layers": layers, "exact": exact,
              "exact_seconds": round(time.perf_counter() - start, 2), "proxy": {}}  # fmt: skip
    for count in args.context_steps:
        start = time.perf_counter()
        proxy_layers, proxy = context_sensitivity_proxy(acc, sites, calls, args.steps, tick, count)
        assert proxy_layers == layers
        result["proxy"][str(count)] = {
            "values": proxy,
            "seconds": round(time.perf_counter() - start, 2),
            "pearson": round(float(stats.pearsonr(exact, proxy)[0]), 4),
            "spearman": round(float(stats.spearmanr(exact, proxy)[0]), 4),
            "same_top": int(np.argmax(exact)) == int(np.argmax(proxy)),
        }
        print(f"context_steps={count}: {result['proxy'][str(count)]}")
    print(f"exact ({result['exact_seconds']} s): {dict(zip(layers, exact, strict=True))}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.6))
        x = np.arange(len(layers))
        width = 0.8 / (1 + len(result["proxy"]))
        ax.bar(x, np.array(exact) / max(exact), width, label=f"exact ({result['exact_seconds']:.0f} s)")
        for i, (count, entry_) in enumerate(result["proxy"].items(), start=1):
            values = np.array(entry_["values"])
            ax.bar(x + i * width, values / values.max(), width,
                   label=f"proxy, {count} steps ({entry_['seconds']:.0f} s, Spearman {entry_['spearman']:.2f})")  # fmt: skip
        ax.set_xticks(x + 0.4 - width / 2, [n.replace("transformer_blocks", "tb").replace(".attn", "") for n in layers],
                      rotation=30, fontsize=8)  # fmt: skip
        ax.set_ylabel("sensitivity (relative to the largest)")
        ax.set_title("shapes-flux edit: context sensitivity per attention layer", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
