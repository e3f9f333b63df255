"""Project contracts: CI runs exactly the README's commands; packages ship where DESIGN.md says;
the checkout's folders never shadow installed packages."""

import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import module_files

ROOT = Path(__file__).resolve().parents[1]


def _ci_commands() -> list[str]:
    """The lines of .ci/run between its README markers (other lines, such as the version print
    between the two commands, are CI's own)."""
    commands, inside = [], False
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        if line in ("# --- README commands ---", "# --- end ---"):
            inside = line != "# --- end ---"
        elif inside and line.strip():
            commands.append(line)
    return commands


def test_ci_runs_exactly_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    commands = _ci_commands()
    assert len(commands) == 2
    for command in commands:
        assert f"\n{command}\n" in readme


def test_kernels_and_pipelines_ship_inside_the_package():
    import ditaccel.kernels
    import ditaccel.pipelines

    assert ditaccel.kernels.__path__ == [str(ROOT / "kernels")]
    assert Path(ditaccel.kernels.attention.__file__).parent == ROOT / "kernels"
    assert Path(ditaccel.pipelines.__file__).parent == ROOT / "pipelines"


def _import_time_edges(name: str, path: Path, modules: set[str]) -> set[str]:
    """Modules of ours that importing ``name`` executes at once: module-level imports (not those
    inside functions or under ``TYPE_CHECKING``), with every parent package of each."""
    import ast

    tree = ast.parse(path.read_text())
    # ditaccel/kernels.py is a module that makes itself the package of the kernels/ folder
    is_package = path.name == "__init__.py" or name == "ditaccel.kernels"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(statements) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                visit([s for h in getattr(node, "handlers", []) for s in h.body])
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)

    visit(tree.body)
    edges = set()
    for target in targets:
        parts = target.split(".")
        edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in edges & modules if m != name}


def test_no_import_circle_in_the_package():
    files = module_files()
    graph = {name: _import_time_edges(name, path, set(files)) for name, path in files.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):  # a module's own parent packages are already importing
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


def test_methods_import_no_model_class():
    """Architecture knowledge lives in pipelines/: methods never name a diffusers model class."""
    import re

    for path in (ROOT / "ditaccel" / "methods").glob("*.py"):
        text = path.read_text()
        assert not re.search(
            r"\b(Flux|SD3|PixArt|QwenImage|Wan|DiT)\w*(Transformer|Model|Pipeline)\b", text
        ), path


def _python_in(cwd: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """``python -c code`` run in ``cwd``, which Python puts first on ``sys.path``."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True
    )


def test_the_checkout_root_shadows_no_installed_package():
    """From the repository root (``python -m``, ``python -c``, a notebook kernel), ``import kernels``
    is the hub package transformers imports, never the checkout's ``kernels/`` folder, and ditaccel
    imports (transformers imports the hub package under peft, which diffusers' hooks import)."""
    run = _python_in(
        ROOT,
        "import ditaccel, ditaccel.kernels, kernels\n"
        "print(getattr(kernels, '__file__', None))\n"
        "print(ditaccel.kernels.__path__[0])",
    )
    assert run.returncode == 0, run.stderr
    kernels_file, ditaccel_kernels = run.stdout.splitlines()
    if kernels_file != "None":  # the hub package is installed (transformers 5.25 requires it)
        assert ROOT not in Path(kernels_file).resolve().parents
    assert Path(ditaccel_kernels) == ROOT / "kernels"


def test_python_m_pytest_collects_from_the_root():
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "tests collected" in run.stdout.splitlines()[-1]


def test_a_built_wheel_ships_the_kernels(tmp_path):
    """A regular (non-editable) install: the wheel holds ``ditaccel/kernels/`` and
    ``ditaccel.kernels`` imports from it, with its public names."""
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path,
            ROOT,
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"no build backend in this environment: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("ditaccel-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    assert {"ditaccel/kernels.py", "ditaccel/kernels/attention.py", "ditaccel/kernels/block_mask.py"} <= names
    assert not any(name.startswith(("kernels/", "pipelines/")) for name in names)
    run = _python_in(
        tmp_path,
        "import ditaccel, ditaccel.kernels as k\n"
        "from ditaccel.kernels.block_mask import BlockMask\n"
        "print(ditaccel.__file__); print(k.__path__[0]); print(k.block_sparse_attention.__module__)",
        PYTHONPATH=str(site),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    init, folder, module = run.stdout.splitlines()
    assert Path(init) == site / "ditaccel" / "__init__.py"
    assert Path(folder) == site / "ditaccel" / "kernels"
    assert module == "ditaccel.kernels.attention"


def test_the_first_command_prints_no_warning(tmp_path):
    """The README's first command (its `ditaccel generate` part, run as written) prints its table and
    its result, and no warning a user cannot act on (transformers' torchvision fallback notes)."""
    install_and_run = _ci_commands()[0]
    generate = shlex.split(install_and_run.split("&& ", 1)[1])
    assert generate[0] == "ditaccel"
    script = Path(sys.executable).parent / "ditaccel"
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}  # as a user runs it
    run = subprocess.run([str(script), *generate[1:]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (run.stdout + run.stderr).splitlines()
    assert not [line for line in lines if "warn" in line.lower() or "torchvision" in line.lower()]
    assert run.stderr.strip() == ""
    assert "PSNR" in run.stdout and (tmp_path / "sample.png").is_file()
