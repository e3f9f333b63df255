"""diffusers' own FluxPipeline and FluxKontextPipeline test classes, on wrapped pipelines.

The test classes are the contract of a drop-in: run once on plain pipelines and once per method
setting on ``AcceleratedPipeline`` wrappers (``diffusers_tests/ditaccel_plugin.py``: offline
tokenizers / T5 config in place of the hub's tiny ones; ``pipeline_class(**components)`` returns
the wrapper), the tests that pass plain must pass wrapped. The report lists, per setting, the
tests that pass plain and not wrapped, with their first error line.

Needs a diffusers checkout (its ``tests/`` folder; ``fetch`` one) and ``parameterized`` and
``requests_mock`` (its tests import them):

    python benchmarks/diffusers_pipeline_tests.py --diffusers /path/to/diffusers \\
        --json docs/results/diffusers_pipeline_tests.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

FILES = {
    "FluxPipeline": "tests/pipelines/flux/test_pipeline_flux.py",
    "FluxKontextPipeline": "tests/pipelines/flux/test_pipeline_flux_kontext.py",
}
# exact settings (the plain pipeline's output) of every method, per pipeline
SETTINGS = {
    "FluxPipeline": [
        "none",
        "deepcache:interval=1",
        "adaptive-cache:threshold=0",
        "sparse-attention:density=1",
        "block-external:external=text,refresh=1",
    ],
    "FluxKontextPipeline": [
        "none",
        "deepcache:interval=1",
        "adaptive-cache:threshold=0",
        "sparse-attention:density=1",
        "block-external:refresh=1",
        "region-edit:threshold=1,cache_reference=false,velocity_tolerance=0",
    ],
}
PLUGIN = Path(__file__).parent / "diffusers_tests"


def outcomes(checkout: Path, test_file: str, spec: str | None) -> dict[str, str]:
    """Test id -> "passed" / "skipped" / the first line of its failure."""
    with tempfile.TemporaryDirectory() as folder:
        junit = Path(folder) / "junit.xml"
        env = {**os.environ, "PYTHONPATH": str(PLUGIN), "HF_HUB_OFFLINE": "1"}
        env.pop("DITACCEL_METHODS", None)
        if spec is not None:
            env["DITACCEL_METHODS"] = spec
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "ditaccel_plugin", "-p", "no:cacheprovider",
                        test_file, f"--junitxml={junit}"], cwd=checkout, env=env, capture_output=True)  # fmt: skip
        result = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
            problem = case.find("failure") if case.find("failure") is not None else case.find("error")
            if problem is not None:
                result[name] = (problem.get("message") or "failed").splitlines()[0][:200]
            else:
                result[name] = "skipped" if case.find("skipped") is not None else "passed"
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusers", type=Path, required=True, help="a diffusers checkout (with tests/)")
    parser.add_argument("--json", type=Path, default=Path("diffusers_pipeline_tests.json"))
    args = parser.parse_args()
    report = {}
    for pipeline, test_file in FILES.items():
        plain = outcomes(args.diffusers, test_file, None)
        passing = sorted(t for t, o in plain.items() if o == "passed")
        rows = []
        for spec in SETTINGS[pipeline]:
            wrapped = outcomes(args.diffusers, test_file, spec)
            lost = {t: wrapped.get(t, "not run") for t in passing if wrapped.get(t) != "passed"}
            rows.append(
                {"methods": spec, "passed": sum(o == "passed" for o in wrapped.values()), "lost": lost}
            )
            print(
                f"{pipeline:20s} {spec:70s} {rows[-1]['passed']:3d} / {len(passing)} of plain's passing",
                flush=True,
            )
        report[pipeline] = {"plain_passed": len(passing), "plain_failed": sorted(
            f"{t}: {o}" for t, o in plain.items() if o not in ("passed", "skipped")), "wrapped": rows}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
