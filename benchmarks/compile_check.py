"""How each method fares under ``torch.compile``: graph breaks and recompiles per call.

For every method (tiny FLUX for text-to-image methods, tiny FLUX Kontext for editing ones), the
transformer of a wrapped pipeline is compiled with ``pipe.transformer.compile(backend=...)`` and
called twice; TorchDynamo's counters give the graph breaks and the graphs compiled on the first
and on the second call (a graph compiled on the second call is a recompile), with the distinct
reasons of the breaks; the output is compared with the eager wrapped pipeline's. ``--backend
eager`` (the default) traces with Dynamo only, which is what breaks and recompiles depend on;
``inductor`` also compiles (slow on a CPU).

    python benchmarks/compile_check.py --json docs/results/compile_check.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

from ditaccel import AcceleratedPipeline
from ditaccel.media import output_images
from ditaccel.testing import example_call, synthetic_profile, tiny_pipeline

FLUX, KONTEXT = "tiny-random-flux", "tiny-random-flux-kontext"


def methods(profile: str) -> list[tuple[str, str]]:
    return [
        (FLUX, "none"),
        (FLUX, "deepcache:interval=2"),
        (FLUX, "adaptive-cache:threshold=0.5"),
        (FLUX, f"calibrated-cache:profile={profile},flops_ratio=0.5"),
        (FLUX, "sparse-attention:density=0.5"),
        (FLUX, "peer-fbcache"),
        (FLUX, "peer-taylorseer"),
        (FLUX, "block-external:external=text,refresh=2"),
        (KONTEXT, "region-edit:threshold=0.99"),
        (KONTEXT, "block-external:refresh=2"),
    ]


def images(pipe, name: str) -> np.ndarray:
    return np.asarray(output_images(pipe(**example_call(name, steps=6))))


def check(name: str, spec: str, backend: str) -> dict:
    pipe = tiny_pipeline(name)
    pipe.set_progress_bar_config(disable=True)
    eager = images(AcceleratedPipeline.from_pipe(pipe, spec), name)
    pipe = tiny_pipeline(name)
    pipe.set_progress_bar_config(disable=True)
    acc = AcceleratedPipeline.from_pipe(pipe, spec)
    pipe.transformer.compile(backend=backend)
    dynamo.reset()
    counters.clear()
    first = images(acc, name)
    breaks_first = sum(counters["graph_break"].values())
    graphs_first = counters["stats"]["unique_graphs"]
    images(acc, name)
    reasons = sorted({reason.strip().splitlines()[0][:160] for reason in counters["graph_break"]})
    return {
        "pipeline": name,
        "method": re.sub(r"profile=[^,]*,?", "", spec),  # (a temporary file)
        "matches_eager": bool(np.allclose(first, eager, atol=1e-5)),
        "graph_breaks_first_call": breaks_first,
        "graph_breaks_second_call": sum(counters["graph_break"].values()) - breaks_first,
        "graphs_first_call": graphs_first,
        "recompiles_second_call": counters["stats"]["unique_graphs"] - graphs_first,
        "break_reasons": reasons,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        profile = str(Path(folder) / "profile.json")
        synthetic_profile(tiny_pipeline(FLUX), steps=6).save(profile)
        rows = []
        for name, spec in methods(profile):
            row = check(name, spec, args.backend)
            rows.append(row)
            print(f"{row['method']:45s} eager-equal {row['matches_eager']!s:5s} breaks {row['graph_breaks_first_call']:3d} "
                  f"/ {row['graph_breaks_second_call']:3d}  graphs {row['graphs_first_call']:3d}  recompiles "
                  f"{row['recompiles_second_call']:3d}", file=sys.stderr)  # fmt: skip
    report = {"backend": args.backend, "torch": torch.__version__, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
