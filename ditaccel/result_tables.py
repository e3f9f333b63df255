"""Markdown tables and numbers drawn from the measurement files in ``docs/results/``.

The docs site and the README never copy a measured number by hand. They hold *directives*, HTML
comments naming a results file (a path from the repository root, as written by a ``benchmarks/``
command) and what to show of it::

    <!-- table file=docs/results/caching_sweep.json columns="method speedup flops_ratio psnr_db" -->
    <!-- value file=docs/results/step_change.json key=curves.shapes-flux slice=7:21 agg=mean -->

In the site's pages a directive stands alone and the MkDocs hook (``docs/hooks/results.py``)
replaces it with what it renders at build time, so re-running a benchmark and rebuilding the site
is all a re-measurement takes. The README, which GitHub shows as it is, keeps each directive
followed by its rendered text and a closing ``<!-- /table -->`` (``<!-- /value -->``);
``python -m ditaccel.result_tables README.md`` rewrites what lies between, and ``--check`` fails
where it differs. Both go through :func:`render`, so the site and the README cannot show one file
differently.

``table`` arguments:

- ``file``: one or more results files (space-separated); their rows are concatenated.
- ``columns``: space-separated ``key`` or ``key:format`` (a Python format spec). A key is a dotted
  path into the row (``rss_mib.19``); ``@key`` reads the row's file instead (``@task``); ``file`` is
  a link to the row's file.
- ``headers``: column titles, ``|``-separated (default: the keys).
- ``rows``: dotted path to the rows in the file (default ``results``, else ``rows``); a mapping of
  rows becomes rows with its keys under ``name``.
- ``only``: space-separated method specs: those rows (matched on ``method``, else ``name``; the
  first file's where several hold one), in that order; a spec not found is an error.
- ``where``: ``key=value``: the rows whose value at ``key`` prints as ``value``.

``value`` arguments: ``file``, ``key`` (dotted path), ``row`` (a method spec: read ``key`` in that
row of ``results``), ``slice`` (``a:b`` of a list), ``agg`` (``mean``, ``min``, ``max``, ``sum``,
``count`` of a list), ``format``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import statistics
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

DIRECTIVE = re.compile(r"<!-- (table|value) (.*?) -->")
PAIRED = re.compile(r"(<!-- (table|value) (.*?) -->)(.*?)(<!-- /\2 -->)", re.DOTALL)

# default number formats by a column's last key, as the tables have always been printed
FORMATS = {
    "speedup": ".2f",
    "flops_ratio": ".3f",
    "psnr_db": ".2f",
    "region_psnr_db": ".2f",
    "preserve_psnr_db": ".1f",
    "ssim": ".3f",
    "shapes_acc": ".3f",
    "transformer_gflops": ".1f",
    "attention_gflops": ".1f",
    "wall_s": ".3f",
}
CODE_KEYS = {"method", "spec", "name", "pipeline"}  # values shown as code
AGGREGATES: dict[str, Callable[[list], float]] = {
    "mean": statistics.fmean,
    "min": min,
    "max": max,
    "sum": sum,
    "count": len,
}
Link = Callable[[str], str]


class DirectiveError(ValueError):
    """A directive that names a missing file, row or key, or has an unknown argument."""


@cache
def _load(path: Path, mtime: float) -> object:  # mtime in the key: a re-written file is re-read
    return json.loads(path.read_text())


def load(root: Path, name: str) -> object:
    path = root / name
    if not path.is_file():
        raise DirectiveError(f"results file {name} does not exist (under {root})")
    return _load(path, path.stat().st_mtime)


def lookup(obj: object, key: str) -> object:
    """The value at a dotted path: mapping keys, or list indices."""
    for part in key.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and re.fullmatch(r"-?\d+", part) and -len(obj) <= int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise DirectiveError(f"no {part!r} in {key!r}")
    return obj


def format_value(value: object, key: str = "", spec: str | None = None) -> str:
    """One cell: numbers in ``spec`` (or the key's usual format), missing as ``-``, names as code."""
    last = key.rsplit(".", 1)[-1]
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if spec is None:
            spec = FORMATS.get(last, "d" if isinstance(value, int) else ".4g")
        return format(value, spec)
    if isinstance(value, list):
        return ", ".join(format_value(v, key, spec) for v in value)
    text = str(value)
    return f"`{text}`" if last in CODE_KEYS else text


def _arguments(kind: str, text: str) -> dict[str, str]:
    allowed = {
        "table": {"file", "columns", "headers", "rows", "only", "where"},
        "value": {"file", "key", "row", "slice", "agg", "format"},
    }[kind]
    arguments = {}
    for item in shlex.split(text):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            raise DirectiveError(f"{kind} directive: unknown argument {item!r} (allowed: {sorted(allowed)})")
        arguments[key] = value
    missing = {"file", "columns"} - set(arguments) if kind == "table" else {"file", "key"} - set(arguments)
    if missing:
        raise DirectiveError(f"{kind} directive {text!r} lacks {', '.join(sorted(missing))}")
    return arguments


def _rows(data: object, path: str | None) -> list[dict]:
    if path is None:
        path = next((p for p in ("results", "rows") if isinstance(data, dict) and p in data), None)
    rows = data if path is None else lookup(data, path)
    if isinstance(rows, dict):
        rows = [{"name": name, **row} for name, row in rows.items()]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DirectiveError(f"{path or 'the file'} holds no list of rows")
    return rows


def _row_name(row: dict) -> object:
    return row.get("method", row.get("name"))


def render_table(arguments: dict[str, str], root: Path, link: Link) -> str:
    """A Markdown table of the rows of the ``file`` arguments (see the module's doc)."""
    rows: list[tuple[str, dict, dict]] = []  # (file, its data, row)
    for name in arguments["file"].split():
        data = load(root, name)
        rows.extend((name, data, row) for row in _rows(data, arguments.get("rows")))
    if "only" in arguments:
        by_name: dict[object, tuple[str, dict, dict]] = {}
        for item in rows:  # a method in several files: the first file's row
            by_name.setdefault(_row_name(item[2]), item)
        wanted = arguments["only"].split()
        unknown = [spec for spec in wanted if spec not in by_name]
        if unknown:
            raise DirectiveError(f"no row {', '.join(unknown)} in {arguments['file']}")
        rows = [by_name[spec] for spec in wanted]
    columns = [tuple(c.split(":", 1)) if ":" in c else (c, None) for c in arguments["columns"].split()]
    if "where" in arguments:
        key, _, expected = arguments["where"].partition("=")
        rows = [item for item in rows if format_value(_cell(item, key, link), key) == expected]
    headers = arguments["headers"].split("|") if "headers" in arguments else [key for key, _ in columns]
    if len(headers) != len(columns):
        raise DirectiveError(f"{len(headers)} headers for {len(columns)} columns")
    cells = [[_format_cell(item, key, spec, link) for key, spec in columns] for item in rows]
    numeric = [
        all(
            isinstance(_cell(item, key, link), (int, float)) or _cell(item, key, link) is None
            for item in rows
        )
        and key not in CODE_KEYS
        for key, _ in columns
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
        *("| " + " | ".join(row) + " |" for row in cells),
    ]
    return "\n".join(lines)


def _cell(item: tuple[str, dict, dict], key: str, link: Link) -> object:
    name, data, row = item
    if key == "file":
        return f"[`{Path(name).name}`]({link(name)})"
    if key.startswith("@"):
        return lookup(data, key[1:])
    return lookup(row, key)


def _format_cell(item: tuple[str, dict, dict], key: str, spec: str | None, link: Link) -> str:
    value = _cell(item, key, link)
    return value if key == "file" else format_value(value, key, spec)


def render_value(arguments: dict[str, str], root: Path) -> str:
    """One number (or text) of a results file (see the module's doc)."""
    data = load(root, arguments["file"])
    if "row" in arguments:
        matches = [row for row in _rows(data, None) if _row_name(row) == arguments["row"]]
        if not matches:
            raise DirectiveError(f"no row {arguments['row']} in {arguments['file']}")
        data = matches[0]
    value = lookup(data, arguments["key"])
    if "slice" in arguments:
        start, _, stop = arguments["slice"].partition(":")
        value = value[int(start) if start else None : int(stop) if stop else None]
    if "agg" in arguments:
        if arguments["agg"] not in AGGREGATES:
            raise DirectiveError(f"unknown agg {arguments['agg']!r}; one of {sorted(AGGREGATES)}")
        value = AGGREGATES[arguments["agg"]](value)
    return format_value(value, arguments["key"], arguments.get("format"))


def render(kind: str, text: str, root: Path, link: Link = lambda name: name) -> str:
    """What the directive ``<!-- {kind} {text} -->`` shows: a table or a value. ``root`` is the
    repository root the files are named from; ``link`` turns such a name into a link target."""
    arguments = _arguments(kind, text)
    if kind == "table":
        return render_table(arguments, root, link)
    return render_value(arguments, root)


def expand(markdown: str, root: Path, link: Link = lambda name: name) -> str:
    """A page with each standalone directive replaced by what it renders (the MkDocs hook)."""
    return DIRECTIVE.sub(lambda m: render(m.group(1), m.group(2), root, link), markdown)


def fill(markdown: str, root: Path, link: Link = lambda name: name) -> str:
    """A README with what lies between each directive and its closing marker re-rendered."""

    def replace(m: re.Match) -> str:
        body = render(m.group(2), m.group(3), root, link)
        if m.group(2) == "table":
            body = f"\n\n{body}\n\n"
        return m.group(1) + body + m.group(5)

    return PAIRED.sub(replace, markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Re-render the results tables and values between the directives of Markdown files."
    )
    parser.add_argument("files", nargs="+", type=Path, help="Markdown files (README.md)")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root the files name")
    parser.add_argument("--check", action="store_true", help="write nothing; fail where a file differs")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text = path.read_text()
        new = fill(text, args.root)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    for path in stale:
        verb = "differs from its results files" if args.check else "re-rendered"
        print(f"{path}: {verb}", file=sys.stderr if args.check else sys.stdout)
    if args.check and stale:
        print("run: python -m ditaccel.result_tables " + " ".join(map(str, args.files)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
