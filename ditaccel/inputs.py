"""A user's own inputs: prompt files and edit cases, for ``calibrate``, ``bench`` and ``tune`` alike.

The embedded models carry their own inputs; a user's model does not, and an editing pipeline
(FLUX.1 Kontext, Qwen-Image-Edit, Fill) cannot be calibrated, benched or tuned on prompts alone:
it needs source images. So the three commands take the same ``--cases PATH``:

- text-to-image: a text file with one prompt per line, or a JSONL file of ``{"prompt": ...}``
  objects (optional ``seed``);
- editing: a JSONL file, one case per line::

      {"image": "src/cat.png", "instruction": "make the cat blue", "mask": "src/cat_mask.png", "seed": 3}

  (``prompt`` is accepted for ``instruction``; ``mask``, white = the region meant to change, and
  ``seed`` are optional; relative paths are relative to the JSONL file), or a folder holding
  ``cases.jsonl``, or a folder of images each beside a ``<stem>.txt`` with its instruction and an
  optional ``<stem>.mask.png``.

Every case is checked before anything loads, and a malformed one fails with its file, line and
what is wrong. Cases without a seed take their position in the file, so a re-run draws the same
noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .models import Case

CASES_FILE = "cases.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_EDIT_KEYS = {"image", "instruction", "prompt", "mask", "seed"}
_T2I_KEYS = {"prompt", "seed"}


class CaseError(ValueError):
    """A malformed input case: says which file, which line and what is wrong."""


def load_cases(path: str | Path, task: str) -> list[Case]:
    """The inputs in ``path`` for ``task`` (``t2i``/``video``: prompts; ``edit``: edit cases)."""
    path = Path(path)
    if not path.exists():
        raise CaseError(f"{path}: no such file or folder")
    if task == "edit":
        return load_edit_cases(path)
    if task not in ("t2i", "video"):
        raise CaseError(f"user inputs are prompts (t2i, video) or edit cases (edit), not for task {task!r}")
    return load_prompts(path)


def load_prompts(path: str | Path) -> list[Case]:
    """Prompts from a text file (one per line, blank lines skipped) or a JSONL file of
    ``{"prompt": ..., "seed": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"{path}: a prompt file is needed (one prompt per line, or JSONL)")
    if path.suffix == ".jsonl":
        cases = [_t2i_case(record, where, i) for i, (record, where) in enumerate(_jsonl(path))]
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        cases = [Case(line, seed=i) for i, line in enumerate(lines)]
    if not cases:
        raise CaseError(f"{path} holds no prompts")
    return cases


def load_edit_cases(path: str | Path) -> list[Case]:
    """Edit cases from a JSONL file, a folder holding ``cases.jsonl``, or a folder of images with
    ``<stem>.txt`` instructions (and optional ``<stem>.mask.png`` masks)."""
    path = Path(path)
    if path.is_dir() and (path / CASES_FILE).is_file():
        path = path / CASES_FILE
    if path.is_file():
        if path.suffix != ".jsonl":
            raise CaseError(f"{path}: edit cases are a JSONL file (one JSON object per line) or a folder")
        cases = [_edit_case(record, where, path.parent, i) for i, (record, where) in enumerate(_jsonl(path))]
    else:
        cases = _folder_cases(path)
    if not cases:
        raise CaseError(f"{path} holds no edit cases")
    return cases


def _jsonl(path: Path) -> list[tuple[dict[str, Any], str]]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaseError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise CaseError(f"{where}: each line must be a JSON object, got {type(record).__name__}")
        records.append((record, where))
    return records


def _seed(record: dict[str, Any], where: str, default: int) -> int:
    seed = record.get("seed", default)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CaseError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    return seed


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CaseError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _t2i_case(record: dict[str, Any], where: str, index: int) -> Case:
    unknown = set(record) - _T2I_KEYS
    if unknown:
        raise CaseError(f"{where}: unknown key(s) {sorted(unknown)}; a prompt case has {sorted(_T2I_KEYS)}")
    if "prompt" not in record:
        raise CaseError(f"{where}: no 'prompt'")
    return Case(_text(record["prompt"], where, "prompt"), seed=_seed(record, where, index))


def _edit_case(record: dict[str, Any], where: str, folder: Path, index: int) -> Case:
    unknown = set(record) - _EDIT_KEYS
    if unknown:
        raise CaseError(f"{where}: unknown key(s) {sorted(unknown)}; an edit case has {sorted(_EDIT_KEYS)}")
    if "instruction" in record and "prompt" in record:
        raise CaseError(f"{where}: give 'instruction' or 'prompt', not both")
    text = record.get("instruction", record.get("prompt"))
    if text is None:
        raise CaseError(f"{where}: no 'instruction' (the edit to make)")
    if "image" not in record:
        raise CaseError(f"{where}: no 'image' (the source image to edit)")
    image = _image(folder / _text(record["image"], where, "image"), where, "RGB")
    mask = None
    if record.get("mask") is not None:
        mask = _mask(folder / _text(record["mask"], where, "mask"), image, where)
    return Case(_text(text, where, "instruction"), seed=_seed(record, where, index), image=image, mask=mask)


def _folder_cases(folder: Path) -> list[Case]:
    if not folder.is_dir():
        raise CaseError(f"{folder}: edit cases are a JSONL file or a folder")
    sources = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(".mask")
    )
    cases = []
    for index, source in enumerate(sources):
        where = str(source)
        note = source.with_suffix(".txt")
        if not note.is_file():
            raise CaseError(f"{where}: no instruction beside it ({note.name}, one line: the edit to make)")
        image = _image(source, where, "RGB")
        masks = [
            m for m in (source.with_name(f"{source.stem}.mask{s}") for s in IMAGE_SUFFIXES) if m.is_file()
        ]
        mask = _mask(masks[0], image, where) if masks else None
        cases.append(
            Case(_text(note.read_text(), str(note), "instruction"), seed=index, image=image, mask=mask)
        )
    return cases


def _image(path: Path, where: str, mode: str) -> Image.Image:
    if not path.is_file():
        raise CaseError(f"{where}: image {path} does not exist")
    try:
        with Image.open(path) as opened:
            return opened.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise CaseError(f"{where}: {path} is not a readable image ({exc})") from None


def _mask(path: Path, image: Image.Image, where: str) -> Image.Image:
    mask = _image(path, where, "L")
    if mask.size != image.size:
        raise CaseError(f"{where}: mask {path.name} is {mask.size[0]}x{mask.size[1]}, the image {image.size[0]}x{image.size[1]}")  # fmt: skip
    edited = np.asarray(mask) >= 128
    if not edited.any() or edited.all():
        raise CaseError(
            f"{where}: mask {path.name} is {'empty' if not edited.any() else 'full'}: white marks the region "
            "meant to change, black what must stay"
        )
    return mask
