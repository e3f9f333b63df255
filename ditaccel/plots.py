"""Figures of bench reports: each method's quality-versus-cost front.

A sweep runs several specs of one or more methods; plotting PSNR against speedup and against the
FLOPs ratio shows at a glance which method keeps more quality at the same saving. The front of a
method is the upper envelope of its points (no other point of the method is both faster and
better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

PSNR_CEILING_DB = 60.0  # identical images have infinite PSNR; they are drawn here instead


def method_name(spec: str) -> str:
    """``deepcache:interval=3`` -> ``deepcache``; a combination keeps every name
    (``deepcache+sparse-attention``)."""
    return "+".join(part.split(":", 1)[0] for part in spec.split("+"))


def pareto_front(
    points: list[tuple[float, float]], larger_x_is_better: bool = True
) -> list[tuple[float, float]]:
    """Points not dominated by another (better or equal on both axes, y larger is better), sorted by x."""
    sign = 1 if larger_x_is_better else -1
    front = [
        (x, y)
        for x, y in points
        if not any(sign * (x2 - x) >= 0 and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)
    ]
    return sorted(set(front))


def front_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Write PSNR vs speedup and PSNR vs flops_ratio, one front per method, to ``path`` (PNG)."""
    rows = [r for r in report["results"] if r.get("psnr_db") is not None]
    if not rows:
        raise ValueError("nothing to plot: the report has no method besides the baseline")
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(method_name(row["method"]), []).append(row)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    panels = (("speedup", "wall-clock speedup (x)", True), ("flops_ratio", "transformer FLOPs ratio", False))
    for ax, (key, label, larger_better) in zip(axes, panels, strict=True):
        for method, items in sorted(by_method.items()):
            points = [(float(r[key]), _finite(r["psnr_db"])) for r in items if r.get(key) is not None]
            if not points:
                continue
            (line,) = ax.plot(*zip(*pareto_front(points, larger_better), strict=True), "-", label=method)
            ax.plot(*zip(*points, strict=True), "o", color=line.get_color(), alpha=0.6)
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR vs baseline (dB)")
        ax.grid(alpha=0.3)
        if not larger_better:
            ax.invert_xaxis()  # cheaper to the right, like speedup
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"{report['model']} {report['task']}, {report['steps']} steps, {report.get('device', '')}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _finite(psnr: float) -> float:
    return min(float(psnr), PSNR_CEILING_DB)
