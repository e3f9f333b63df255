"""MkDocs hook: the pages' measured tables, numbers and parameter tables are rendered at build time.

- ``<!-- table ... -->`` / ``<!-- value ... -->``: from a results file under ``docs/results/``
  (:mod:`ditaccel.result_tables`, the same renderer the README's tables go through).
- ``<!-- parameters NAME -->``: the parameters of method ``NAME`` with their types and defaults,
  read from its config dataclass, so the documented defaults are the code's.
- The notebooks live in ``notebooks/`` (the test suite executes them there); they are added to
  the site's files here, before mkdocs-jupyter renders them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

from ditaccel.result_tables import expand

ROOT = Path(__file__).resolve().parents[2]
PARAMETERS = re.compile(r"<!-- parameters (\S+) -->")


@event_priority(50)  # before mkdocs-jupyter (priority 0) wraps the notebooks
def on_files(files, config):
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(
            File(
                f"notebooks/{notebook.name}",
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.abs_src_path is None or page.file.src_uri.endswith(".ipynb"):
        return markdown
    folder = Path(page.file.abs_src_path).parent

    def link(name: str) -> str:
        return Path(os.path.relpath(ROOT / name, folder)).as_posix()

    markdown = expand(markdown, ROOT, link)
    return PARAMETERS.sub(lambda m: parameter_table(m.group(1)), markdown)


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " \\| ".join(f"`{choice}`" for choice in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(arg) for arg in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _default(value) -> str:
    """A default as a spec string writes it."""
    return "unset" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"


def parameter_table(name: str) -> str:
    """Name, type and default of each parameter of method ``name``'s config (spec-string keys)."""
    from ditaccel.methods.registry import method_class

    config = method_class(name).config_class
    hints = typing.get_type_hints(config)
    lines = ["| parameter | type | default |", "|---|---|---|"]
    for field in dataclasses.fields(config):
        if field.default is not dataclasses.MISSING:
            default = _default(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = _default(field.default_factory())
        else:
            default = "required"
        lines.append(f"| `{field.name}` | {_type_name(hints[field.name])} | {default} |")
    if len(lines) == 2:
        return f"`{name}` takes no parameters."
    return "\n".join(lines)
