"""The ``ditaccel`` command line: ``models``, ``generate``, ``bench``, ``calibrate``, ``tune``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    help="Training-free acceleration for diffusers Diffusion Transformer pipelines.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

CasesOpt = Annotated[
    Path | None,
    typer.Option(
        help="Your own inputs instead of the model's: t2i, a prompt file (one per line, or JSONL); edit, a "
        "JSONL or folder of image + instruction [+ mask] (see ditaccel.inputs)."
    ),
]
MethodsOpt = Annotated[
    str, typer.Option("--methods", help="Method spec, e.g. 'deepcache:interval=3' or 'a+b'; 'none' = plain.")
]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # paths and specs stay whole
    raise typer.Exit(2)


@app.command("models")
def models_command() -> None:
    """List the embedded models (loadable offline by name)."""
    from . import models

    table = Table(title="embedded models")
    table.add_column("name", no_wrap=True)  # names are to be copied: never truncated
    table.add_column("bench tasks: pipelines", overflow="fold")
    table.add_column("description", overflow="fold")
    for entry in models.MODELS.values():
        serves = "\n".join(f"{task}: {klass}" for task, klass in entry.pipelines.items())
        table.add_row(entry.name, serves, entry.description)
    console.print(table)


@app.command("generate")
def generate_command(
    model: Annotated[str, typer.Option(help="Embedded model name, local pipeline folder or hub id.")],
    prompt: Annotated[
        str, typer.Option(help="Prompt or edit instruction (DiT: class labels, comma-separated).")
    ],
    out: Annotated[Path, typer.Option(help="Output PNG (video: a frame grid, or .gif).")],
    image: Annotated[Path | None, typer.Option(help="Source image for editing pipelines.")] = None,
    mask: Annotated[Path | None, typer.Option(help="Mask image (white = edit) for mask editing.")] = None,
    methods: MethodsOpt = "none",
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    height: Annotated[int | None, typer.Option(help="Output height.")] = None,
    width: Annotated[int | None, typer.Option(help="Output width.")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="Negative prompt (enables true CFG).")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="Guidance scale.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available).")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Also run the plain pipeline on the same seed: both images side by side in OUT, "
            "speedup, FLOPs ratio and PSNR printed.",
        ),
    ] = False,
    runs: Annotated[int, typer.Option(help="With --compare: timed rounds (times are medians).")] = 1,
) -> None:
    """Generate (or edit) one image with an accelerated pipeline and print what it did."""
    import torch

    from . import models
    from .media import load_image, load_mask, output_images, save_output
    from .methods import resolve_methods
    from .pipelines import GenerationRequest
    from .pipelines.accelerated import AcceleratedPipeline, load_pipeline

    try:
        resolve_methods(methods)
        if runs < 1:
            raise ValueError(f"--runs must be >= 1, got {runs}")
        entry = models.MODELS.get(model)
        request = GenerationRequest(
            prompt=prompt,
            image=load_image(image) if image else None,
            mask=load_mask(mask) if mask else None,
            steps=steps or (entry.steps if entry else None),
            seed=seed,
            height=height or (entry.height if entry else None),
            width=width or (entry.width if entry else None),
            negative_prompt=negative_prompt,
            guidance_scale=guidance_scale,
            extra=dict(entry.call_defaults) if entry else {},
        )
        pipeline_class = None
        if entry is not None and len(entry.pipelines) > 1:
            pipeline_class = entry.pipeline_for("edit" if image else "t2i")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with console.status(f"loading {model}"), _quiet_loading():
            pipeline = load_pipeline(model, pipeline_class=pipeline_class, dtype=_dtype(dtype)).to(device)

        def call_kwargs(pipe: AcceleratedPipeline) -> dict:
            # a mask for the methods (region-edit on an instruction editor), not for the pipeline
            method_mask = request.mask is not None and "mask_image" in pipe.call_arguments
            method_mask = method_mask and pipe.adapter.task != "inpaint"
            kwargs = pipe.adapter.build_call(
                dataclasses.replace(request, mask=None) if method_mask else request
            )
            if method_mask:
                kwargs["mask_image"] = request.mask
            return kwargs

        if compare:
            from .compare import compare as run_compare
            from .compare import side_by_side

            pipeline.set_progress_bar_config(disable=True)
            sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
            with console.status("plain and accelerated pipeline on the same seed"):
                comparison = run_compare(pipeline, methods, call_kwargs, runs=runs, sync=sync)
        else:
            pipe = AcceleratedPipeline.from_pipe(pipeline, methods=methods)
            result = pipe(**call_kwargs(pipe))
    except (ValueError, TypeError, OSError) as exc:
        _fail(str(exc))
    if compare:
        console.print(comparison.stats.table())
        console.print(comparison.summary())
        console.print(f"wrote {side_by_side(comparison, out)}")
        return
    path = save_output(output_images(result), out)
    console.print(pipe.stats.table())
    console.print(f"wrote {path} in {pipe.stats.wall_s:.2f} s")


@app.command("bench")
def bench_command(
    model: Annotated[str, typer.Option(help="Embedded model name, local pipeline folder or hub id.")],
    methods: Annotated[
        list[str], typer.Option("--methods", help="Method spec; repeat for several. 'none' is always run.")
    ],
    task: Annotated[str, typer.Option(help="t2i, edit or control (ControlNet pipelines).")] = "t2i",
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model's).")] = None,
    height: Annotated[int | None, typer.Option(help="Height (default: the model's).")] = None,
    width: Annotated[int | None, typer.Option(help="Width (default: the model's).")] = None,
    prompts: Annotated[int, typer.Option(help="Number of prompts / edit cases from the default set.")] = 8,
    runs: Annotated[int, typer.Option(help="Timed rounds (wall_s is the median over them).")] = 3,
    offset: Annotated[
        int,
        typer.Option(
            help="Skip this many of the model's inputs (16: scenes neither bench nor calibration saw)."
        ),
    ] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available).")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG of PSNR vs speedup and vs FLOPs ratio, one front per method."),
    ] = None,
    cases: CasesOpt = None,
) -> None:
    """Benchmark methods against the plain pipeline: speed, counted FLOPs, quality.

    Repeat --methods with several settings of one method to sweep it; --plot draws the fronts.
    """
    from .bench import BenchSettings, run_bench

    try:
        settings = BenchSettings(
            model=model, task=task, methods=list(methods), steps=steps, height=height, width=width,
            prompts=prompts, runs=runs, device=device, dtype=dtype, offset=offset, cases=cases,
        )  # fmt: skip
    except ValueError as exc:
        _fail(str(exc))
    total = len(settings.methods) * settings.prompts * (1 + settings.runs)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("bench", total=total)
        try:
            report = run_bench(settings, progress=lambda d: progress.update(bar, advance=1, description=d))
        except (ValueError, TypeError, OSError) as exc:
            _fail(str(exc))
    console.print(results_table(report))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")
    if plot is not None:
        from .plots import front_plot

        try:
            console.print(f"wrote {front_plot(report, plot)}")
        except ValueError as exc:
            _fail(str(exc))


@app.command("calibrate")
def calibrate_command(
    model: Annotated[str, typer.Option(help="Embedded model name, local pipeline folder or hub id.")],
    out: Annotated[Path, typer.Option(help="Profile JSON to write (planner tensors go beside it).")],
    prompts: Annotated[
        str, typer.Option(help="How many of the model's calibration prompts, or a file with one per line.")
    ] = "8",
    task: Annotated[
        str | None,
        typer.Option(
            help="t2i, edit or control (default: the model's first; a model that is not embedded needs "
            "--cases for edit)."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model's).")] = None,
    height: Annotated[int | None, typer.Option(help="Height (default: the model's).")] = None,
    width: Annotated[int | None, typer.Option(help="Width (default: the model's).")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write PNG figures of the profile here.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available).")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    verify: Annotated[
        int,
        typer.Option(
            help="Prompts (after the profiled ones) each candidate cache plan is run on (0: store them unrun)."
        ),
    ] = 8,  # calibration.verify.VERIFY_PROMPTS (not imported: the CLI loads torch lazily)
    verify_steps: Annotated[
        list[int] | None,
        typer.Option(
            help="Other step counts the cache plans are verified at, from the same profile (repeat; "
            "default: half the profile's steps; 0: none)."
        ),
    ] = None,
    cases: CasesOpt = None,
) -> None:
    """Profile a model's per-block, per-step redundancy and attention density; plan, run the
    candidate cache plans and keep the best measured; write the profile (and figures), for
    `calibrated-cache:profile=...`."""
    from .calibration.run import CalibrationSettings, calibrate

    try:
        settings = CalibrationSettings(
            model=model, prompts=prompts, task=task, steps=steps, height=height, width=width,
            device=device, dtype=dtype, verify=verify,
            verify_steps=None if not verify_steps else tuple(n for n in verify_steps if n != 0),
            cases_file=cases,
        )  # fmt: skip
    except ValueError as exc:
        _fail(str(exc))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("loading", total=settings.work())
        try:
            profile = calibrate(settings, progress=lambda d: progress.update(bar, advance=1, description=d))
        except (ValueError, TypeError, OSError) as exc:
            _fail(str(exc))
        progress.update(bar, total=progress.tasks[bar].completed, description="calibrated")  # no context pass
    console.print(profile_table(profile))
    if profile.plans.get("calibrated-cache"):
        console.print(plans_table(profile))
    console.print(f"wrote {profile.save(out)}")
    if plots is not None:
        from .calibration.plots import profile_plots

        for path in profile_plots(profile, plots):
            console.print(f"wrote {path}")


@app.command("tune")
def tune_command(
    model: Annotated[str, typer.Option(help="Embedded model name, local pipeline folder or hub id.")],
    out: Annotated[
        Path,
        typer.Option(help="Folder for front.json, front.png, grid.png and the measurements (resumable)."),
    ],
    task: Annotated[str, typer.Option(help="t2i, edit or video (text-to-video).")] = "t2i",
    prompts: Annotated[
        str, typer.Option(help="How many of the model's inputs, or a prompt file (one per line).")
    ] = "8",
    cases: CasesOpt = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model's).")] = None,
    height: Annotated[int | None, typer.Option(help="Height (default: the model's).")] = None,
    width: Annotated[int | None, typer.Option(help="Width (default: the model's).")] = None,
    target_speedup: Annotated[
        float | None, typer.Option(help="Goal: at least this speedup, with the best PSNR.")
    ] = None,
    min_psnr: Annotated[
        float | None, typer.Option(help="Goal: at least this PSNR (dB), with the best speedup.")
    ] = None,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Start no new measurement after this many minutes (re-run to go on).")
    ] = None,
    runs: Annotated[int, typer.Option(help="Timed rounds on the last rung (medians); one before it.")] = 3,
    eta: Annotated[int, typer.Option(help="Successive halving: keep 1/eta per rung, eta x the inputs.")] = 3,
    profile: Annotated[
        Path | None, typer.Option(help="Calibration profile for calibrated-cache (default: the model's own).")
    ] = None,
    edit_profile: Annotated[
        Path | None, typer.Option(help="Calibration profile of the editing pipeline, for context-prune.")
    ] = None,
    calibrate: Annotated[
        bool,
        typer.Option("--calibrate", help="Calibrate first (kept in OUT), so profile-driven methods join."),
    ] = False,
    candidate: Annotated[
        list[str] | None,
        typer.Option("--candidate", help="Search these specs instead of the proposed ones (repeat)."),
    ] = None,
    offset: Annotated[int, typer.Option(help="Skip this many of the model's inputs.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available).")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
) -> None:
    """Find the best method setting for this model, inputs and device, measured like the bench.

    Measures the plain pipeline and every method that applies (step caches over their main knob,
    calibrated-cache at its profile's ratios, token methods for editing pipelines, sparse attention
    on long sequences, and one step cache + one token method), by successive halving; prints the
    recommended --methods spec with its speedup, FLOPs ratio and PSNR (with intervals) and writes
    OUT/front.json, OUT/front.png and OUT/grid.png. A re-run with the same OUT skips what is done.
    """
    from .bench import BenchSession, model_inputs
    from .calibration.run import CalibrationSettings
    from .inputs import load_cases
    from .tuning import TuneConfig, run_tune

    try:
        if task not in ("t2i", "edit", "video"):
            raise ValueError(f"--task must be t2i, edit or video, got {task!r}")
        bench_task = "edit" if task == "edit" else "t2i"
        config = TuneConfig(
            target_speedup=target_speedup, min_psnr=min_psnr, budget_minutes=budget_minutes, runs=runs,
            eta=eta, profile=profile, edit_profile=edit_profile, calibrate=calibrate,
            candidates=tuple(candidate) if candidate else None,
        )  # fmt: skip
        if cases is not None:
            inputs = load_cases(cases, task)
        elif prompts.isdigit():
            if int(prompts) < 1:
                raise ValueError(f"--prompts must be >= 1, got {prompts}")
            inputs = model_inputs(model, bench_task, int(prompts), offset)
        else:
            inputs = load_cases(Path(prompts), task)
        calibration = None
        if calibrate:
            own = cases is None and prompts.isdigit() and model in _embedded()
            calibration = CalibrationSettings(
                model=model, task=bench_task, steps=steps, height=height, width=width, device=device,
                dtype=dtype, inputs=None if own else inputs,
            )  # fmt: skip
        with console.status(f"loading {model}"), _quiet_loading():
            session = BenchSession.load(
                model, bench_task, steps=steps, height=height, width=width, device=device, dtype=dtype,
                inputs=inputs,
            )  # fmt: skip
        _check_video_task(task, session.pipe, model)
    except (ValueError, TypeError, OSError) as exc:
        _fail(str(exc))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("tune", total=None)
        try:
            result = run_tune(
                session, inputs, config, out, model=model, calibration=calibration,
                progress=lambda d: progress.update(bar, advance=1, description=d),
                planned=lambda calls: progress.update(bar, total=calls),
            )  # fmt: skip
        except (ValueError, TypeError, OSError) as exc:
            _fail(str(exc))
        progress.update(bar, total=progress.tasks[bar].completed, description="tuned")
    console.print(tune_table(result.report))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
    console.print(recommendation_line(result.report), soft_wrap=True)  # a --methods string to copy whole
    for path in result.paths.values():
        console.print(f"wrote {path}", soft_wrap=True)


def _check_video_task(task: str, pipe, model: str) -> None:
    """``--task video`` names a text-to-video pipeline, and a text-to-video pipeline needs it."""
    from .pipelines import adapter_for

    served = adapter_for(pipe).task
    if task == "video" and served != "t2v":
        raise ValueError(
            f"--task video needs a text-to-video pipeline; {model} serves {served}: "
            f"use --task {'edit' if served in ('edit', 'inpaint') else 't2i'}"
        )
    if task != "video" and served == "t2v":
        raise ValueError(f"{model} is a text-to-video pipeline: use --task video")


def _embedded() -> list[str]:
    from . import models

    return models.available()


def _interval(values) -> str:
    return "" if not values else f" [{values[0]:.2f}, {values[1]:.2f}]"


def recommendation_line(report: dict) -> str:
    """The recommended spec with its measured speedup, FLOPs ratio and PSNR (with intervals)."""
    best = report["recommended"]
    verdict = "recommended" if best["reached"] else "closest measured (goal not reached)"
    ratio = "-" if best.get("flops_ratio") is None else f"{best['flops_ratio']:.3f}"
    return (
        f'{verdict}: --methods "{best["method"]}"\n'
        f"  speedup {best['speedup']:.2f}x{_interval(best.get('speedup_interval'))}, FLOPs ratio {ratio}, "
        f"PSNR {_cell(best['psnr_db'])} dB{_interval(best.get('psnr_interval'))} on {best['inputs']} inputs"
    )


def tune_table(report: dict) -> Table:
    """The rows of the rung the front was read on; the front's marked."""
    goal = report["goal"]
    title = f"{report['model']} {report['task']}, {report['steps']} steps, {report['device']}: tune ({goal['kind']})"
    table = Table(title=title)
    columns = ("method", "speedup", "flops_ratio", "psnr_db", "ssim", "shapes_acc", "front")
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right", overflow="fold")
    for row in report["results"]:
        cells = [_cell(row.get(c)) for c in columns[:-1]]
        table.add_row(*cells, "*" if row["on_front"] else "")
    return table


def profile_table(profile) -> Table:
    """A summary of a profile: per block, its mean change and spread; the stored plans."""
    import numpy as np

    change = np.asarray(profile.block_change)[1:]
    cv = np.asarray(profile.block_change_cv)[1:]
    table = Table(title=f"{profile.model}: {profile.prompts} prompts x {profile.steps} steps")
    for column in ("block", "mean change", "cv across prompts", "gflops"):
        table.add_column(column, justify="left" if column == "block" else "right")
    for b, name in enumerate(profile.blocks):
        gflops = profile.block_gflops[b] if profile.block_gflops else None
        table.add_row(name, f"{change[:, b].mean():.4f}", f"{cv[:, b].mean():.3f}", _cell(gflops))
    return table


def plans_table(profile) -> Table:
    """The stored cache plans: target, FLOPs ratio, the planner settings, predicted error and, where
    `calibrate` ran them, the measured PSNR (which must fall with the ratio)."""
    check = profile.plans.get("calibrated-cache-verification", {})
    title = "calibrated-cache plans"
    if check:
        title += f" (run on {check['prompts']} prompts; PSNR {'falls' if check['monotone'] else 'does NOT fall'} with the ratio)"
    table = Table(title=title)
    columns = ("steps", "target", "flops ratio", "served", "plan kind", "predicted error", "measured PSNR dB")
    for column in columns:
        table.add_column(column, justify="left" if column == "plan kind" else "right")
    for plan in profile.plans["calibrated-cache"]:
        kind = plan.get("generator") or {}
        shown = ("weighting", "power", "scope", "protect", "max_gap", "recomputed_from")
        text = ", ".join(
            [f"order={plan['order']}"]
            + [f"{k}={v}" for k, v in kind.items() if k in shown and v not in (None, 0.0, 1.0, "block")]
        )
        predicted = plan["predicted_error"]
        table.add_row(
            str(plan["steps"]), str(plan["target"].get("flops_ratio", "-")), f"{plan['flops_ratio']:.3f}",
            str(sum(len(step) for step in plan["reuse"])), text or "-",
            "-" if predicted is None else f"{predicted:.3f}", _cell((plan.get("measured") or {}).get("psnr_db")),
        )  # fmt: skip
    return table


def results_table(report: dict) -> Table:
    """The bench results as a rich table."""
    table = Table(title=f"{report['model']} {report['task']}, {report['steps']} steps, {report['device']}")
    columns = [
        "method",
        "wall_s",
        "speedup",
        "transformer_gflops",
        "flops_ratio",
        "psnr_db",
        "ssim",
        "shapes_acc",
        "blocks_reused",
    ]
    if report["task"] == "edit":
        columns.append("region_psnr_db")
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in report["results"]:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.3f}"
    return str(value)


@contextmanager
def _quiet_loading():
    """No per-component loading bars from diffusers / transformers while a status line shows."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def _dtype(name: str):
    import torch

    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return value


# The click command the Typer app builds: the docs' CLI reference (mkdocs-click) is generated from it.
click_command = typer.main.get_command(app)

if __name__ == "__main__":
    app()
