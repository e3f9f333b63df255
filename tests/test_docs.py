"""The documentation: the site builds offline with ``mkdocs build --strict`` (a broken link, a
missing page or a directive naming a missing file / row / key fails), every method, CLI command
and public class has its page or reference entry, and the README's tables and every page's
numbers are those of the results files."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import module_files

from ditaccel.result_tables import DirectiveError, expand, fill, render

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs", reason="the docs extra is not installed")


def _build(site: Path, root: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    run = _build(site)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "WARNING" not in run.stderr, run.stderr[-4000:]
    return site


def _text(page: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))


def test_every_method_has_its_page(site):
    from ditaccel.methods import available_methods
    from ditaccel.methods.registry import method_class

    pages = {p.parent.name for p in (site / "methods").glob("*/index.html")}
    # ditaccel's own methods (tests register methods of their own in the same process)
    shipped = [name for name in available_methods() if method_class(name).__module__.startswith("ditaccel.")]
    for name in shipped:
        if name.startswith("peer-"):
            assert name in _text(site / "methods" / "peers" / "index.html"), name
        elif name != "none":
            assert name in pages, name
            # its parameter table was rendered from the config dataclass
            html = (site / "methods" / name / "index.html").read_text()
            for parameter in method_class(name).config_class.parameters():
                assert f"<code>{parameter}</code>" in html, (name, parameter)


def test_every_cli_command_is_in_the_reference(site):
    import typer

    from ditaccel.cli import app

    text = _text(site / "cli" / "index.html")
    commands = typer.main.get_command(app).commands
    assert {"models", "generate", "calibrate", "bench"} <= set(commands)
    for name, command in commands.items():
        assert f"ditaccel {name}" in text, name
        for param in command.params:
            for option in param.opts:
                assert option in text, (name, option)


def _public_classes() -> dict[str, list[str]]:
    found = {}
    for name, path in module_files().items():
        tree = ast.parse(path.read_text())
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")]
        if classes:
            found[name] = classes
    return found


def test_every_public_class_has_a_reference_entry(site):
    text = (ROOT / "docs" / "api.md").read_text()
    html = (site / "api" / "index.html").read_text()
    for module, classes in _public_classes().items():
        assert f"::: {module}\n" in text, module
        for name in classes:
            assert f'id="{module}.{name}"' in html, f"{module}.{name}"


def test_both_notebooks_render(site):
    for name in ("image_editing", "quickstart"):
        page = site / "notebooks" / name / "index.html"
        assert page.is_file(), name
        assert "jp-Notebook" in page.read_text() or "jupyter-wrapper" in page.read_text(), name


def test_readme_tables_match_their_results_files():
    """The README generator in check mode: a README table that differs from its file fails."""
    run = subprocess.run(
        [sys.executable, "-m", "ditaccel.result_tables", "README.md", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- table ") >= 2 and len(readme.splitlines()) <= 300


def test_check_mode_fails_on_a_stale_table(tmp_path):
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    rows = [{"method": "none", "speedup": 1.0}, {"method": "deepcache", "speedup": 1.7}]
    (results / "r.json").write_text(json.dumps({"results": rows}))
    stale = '<!-- table file=docs/results/r.json columns="method speedup" -->\n| old |\n<!-- /table -->\n'
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    args = [sys.executable, "-m", "ditaccel.result_tables", "README.md", "--check"]
    assert subprocess.run(args, cwd=tmp_path, capture_output=True).returncode == 1
    assert readme.read_text() == stale  # check mode writes nothing
    assert subprocess.run(args[:-1], cwd=tmp_path, capture_output=True).returncode == 0
    assert "| `deepcache` | 1.70 |" in readme.read_text()
    assert subprocess.run(args, cwd=tmp_path, capture_output=True).returncode == 0


def test_page_and_readme_render_a_file_alike(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"results": [{"method": "a", "psnr_db": float("inf")}]}))
    directive = 'table file=r.json columns="method psnr_db"'
    table = render("table", directive.removeprefix("table "), tmp_path)
    assert expand(f"<!-- {directive} -->", tmp_path) == table
    assert (
        fill(f"<!-- {directive} --><!-- /table -->", tmp_path)
        == f"<!-- {directive} -->\n\n{table}\n\n<!-- /table -->"
    )
    assert "| `a` | inf |" in table


@pytest.mark.parametrize(
    "directive",
    [
        'table file=missing.json columns="method"',
        'table file=r.json columns="method nope"',
        'table file=r.json columns="method" only="b"',
        'table file=r.json columns="method" colour=red',
        "value file=r.json key=results.5.method",
    ],
)
def test_a_directive_naming_what_is_not_there_fails(tmp_path, directive):
    (tmp_path / "r.json").write_text(json.dumps({"results": [{"method": "a"}]}))
    kind, _, text = directive.partition(" ")
    with pytest.raises(DirectiveError):
        render(kind, text, tmp_path)


def test_a_re_measurement_changes_the_page_with_no_hand_edit(tmp_path):
    """A results file re-written (as re-running its benchmark does) changes what the hook renders
    for the page that shows it, the page source untouched."""
    shutil.copytree(ROOT / "docs" / "results", tmp_path / "docs" / "results")
    page = (ROOT / "docs" / "methods" / "calibrated-cache.md").read_text()
    before = expand(page, tmp_path)
    plan = tmp_path / "docs" / "results" / "caches_v2" / "plan_ratios.json"
    data = json.loads(plan.read_text())
    data["rows"][0]["flops_ratio"] = 0.777
    data["largest_off_by"] = 0.0456
    plan.write_text(json.dumps(data))
    after = expand(page, tmp_path)
    assert "0.777" in after and "0.777" not in before
    assert "within 0.0456 at every step" in after
