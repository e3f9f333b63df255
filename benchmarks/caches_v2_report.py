"""Read the caches v2 bench runs (``benchmarks/caches_v2.sh``) and compare the fronts at matched cost.

For each run: calibrated-cache's rows (their FLOPs ratio against the target, PSNR falling with the
ratio) against the best peer within +-0.03 of each row's FLOPs ratio, and adaptive-cache's rows
against every peer's front (the upper envelope of its rows, linearly interpolated) at their ratio;
calibrated-cache's rows also against adaptive-cache's front. Each comparison also gets a 90%
bootstrap interval over the run's inputs (paired: the same inputs for both sides; runs whose JSON
has per-input errors), which says whether 8 prompts can tell the two apart (given which rows make
the front: they are not re-chosen per resample).
Writes ``docs/results/caches_v2/report.json`` and prints the tables in Markdown.

Usage: python benchmarks/caches_v2_report.py [docs/results/caches_v2]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ditaccel.metrics.intervals import PSNR_CAP, front_difference, psnr_difference

PEERS = ("peer-magcache", "peer-fbcache", "peer-taylorseer", "peer-dbcache")
MATCH = 0.03


def family(method: str) -> str:
    return method.split(":")[0]


def front_points(rows: list[dict], ratio: float) -> tuple[dict, dict, float] | None:
    """The rows' upper front at ``ratio`` (rows cheapest first, each kept if it beats everything
    cheaper; linearly interpolated) as the two rows around ``ratio`` and the weight of the dearer
    (None below the cheapest row by more than +-0.03; beyond the dearest: the dearest)."""
    points = sorted((r for r in rows if r["psnr_db"] is not None), key=lambda r: r["flops_ratio"])
    front, best = [], -np.inf
    for r in points:
        if r["psnr_db"] > best:
            front.append(r)
            best = r["psnr_db"]
    if not front or ratio < front[0]["flops_ratio"] - MATCH:
        return None
    if ratio <= front[0]["flops_ratio"]:
        return front[0], front[0], 0.0
    for lower, upper in zip(front, front[1:], strict=False):
        if ratio <= upper["flops_ratio"]:
            return (
                lower,
                upper,
                (ratio - lower["flops_ratio"]) / (upper["flops_ratio"] - lower["flops_ratio"]),
            )
    return front[-1], front[-1], 0.0


def envelope(rows: list[dict], ratio: float) -> float | None:
    """The PSNR of the rows' upper front at ``ratio`` (:func:`front_points`)."""
    found = front_points(rows, ratio)
    if found is None:
        return None
    lower, upper, weight = found
    return float((1 - weight) * lower["psnr_db"] + weight * upper["psnr_db"])


def _rounded(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [round(pair[0], 2), round(pair[1], 2)]


def difference(a: dict, b: dict) -> list[float] | None:
    """90% interval of row ``a``'s PSNR minus row ``b``'s over the inputs (None without per-input errors)."""
    if a.get("mse_per_input") is None or b.get("mse_per_input") is None or len(a["mse_per_input"]) < 2:
        return None
    return _rounded(psnr_difference(a["mse_per_input"], b["mse_per_input"]))


def front_gap(row: dict, rows: list[dict]) -> list[float] | None:
    """90% interval of ``row``'s PSNR minus the front of ``rows`` at its ratio."""
    found = front_points(rows, row["flops_ratio"])
    if found is None or any(r.get("mse_per_input") is None for r in (row, found[0], found[1])):
        return None
    if len(row["mse_per_input"]) < 2:  # one input: nothing to resample
        return None
    lower, upper, weight = found
    return _rounded(
        front_difference(row["mse_per_input"], lower["mse_per_input"], upper["mse_per_input"], weight)
    )


def _interval_text(pair: list[float] | None) -> str:
    return "" if pair is None else f" [{pair[0]}, {pair[1]}]"


def report(path: Path) -> dict:
    data = json.loads(path.read_text())
    rows = [r for r in data["results"] if r["method"] != "none"]
    extra = path.with_name(f"{path.stem}_dbcache.json")  # cache-dit's rows, run in a process of their own
    if extra.is_file():
        rows += [r for r in json.loads(extra.read_text())["results"] if r["method"] != "none"]
    for r in rows:
        if r["psnr_db"] is not None and not np.isfinite(r["psnr_db"]):
            r["psnr_db"] = PSNR_CAP  # exact (no error at all): drawn at the top
    peers = {p: [r for r in rows if family(r["method"]) == p] for p in PEERS}
    calibrated = sorted((r for r in rows if family(r["method"]) == "calibrated-cache"),
                        key=lambda r: -r["config"]["flops_ratio"])  # fmt: skip
    out = {
        "run": path.stem,
        "steps": data["steps"],
        "prompts": data["prompts"],
        "offset": data.get("offset"),  # None: a run from before the bench recorded it
        "calibrated": [],
        "adaptive": [],
    }
    adaptive = [r for r in rows if family(r["method"]) == "adaptive-cache"]
    for r in calibrated:
        target, ratio = r["config"]["flops_ratio"], r["flops_ratio"]
        ours = envelope(adaptive, ratio) if adaptive else None  # this project's other cache
        near = [
            p for rs in peers.values() for p in rs if abs(p["flops_ratio"] - ratio) <= MATCH and p["psnr_db"]
        ]
        best = max(near, key=lambda p: p["psnr_db"], default=None)
        out["calibrated"].append({
            "target": target, "flops_ratio": round(ratio, 4), "ratio_met": abs(ratio - target) <= MATCH,
            "psnr_db": round(r["psnr_db"], 2), "best_peer": best and best["method"],
            "best_peer_ratio": best and round(best["flops_ratio"], 4),
            "best_peer_psnr_db": best and round(best["psnr_db"], 2),
            "margin_db": best and round(r["psnr_db"] - best["psnr_db"], 2),
            "margin_interval_db": best and difference(r, best),
            "adaptive_front_db": None if ours is None else round(ours, 2),
            "adaptive_gap_interval_db": front_gap(r, adaptive) if adaptive else None,
        })  # fmt: skip
    psnrs = [c["psnr_db"] for c in out["calibrated"]]
    out["calibrated_monotone"] = all(a >= b for a, b in zip(psnrs, psnrs[1:], strict=False))
    out["inversions"] = [  # a cheaper target measured above the dearer one next to it
        {"dearer": dear["config"]["flops_ratio"], "cheaper": cheap["config"]["flops_ratio"],
         "drop_db": round(dear["psnr_db"] - cheap["psnr_db"], 2), "drop_interval_db": difference(dear, cheap)}
        for dear, cheap in zip(calibrated, calibrated[1:], strict=False) if cheap["psnr_db"] > dear["psnr_db"]
    ]  # fmt: skip
    for r in sorted(
        (r for r in rows if family(r["method"]) == "adaptive-cache"), key=lambda r: r["flops_ratio"]
    ):
        fronts = {p: envelope(rs, r["flops_ratio"]) for p, rs in peers.items() if rs}
        beaten = {p: round(v, 2) for p, v in fronts.items() if v is not None}
        highest = max(beaten, key=beaten.get, default=None)  # the peer front to beat
        out["adaptive"].append({
            "method": r["method"], "flops_ratio": round(r["flops_ratio"], 4), "psnr_db": round(r["psnr_db"], 2),
            "peer_fronts_db": beaten, "at_or_above_all": all(r["psnr_db"] >= v for v in beaten.values()),
            "highest_front": highest, "highest_front_gap_interval_db": highest and front_gap(r, peers[highest]),
        })  # fmt: skip
    return out


def markdown(result: dict) -> str:
    offset = result.get("offset")
    start = (
        "" if offset == 0 else (f" from input {offset}" if offset is not None else ", offset not recorded")
    )
    lines = [f"### {result['run']} ({result['steps']} steps, {result['prompts']} prompts{start})", "",
             "| calibrated-cache target | FLOPs ratio | PSNR dB | best peer within +-0.03 | its ratio | its PSNR dB | margin dB [90% interval] | adaptive-cache front there dB | calibrated minus that front dB [90% interval] |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in result["calibrated"]:
        margin = (
            "-"
            if c["margin_db"] is None
            else f"{c['margin_db']}{_interval_text(c.get('margin_interval_db'))}"
        )
        front = c["adaptive_front_db"]
        gap = (
            "-"
            if front is None
            else f"{round(c['psnr_db'] - front, 2)}{_interval_text(c.get('adaptive_gap_interval_db'))}"
        )
        lines.append(f"| {c['target']} | {c['flops_ratio']:.3f} | {c['psnr_db']:.2f} | `{c['best_peer'] or '-'}` | "
                     f"{c['best_peer_ratio'] or '-'} | {c['best_peer_psnr_db'] or '-'} | {margin} | "
                     f"{front if front is not None else '-'} | {gap} |")  # fmt: skip
    lines += ["", f"calibrated-cache PSNR falls with the ratio: {result['calibrated_monotone']}"]
    for inv in result.get("inversions", []):
        lines.append(f"- {inv['cheaper']} measured {-inv['drop_db']} dB above {inv['dearer']} "
                     f"(dearer minus cheaper, 90% interval{_interval_text(inv['drop_interval_db']) or ' not known'})")  # fmt: skip
    lines += [
        "",
        "| adaptive-cache | FLOPs ratio | PSNR dB | peer fronts at that ratio (dB) | at or above all | minus the highest front dB [90% interval] |",
        "|---|---|---|---|---|---|",
    ]
    for a in result["adaptive"]:
        fronts = ", ".join(f"{k.removeprefix('peer-')} {v}" for k, v in a["peer_fronts_db"].items())
        highest = a.get("highest_front")
        gap = (
            "-"
            if highest is None
            else (
                f"{round(a['psnr_db'] - a['peer_fronts_db'][highest], 2)}{_interval_text(a.get('highest_front_gap_interval_db'))}"
            )
        )
        lines.append(
            f"| `{a['method']}` | {a['flops_ratio']:.3f} | {a['psnr_db']:.2f} | {fronts} | {a['at_or_above_all']} | {gap} |"
        )
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/caches_v2")
    runs = [  # bench runs (plan_ratios.json and the report itself are not)
        p
        for p in sorted(folder.glob("*.json"))
        if not p.stem.endswith("_dbcache") and "results" in json.loads(p.read_text())
    ]
    results = [report(p) for p in runs]
    (folder / "report.json").write_text(json.dumps(results, indent=1))
    print("\n\n".join(markdown(r) for r in results))


if __name__ == "__main__":
    main()
