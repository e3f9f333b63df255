"""Project contracts: CI runs exactly the README's commands; packages ship where DESIGN.md says."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    start, end = lines.index("# --- README commands ---"), lines.index("# --- end ---")
    return [line for line in lines[start + 1 : end] if line.strip()]


def test_ci_runs_exactly_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    commands = _ci_commands()
    assert len(commands) == 2
    for command in commands:
        assert f"\n{command}\n" in readme


def test_kernels_and_pipelines_ship_inside_the_package():
    import ditaccel.kernels
    import ditaccel.pipelines

    assert Path(ditaccel.kernels.__file__).parent == ROOT / "kernels"
    assert Path(ditaccel.pipelines.__file__).parent == ROOT / "pipelines"
