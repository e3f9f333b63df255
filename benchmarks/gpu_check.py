"""Every method's wall-clock speedup, FLOPs ratio and error on a FLUX.1-dev-size transformer, plus
the torch.compile and offload cells that only a GPU can show; one JSON out.

The transformer has FLUX.1-dev's width (24 heads of 128, joint dim 4096, pooled 768, guidance
embedding, RoPE axes 16/56/56) with random weights and its depth cut to a few blocks; prompts are
random embeddings and the output stays latent (no text encoders, no VAE), so the time is the
transformer's. 4096 image tokens = a 1024x1024 picture; the Kontext rows add 4096 reference tokens.
Schedules are fixed (no profile of this random model exists; ``calibrated-cache`` plans from a
synthetic profile), so the speedups measure the mechanism at each FLOPs ratio, not image quality:
``rel_error`` is the relative L2 distance of the final latents from the plain pipeline's.

On a GPU (part of ``benchmarks/gpu_check.sh``):
    python benchmarks/gpu_check.py --json gpu_methods.json
On a CPU at toy size (checks the script end to end; the numbers mean nothing):
    python benchmarks/gpu_check.py --toy --json gpu_methods_toy.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
import traceback
from pathlib import Path

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)

from ditaccel import AcceleratedPipeline
from ditaccel.methods import registry
from ditaccel.metrics import count_flops
from ditaccel.testing import synthetic_profile

FLUX_DEV = dict(attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                pooled_projection_dim=768, axes_dims_rope=(16, 56, 56))  # fmt: skip
TOY = dict(attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32,
           axes_dims_rope=(8, 12, 12))  # fmt: skip
LATENT_CHANNELS = 16  # FLUX's VAE; 2x2 packing makes 64 transformer channels
T2I_METHODS = [
    "deepcache:interval=2",
    "deepcache:interval=3",
    "adaptive-cache:threshold=0.2,order=1",
    "calibrated-cache:flops_ratio=0.5",
    "sparse-attention:density=0.5",
    "sparse-attention:density=0.25",
    "block-external:external=text,refresh=4",
    "peer-fbcache",
    "peer-taylorseer",
]
EDIT_METHODS = [
    "region-edit:source=estimate,final=1,max_reuse=5",
    "block-external:refresh=12,warmup=1,final=0,mode=kv",
    "region-edit:source=estimate,final=1,max_reuse=5+block-external:refresh=12,warmup=1,final=0,mode=kv",
    "context-prune:keep=0.5,refresh=7",
    "deepcache:interval=2",
]


def build(kind: str, args: argparse.Namespace) -> FluxPipeline:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=args.double, num_single_layers=args.single,
        guidance_embeds=True, **(TOY if args.toy else FLUX_DEV),
    )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )  # fmt: skip
    cls = FluxPipeline if kind == "t2i" else FluxKontextPipeline
    pipe = cls(scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
               tokenizer_2=None, transformer=transformer.to(args.device, args.dtype))  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_kwargs(pipe: FluxPipeline, kind: str, args: argparse.Namespace) -> dict:
    config = pipe.transformer.config
    g = torch.Generator().manual_seed(1)
    side = int(math.isqrt(args.tokens)) * 16  # 16 px per token (8x VAE, 2x2 packing)
    kwargs = dict(
        prompt_embeds=torch.randn(1, args.text, config.joint_attention_dim, generator=g).to(args.device, args.dtype),
        pooled_prompt_embeds=torch.randn(1, config.pooled_projection_dim, generator=g).to(args.device, args.dtype),
        height=side, width=side, num_inference_steps=args.steps, guidance_scale=3.5, output_type="latent",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    if kind == "edit":  # a latent reference: Kontext takes it as is when it has the VAE's channels
        image = torch.randn(1, LATENT_CHANNELS, side // 8, side // 8, generator=g)
        kwargs |= dict(image=image.to(args.device, args.dtype), max_area=side * side, _auto_resize=False)
    return kwargs


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(pipe, kwargs: dict, args: argparse.Namespace) -> tuple[torch.Tensor, list[float]]:
    out = pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).images  # warm-up
    times = []
    for _ in range(args.runs):
        sync(args.device)
        start = time.perf_counter()
        out = pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).images
        sync(args.device)
        times.append(time.perf_counter() - start)
    return out.float(), times


def flops(pipe, kwargs: dict) -> int:
    with count_flops(pipe.adapter.step_modules()) as counted:
        pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)})
    return counted.total


def rel_error(out: torch.Tensor, plain: torch.Tensor) -> float:
    return float((out - plain).norm() / plain.norm())


def method_rows(kind: str, methods: list[str], args: argparse.Namespace, tmp: Path) -> list[dict]:
    pipe = build(kind, args)
    kwargs = call_kwargs(pipe, kind, args)
    plain = AcceleratedPipeline.from_pipe(pipe, [])
    base, base_times = timed(plain, kwargs, args)
    base_flops = flops(plain, kwargs)
    pipe = plain.remove()
    rows = [dict(task=kind, method="none", wall_s=statistics.mean(base_times), speedup=1.0, flops_ratio=1.0,
                 rel_error=0.0)]  # fmt: skip
    for spec in methods:
        known = registry.available_methods()
        if any(name not in known for name in (part.split(":")[0] for part in spec.split("+"))):
            rows.append(dict(task=kind, method=spec, skipped="not on this branch"))
            continue
        label = spec
        if spec.startswith("calibrated-cache"):
            path = synthetic_profile(pipe, steps=args.steps).save(tmp / f"profile-{kind}.json")
            spec = spec.replace("calibrated-cache:", f"calibrated-cache:profile={path},")
        try:
            acc = AcceleratedPipeline.from_pipe(pipe, spec)
            out, times = timed(acc, kwargs, args)
            row = dict(task=kind, method=label,
                       wall_s=statistics.mean(times), speedup=statistics.mean(base_times) / statistics.mean(times),
                       flops_ratio=flops(acc, kwargs) / base_flops, rel_error=rel_error(out, base))  # fmt: skip
            pipe = acc.remove()
        except Exception as error:  # a failing cell is a result here, not the end of the check
            row = dict(task=kind, method=label, error=f"{type(error).__name__}: {error}",
                       trace=traceback.format_exc()[-2000:])  # fmt: skip
            pipe = build(kind, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def compile_rows(args: argparse.Namespace) -> list[dict]:
    """``transformer.compile()`` of a wrapped pipeline, plain and with a cache (regional compilation,
    ``compile_repeated_blocks``, is in the CPU compile check): first / second call time, graph
    breaks, new graphs on the second call, error vs eager."""
    from torch._dynamo.utils import counters

    rows = []
    for spec, how in (("none", "whole"), ("deepcache:interval=2", "whole")):
        pipe = build("t2i", args)
        kwargs = call_kwargs(pipe, "t2i", args)
        acc = AcceleratedPipeline.from_pipe(pipe, [] if spec == "none" else spec)
        eager, eager_times = timed(acc, kwargs, args)
        torch._dynamo.reset()
        counters.clear()
        row = dict(method=spec, compile=how)
        try:
            if how == "whole":
                pipe.transformer.compile()
            else:
                pipe.transformer.compile_repeated_blocks()
            times = []
            for call in range(2):
                sync(args.device)
                start = time.perf_counter()
                out = acc(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).images.float()
                sync(args.device)
                times.append(time.perf_counter() - start)
                if call == 0:
                    breaks_first = sum(counters["graph_break"].values())
                    recompiles_first = counters["stats"]["unique_graphs"]
            row |= dict(first_call_s=times[0], second_call_s=times[1], eager_s=statistics.mean(eager_times),
                        speedup_vs_eager=statistics.mean(eager_times) / times[1],
                        graph_breaks_first_call=breaks_first,
                        graphs_first_call=recompiles_first,
                        new_graphs_second_call=counters["stats"]["unique_graphs"] - recompiles_first,
                        rel_error_vs_eager=rel_error(out, eager))  # fmt: skip
        except Exception as error:
            row |= dict(error=f"{type(error).__name__}: {error}", trace=traceback.format_exc()[-2000:])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def offload_rows(args: argparse.Namespace) -> list[dict]:
    """Offloading enabled before wrapping, with a method on: output vs the same method on the GPU,
    and the time."""
    spec = "deepcache:interval=2"
    pipe = build("t2i", args)
    kwargs = call_kwargs(pipe, "t2i", args)
    acc = AcceleratedPipeline.from_pipe(pipe, spec)
    resident, resident_times = timed(acc, kwargs, args)
    rows = []
    for how in ("model", "sequential", "group-block", "group-leaf"):
        pipe = build("t2i", args).to("cpu")
        row = dict(method=spec, offload=how)
        try:
            if how == "model":
                pipe.enable_model_cpu_offload(device=args.device)
            elif how == "sequential":
                pipe.enable_sequential_cpu_offload(device=args.device)
            else:
                pipe.transformer.enable_group_offload(
                    onload_device=torch.device(args.device), offload_device=torch.device("cpu"),
                    offload_type="block_level" if how == "group-block" else "leaf_level",
                    num_blocks_per_group=1 if how == "group-block" else None, use_stream=args.device.startswith("cuda"),
                )  # fmt: skip
            acc = AcceleratedPipeline.from_pipe(pipe, spec)
            out, times = timed(acc, kwargs, args)
            row |= dict(wall_s=statistics.mean(times), resident_wall_s=statistics.mean(resident_times),
                        rel_error_vs_resident=rel_error(out.to(resident.device), resident),
                        blocks_reused=acc.stats.blocks_reused)  # fmt: skip
        except Exception as error:
            row |= dict(error=f"{type(error).__name__}: {error}", trace=traceback.format_exc()[-2000:])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("gpu_methods.json"))
    parser.add_argument(
        "--toy", action="store_true", help="toy width and size, for a CPU check of the script"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
    parser.add_argument("--double", type=int, default=2, help="double-stream blocks (FLUX.1-dev: 19)")
    parser.add_argument("--single", type=int, default=4, help="single-stream blocks (FLUX.1-dev: 38)")
    parser.add_argument("--tokens", type=int, default=None, help="image tokens (a square number)")
    parser.add_argument("--text", type=int, default=None, help="text tokens")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=("t2i", "edit", "compile", "offload"),
                        default=["t2i", "edit", "compile", "offload"])  # fmt: skip
    args = parser.parse_args()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = getattr(torch, args.dtype or ("float32" if args.toy else "bfloat16"))
    args.tokens = args.tokens or (64 if args.toy else 4096)
    args.text = args.text or (16 if args.toy else 512)
    args.steps = args.steps or (6 if args.toy else 28)
    if math.isqrt(args.tokens) ** 2 != args.tokens:
        parser.error("--tokens must be a square number")
    tmp = args.json.parent
    tmp.mkdir(parents=True, exist_ok=True)
    report = dict(device=torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
                  torch=torch.__version__, dtype=str(args.dtype), tokens=args.tokens, text=args.text,
                  steps=args.steps, blocks=[args.double, args.single], toy=args.toy)  # fmt: skip
    start = time.perf_counter()
    parts = {
        "t2i": lambda: method_rows("t2i", T2I_METHODS, args, tmp),
        "edit": lambda: method_rows("edit", EDIT_METHODS, args, tmp),
        "offload": lambda: offload_rows(args),
        "compile": lambda: compile_rows(args),
    }
    for name, part in parts.items():
        if name in args.parts:
            report[name] = part()
            report["seconds"] = time.perf_counter() - start
            args.json.write_text(json.dumps(report, indent=1))  # after every part: a timeout keeps the rest
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
