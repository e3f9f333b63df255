"""Griffe extension: ``ditaccel.pipelines`` is shipped from the top-level ``pipelines/`` folder
(setuptools ``package-dir``), which griffe's static walk of ``ditaccel/`` cannot see; this adds
its modules under ``ditaccel`` so the API reference documents them by their installed names.
(``ditaccel.kernels`` needs nothing: ``ditaccel/kernels.py`` is found and re-exports the kernels.)"""

from __future__ import annotations

from pathlib import Path

import griffe

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"pipelines": ROOT / "pipelines", "kernels": ROOT / "kernels"}


def _visit(name: str, path: Path, parent: griffe.Module) -> griffe.Module:
    module = griffe.visit(name, path, path.read_text(), parent=parent)
    parent.set_member(name, module)
    return module


class ShippedFolders(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != "ditaccel":
            return
        for name, folder in FOLDERS.items():
            if name in pkg.members and name != "pipelines":
                parent = pkg.members[name]  # ditaccel/kernels.py: its modules become its members
            else:
                parent = _visit(name, folder / "__init__.py", pkg)
            for path in sorted(folder.glob("*.py")):
                if path.name != "__init__.py":
                    _visit(path.stem, path, parent)
