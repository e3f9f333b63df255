"""Per-call overhead of AcceleratedPipeline with no method, against the raw diffusers pipeline.

Calls the raw pipeline and the wrapper in alternation (so drift in machine load hits both alike)
and prints the median wall time of each and their difference, per call and per transformer
forward. Usage: python benchmarks/wrapper_overhead.py [--model tiny-random-flux] [--steps 28] [--calls 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ditaccel import AcceleratedPipeline, GenerationRequest, load_pipeline  # noqa: E402
from ditaccel import models as embedded  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-flux")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    entry = embedded.MODELS.get(args.model)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    acc = AcceleratedPipeline.from_pipe(pipe, methods=[])
    request = GenerationRequest(
        prompt=entry.cases[entry.bench_tasks[0]]()[0].prompt if entry else "a red circle on the left",
        steps=args.steps,
        height=entry.height if entry else None,
        width=entry.width if entry else None,
        output_type="latent",
        extra=dict(entry.call_defaults) if entry else {},
    )
    raw_times, wrapped_times = [], []
    for i in range(args.calls + 2):
        for target, times in ((pipe, raw_times), (acc, wrapped_times)):
            kwargs = acc.adapter.build_call(request)
            start = time.perf_counter()
            target(**kwargs)
            if i >= 2:  # first two rounds warm up
                times.append(time.perf_counter() - start)
    forwards = acc.stats.forwards
    raw, wrapped = statistics.median(raw_times), statistics.median(wrapped_times)
    print(
        f"model {args.model}, {args.steps} steps, {forwards} transformer forwards per call, {args.calls} calls each"
    )
    print(f"raw pipeline   median {raw * 1e3:9.2f} ms")
    print(f"wrapper, none  median {wrapped * 1e3:9.2f} ms")
    diff = wrapped - raw
    print(
        f"overhead       {diff * 1e3:+9.2f} ms per call ({diff / raw:+.2%}), {diff / forwards * 1e6:+.1f} us per forward"
    )


if __name__ == "__main__":
    main()
