"""Resident memory over a long run: 200 calls per method on a tiny pipeline, with changing prompts,
step counts, resolutions and batch sizes (as ``tests/test_reliability.py`` makes them), RSS read
after every call, and each method's peak cache bytes (``pipe.stats``). Writes a JSON and a figure.

    python benchmarks/long_run_memory.py --json docs/results/long_run_memory.json --plot docs/results/long_run_memory.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_reliability import LONG_RUN_CALLS, METHODS, _varied_call  # noqa: E402

from ditaccel import AcceleratedPipeline  # noqa: E402
from ditaccel.testing import synthetic_profile, tiny_pipeline  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")

from diffusers.utils import logging as diffusers_logging  # noqa: E402

diffusers_logging.set_verbosity_error()  # the tiny tokenizers truncate every prompt; nothing to act on


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE / 2**20


def tiny_profile(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return synthetic_profile(tiny_pipeline("tiny-random-flux")).save(folder / "tiny_profile.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=LONG_RUN_CALLS)
    parser.add_argument("--json", type=Path, default=Path("long_run_memory.json"))
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    profile = tiny_profile(Path("/tmp/ditaccel_long_run"))
    results = {}
    for method, (name, spec) in METHODS.items():
        pipe = tiny_pipeline(name)
        pipe.set_progress_bar_config(disable=True)
        acc = AcceleratedPipeline.from_pipe(pipe, methods=spec.format(profile=profile))
        rss, peak = [], 0
        with torch.no_grad():
            for i in range(args.calls):
                acc(**_varied_call(name, i))
                rss.append(round(rss_mib(), 2))
                peak = max(peak, acc.stats.to_dict()["cache_peak_bytes"])
        acc.remove()
        warm = rss[min(20, len(rss) - 1)]
        results[method] = {"spec": spec, "model": name, "rss_mib": rss, "growth_after_warmup_mib": rss[-1] - warm,
                           "cache_peak_bytes": peak}  # fmt: skip
        print(f"{method:18s} RSS {rss[0]:.0f} -> {warm:.0f} (call 20) -> {rss[-1]:.0f} MiB, "
              f"growth after warm-up {rss[-1] - warm:+.1f} MiB, cache peak {peak} bytes")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"calls": args.calls, "results": results}, indent=1))
    print(f"wrote {args.json}")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        for method, result in results.items():
            ax.plot(result["rss_mib"], label=method)
        ax.set_xlabel("call")
        ax.set_ylabel("resident memory (MiB), one process, methods in turn")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
