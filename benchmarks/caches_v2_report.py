"""Read the caches v2 bench runs (``benchmarks/caches_v2.sh``) and compare the fronts at matched cost.

For each run: calibrated-cache's rows (their FLOPs ratio against the target, PSNR falling with the
ratio) against the best peer within +-0.03 of each row's FLOPs ratio, and adaptive-cache's rows
against every peer's front (the upper envelope of its rows, linearly interpolated) at their ratio;
calibrated-cache's rows also against adaptive-cache's front.
Writes ``docs/caches_v2/report.json`` and prints the tables in Markdown.

Usage: python benchmarks/caches_v2_report.py [docs/caches_v2]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

PEERS = ("peer-magcache", "peer-fbcache", "peer-taylorseer", "peer-dbcache")
MATCH = 0.03


def family(method: str) -> str:
    return method.split(":")[0]


def envelope(rows: list[dict], ratio: float) -> float | None:
    """The best PSNR the rows reach at ``ratio`` or below... on their upper front, interpolated."""
    points = sorted((r["flops_ratio"], r["psnr_db"]) for r in rows if r["psnr_db"] is not None)
    front, best = [], -np.inf
    for x, y in points:  # cheapest first: keep points that beat everything cheaper
        if y > best:
            front.append((x, y))
            best = y
    if not front or ratio < front[0][0] - MATCH:
        return None
    xs, ys = np.array([p[0] for p in front]), np.array([p[1] for p in front])
    if ratio <= xs[0]:
        return float(ys[0])
    return float(np.interp(ratio, xs, ys))  # beyond the dearest point: its PSNR


def report(path: Path) -> dict:
    data = json.loads(path.read_text())
    rows = [r for r in data["results"] if r["method"] != "none"]
    extra = path.with_name(f"{path.stem}_dbcache.json")  # cache-dit's rows, run in a process of their own
    if extra.is_file():
        rows += [r for r in json.loads(extra.read_text())["results"] if r["method"] != "none"]
    for r in rows:
        if r["psnr_db"] is not None and not np.isfinite(r["psnr_db"]):
            r["psnr_db"] = 99.0  # exact (no error at all): drawn at the top
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
            "adaptive_front_db": None if ours is None else round(ours, 2),
        })  # fmt: skip
    psnrs = [c["psnr_db"] for c in out["calibrated"]]
    out["calibrated_monotone"] = all(a >= b for a, b in zip(psnrs, psnrs[1:], strict=False))
    for r in sorted(
        (r for r in rows if family(r["method"]) == "adaptive-cache"), key=lambda r: r["flops_ratio"]
    ):
        fronts = {p: envelope(rs, r["flops_ratio"]) for p, rs in peers.items() if rs}
        beaten = {p: round(v, 2) for p, v in fronts.items() if v is not None}
        out["adaptive"].append({
            "method": r["method"], "flops_ratio": round(r["flops_ratio"], 4), "psnr_db": round(r["psnr_db"], 2),
            "peer_fronts_db": beaten, "at_or_above_all": all(r["psnr_db"] >= v for v in beaten.values()),
        })  # fmt: skip
    return out


def markdown(result: dict) -> str:
    offset = result.get("offset")
    start = (
        "" if offset == 0 else (f" from input {offset}" if offset is not None else ", offset not recorded")
    )
    lines = [f"### {result['run']} ({result['steps']} steps, {result['prompts']} prompts{start})", "",
             "| calibrated-cache target | FLOPs ratio | PSNR dB | best peer within +-0.03 | its ratio | its PSNR dB | margin dB | adaptive-cache front there dB |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in result["calibrated"]:
        lines.append(f"| {c['target']} | {c['flops_ratio']:.3f} | {c['psnr_db']:.2f} | `{c['best_peer'] or '-'}` | "
                     f"{c['best_peer_ratio'] or '-'} | {c['best_peer_psnr_db'] or '-'} | {c['margin_db'] if c['margin_db'] is not None else '-'} | "
                     f"{c['adaptive_front_db'] if c['adaptive_front_db'] is not None else '-'} |")  # fmt: skip
    lines += ["", f"calibrated-cache PSNR falls with the ratio: {result['calibrated_monotone']}", ""]
    lines += [
        "| adaptive-cache | FLOPs ratio | PSNR dB | peer fronts at that ratio (dB) | at or above all |",
        "|---|---|---|---|---|",
    ]
    for a in result["adaptive"]:
        fronts = ", ".join(f"{k.removeprefix('peer-')} {v}" for k, v in a["peer_fronts_db"].items())
        lines.append(
            f"| `{a['method']}` | {a['flops_ratio']:.3f} | {a['psnr_db']:.2f} | {fronts} | {a['at_or_above_all']} |"
        )
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/caches_v2")
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
