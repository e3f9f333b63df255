"""What a tune hands back to a person: ``front.json``, the front plot and an image grid.

``front.json`` holds the recommended setting (its bench row with intervals, whether it reached the
goal and why it was chosen), the front and every row of the rung the front was read on (bench
keys, so the docs' result-table directives render it), what each rung measured, the candidates the
pipeline refused and why, and the notes. ``front.png`` plots speedup against PSNR, every point
labelled with its spec, the front drawn, the recommended point ringed and the goal marked.
``grid.png`` puts the plain pipeline's image next to the recommended setting's for a few inputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..metrics.image import as_float_images, psnr  # noqa: E402
from ..plots import PSNR_CEILING_DB  # noqa: E402

FRONT_JSON = "front.json"
FRONT_PNG = "front.png"
GRID_PNG = "grid.png"


def _y(psnr_db: float) -> float:
    return min(float(psnr_db), PSNR_CEILING_DB)


def _label(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Each point's spec beside it; labels of points that lie close together are stacked downwards
    (one line each) so they stay readable."""
    xs = [r["speedup"] for r in rows]
    ys = [_y(r["psnr_db"]) for r in rows]
    if not rows:
        return
    x_span = (max(xs) - min(xs)) or 1.0
    y_span = (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for row, x, y in sorted(zip(rows, xs, ys, strict=True), key=lambda item: (-item[2], item[1])):
        near = sum(1 for px, py in placed if abs(px - x) < 0.15 * x_span and abs(py - y) < 0.08 * y_span)
        placed.append((x, y))
        ax.annotate(
            row["method"], (x, y), fontsize=6, xytext=(6, 3 - 9 * near), textcoords="offset points",
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if near else None,
        )  # fmt: skip


def front_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Speedup vs PSNR of the rung the front was read on (earlier rungs faded), each point
    labelled with its spec, the front joined, the recommended setting ringed, the goal drawn."""
    rows = report["results"]
    fig, ax = plt.subplots(figsize=(10, 6), constrained_layout=True)
    final_inputs = rows[0]["inputs"] if rows else None
    for rung in report["rungs"]:
        if rung["inputs"] == final_inputs:
            continue
        points = [(m["speedup"], _y(m["psnr_db"])) for m in rung["measured"]]
        if points:
            ax.plot(
                *zip(*points, strict=True),
                ".",
                color="0.75",
                label=f"{rung['inputs']} inputs, screened (1 timed pass)",
            )
    ax.plot(
        [r["speedup"] for r in rows], [_y(r["psnr_db"]) for r in rows], "o", color="tab:blue",
        label=f"{final_inputs} inputs, {report['rungs'][-1]['runs']} timed run(s)" if rows else None,
    )  # fmt: skip
    front = sorted(report["front"], key=lambda r: r["speedup"])
    ax.plot(
        [r["speedup"] for r in front], [_y(r["psnr_db"]) for r in front], "-", color="tab:blue", label="front"
    )
    _label(ax, rows)
    best = report["recommended"]
    ax.plot(
        [best["speedup"]], [_y(best["psnr_db"])], "o", ms=14, mfc="none", mec="tab:red", label="recommended"
    )
    x, y = best["speedup"], _y(best["psnr_db"])
    if best.get("psnr_interval"):
        lo, hi = (_y(v) for v in best["psnr_interval"])
        speed = best.get("speedup_interval")
        ax.errorbar(
            [x], [y], fmt="none", ecolor="tab:red", yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]],
            xerr=None if not speed else [[max(x - speed[0], 0.0)], [max(speed[1] - x, 0.0)]],
        )  # fmt: skip
    goal = report["goal"]
    if goal["target_speedup"] is not None:
        ax.axvline(goal["target_speedup"], color="tab:red", ls="--", lw=1, label="target speedup")
    if goal["min_psnr"] is not None:
        ax.axhline(goal["min_psnr"], color="tab:red", ls="--", lw=1, label="minimum PSNR")
    ax.set_xlabel("wall-clock speedup over the plain pipeline (x)")
    ax.set_ylabel(f"PSNR vs the plain pipeline (dB; identical drawn at {PSNR_CEILING_DB:g})")
    ax.set_title(
        f"ditaccel tune: {report['model']} {report['task']}, {report['steps']} steps, {report['device']}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def image_grid(plain: list[Any], chosen: list[Any], spec: str, path: str | Path) -> Path:
    """One row per input: the plain pipeline's image, the ``spec`` image and its PSNR."""
    count = len(plain)
    fig, axes = plt.subplots(count, 2, figsize=(6, 3 * count), squeeze=False, constrained_layout=True)
    for i, (a, b) in enumerate(zip(plain, chosen, strict=True)):
        for ax, image, title in ((axes[i, 0], a, "plain"), (axes[i, 1], b, f"{psnr(b, a):.1f} dB")):
            frame = as_float_images(image)[0]
            ax.imshow(np.clip(frame if frame.ndim == 3 else frame[0], 0, 1))  # a video: its first frame
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(spec if len(spec) < 70 else spec[:67] + "...", fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(
    report: dict[str, Any], root: Path, session: Any, grid_inputs: list[Any], store: Any, tick: Any
) -> dict[str, Path]:
    """Write ``front.json``, ``front.png`` and ``grid.png`` (the recommended setting run again on
    the grid's inputs; the plain images are the stored ones) into ``root``."""
    paths = {"front.json": root / FRONT_JSON}
    paths["front.json"].write_text(json.dumps(_finite_json(report), indent=2))
    paths["front.png"] = front_plot(report, root / FRONT_PNG)
    count = len(grid_inputs)
    stored = store.get_plain(report["recommended"]["inputs"])
    if count and stored is not None:
        spec = report["recommended"]["method"]
        chosen = session.counting_pass(spec, grid_inputs, tick).images
        paths["grid.png"] = image_grid(stored[0][:count], chosen, spec, root / GRID_PNG)
    return paths


def _finite_json(value: Any) -> Any:
    """JSON as the bench writes it (``Infinity`` for identical images is kept: Python reads it)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value
