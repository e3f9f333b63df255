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


def _module_files() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (kernels / pipelines mapped in)."""
    roots = {
        "ditaccel": ROOT / "ditaccel",
        "ditaccel.kernels": ROOT / "kernels",
        "ditaccel.pipelines": ROOT / "pipelines",
    }
    files = {}
    for package, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            files[name.removesuffix(".__init__")] = path
    return files


def _import_time_edges(name: str, path: Path, modules: set[str]) -> set[str]:
    """Modules of ours that importing ``name`` executes at once: module-level imports (not those
    inside functions or under ``TYPE_CHECKING``), with every parent package of each."""
    import ast

    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
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
    files = _module_files()
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
