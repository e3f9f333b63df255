"""Issue 35's acceptance check of ``ditaccel tune``, from the files ``tune_acceptance.sh`` wrote.

``candidates``: print the specs the tune measured on its first rung (combinations included), one
per line, for the exhaustive ``ditaccel bench`` grid over the same candidates. ``check``: compare
the tune's recommendation with the grid's best setting at the target speedup, its held-out bench
with the tune's interval, and the two commands' times; write ``DIR/<task>_acceptance.json``.

- within 0.5 dB: the recommended setting's PSNR in the grid is within ``--tolerance-db`` of the
  grid's best PSNR among settings at >= the target speedup;
- holds: on the held-out inputs its speedup reaches the target or at least the low end of the
  tune's speedup interval, and its PSNR is at least the low end of the tune's PSNR interval;
- a third: the tune's seconds < the grid's / 3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _rows(path: Path) -> dict[str, dict]:
    return {row["method"]: row for row in json.loads(path.read_text())["results"]}


def candidates(folder: Path) -> None:
    report = json.loads((folder / "front.json").read_text())
    for row in report["rungs"][0]["measured"]:
        print(row["method"])


def check(args: argparse.Namespace) -> None:
    folder = Path(args.dir)
    tune = json.loads((folder / args.task / "front.json").read_text())
    target = tune["goal"]["target_speedup"]
    grid = _rows(folder / f"{args.task}_grid.json")
    holdout = _rows(folder / f"{args.task}_holdout.json")
    spec = tune["recommended"]["method"]
    reaching = {m: r for m, r in grid.items() if m != "none" and r["speedup"] >= target}
    best = max(reaching.values(), key=lambda r: r["psnr_db"]) if reaching else None
    mine = grid.get(spec)
    gap = None if best is None or mine is None else best["psnr_db"] - mine["psnr_db"]
    held = holdout[spec]
    interval = tune["recommended"].get("psnr_interval")
    speed_interval = tune["recommended"].get("speedup_interval")
    holds_psnr = None if interval is None else held["psnr_db"] >= interval[0]
    holds_speed = held["speedup"] >= min(target, speed_interval[0] if speed_interval else target)
    report = {
        "task": args.task,
        "target_speedup": target,
        "recommended": spec,
        "grid_best": None if best is None else best["method"],
        "gap_db": gap,
        "within_tolerance": None if gap is None else gap <= args.tolerance_db,
        "tolerance_db": args.tolerance_db,
        "holdout_inputs": json.loads((folder / f"{args.task}_holdout.json").read_text())["prompts"],
        "holdout_speedup": held["speedup"],
        "holdout_psnr_db": held["psnr_db"],
        "tune_psnr_interval": interval,
        "tune_speedup_interval": speed_interval,
        "holds": bool(holds_speed and holds_psnr) if holds_psnr is not None else None,
        "tune_seconds": args.tune_seconds,
        "grid_seconds": args.grid_seconds,
        "time_ratio": args.tune_seconds / args.grid_seconds,
        "under_a_third": args.tune_seconds < args.grid_seconds / 3,
        "results": [
            {
                "method": spec,
                "source": "tune",
                **{k: tune["recommended"].get(k) for k in ("speedup", "flops_ratio", "psnr_db")},
            },
            {
                "method": spec,
                "source": "grid",
                **{k: (mine or {}).get(k) for k in ("speedup", "flops_ratio", "psnr_db")},
            },
            {
                "method": spec,
                "source": "held-out",
                **{k: held.get(k) for k in ("speedup", "flops_ratio", "psnr_db")},
            },
        ]
        + (
            []
            if best is None
            else [
                {
                    "method": best["method"],
                    "source": "grid best",
                    **{k: best[k] for k in ("speedup", "flops_ratio", "psnr_db")},
                }
            ]
        ),
    }
    out = folder / f"{args.task}_acceptance.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("candidates")
    listing.add_argument("folder", type=Path)
    checking = sub.add_parser("check")
    checking.add_argument("--dir", required=True)
    checking.add_argument("--task", required=True, choices=("t2i", "edit"))
    checking.add_argument("--tune-seconds", type=float, required=True)
    checking.add_argument("--grid-seconds", type=float, required=True)
    checking.add_argument("--tolerance-db", type=float, default=0.5)
    args = parser.parse_args()
    if args.command == "candidates":
        candidates(args.folder)
    else:
        check(args)


if __name__ == "__main__":
    main()
