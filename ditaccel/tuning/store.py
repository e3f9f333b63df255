"""The tune's output folder: what was measured, kept per candidate, so a re-run skips it.

A tune of a large model on a GPU takes long and may be stopped (a budget, a crash, a laptop lid).
Every candidate measured on a rung is written at once to ``measurements/n<inputs>/<name>.json``
(its bench row plus the per-input times and intervals), the plain pipeline's images of that rung to
``plain.npz`` beside them (PSNR of later candidates is measured against them), and ``tune.json``
records the settings the measurements belong to. A re-run with the same settings reads them back
and measures only what is missing; other settings (model, task, inputs, steps, size, device,
dtype) are refused, as their numbers would not compare. Only JSON and ``.npz`` arrays are written
and read (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..models import Case

MANIFEST = "tune.json"
VERSION = 1


def input_fingerprint(case: Case) -> str:
    """A short hash of one input: its prompt, seed, source image and mask."""
    digest = hashlib.sha256(f"{case.prompt}\0{case.seed}".encode())
    for image in (case.image, case.mask):
        if image is not None:
            digest.update(f"{image.mode}{image.size}".encode())
            digest.update(np.asarray(image).tobytes())
    return digest.hexdigest()[:16]


def spec_name(spec: str) -> str:
    """A file name for a spec: readable, and unique by a hash of the whole spec."""
    readable = re.sub(r"[^A-Za-z0-9.=,-]+", "_", spec)[:80]
    return f"{readable}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}"


class TuneStore:
    """Measurements of one tune, in folder ``root``."""

    def __init__(self, root: str | Path, settings: dict[str, Any]) -> None:
        self.root = Path(root)
        self.settings = settings
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / MANIFEST
        if manifest.is_file():
            stored = json.loads(manifest.read_text())
            differing = sorted(
                key for key in set(settings) | set(stored.get("settings", {}))
                if stored.get("settings", {}).get(key) != settings.get(key)
            )  # fmt: skip
            if stored.get("version") != VERSION or differing:
                raise ValueError(
                    f"{self.root} holds a tune of other settings (differing: {', '.join(differing) or 'version'}); "
                    "its measurements would not compare: pass another --out, or delete it to start afresh"
                )
            self.elapsed_s = float(stored.get("elapsed_s", 0.0))
        else:
            self.elapsed_s = 0.0
            self._write_manifest()

    def _write_manifest(self) -> None:
        payload = {"version": VERSION, "settings": self.settings, "elapsed_s": self.elapsed_s}
        (self.root / MANIFEST).write_text(json.dumps(payload, indent=2))

    def add_elapsed(self, seconds: float) -> None:
        """Add this run's time to the tune's total."""
        self.elapsed_s += seconds
        self._write_manifest()

    def _rung(self, inputs: int) -> Path:
        folder = self.root / "measurements" / f"n{inputs}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def get(self, inputs: int, spec: str) -> dict[str, Any] | None:
        """The stored record of ``spec`` on ``inputs`` inputs, or None."""
        path = self._rung(inputs) / f"{spec_name(spec)}.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record if record.get("method") == spec else None

    def put(self, inputs: int, spec: str, record: dict[str, Any]) -> None:
        path = self._rung(inputs) / f"{spec_name(spec)}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**record, "method": spec}, indent=1))
        tmp.replace(path)  # a record is there whole or not at all

    def measured(self, inputs: int) -> list[dict[str, Any]]:
        """Every record stored for ``inputs`` inputs."""
        return [json.loads(p.read_text()) for p in sorted(self._rung(inputs).glob("*.json"))]

    def get_plain(self, inputs: int) -> tuple[list[np.ndarray], list[tuple[int, int]]] | None:
        """The plain pipeline's images and counted FLOPs on ``inputs`` inputs, or None."""
        path = self._rung(inputs) / "plain.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            images = [data[f"image{i}"] for i in range(inputs)]
            flops = [tuple(int(v) for v in row) for row in data["flops"]]
        return images, flops

    def put_plain(self, inputs: int, images: list[Any], flops: list[tuple[int, int]]) -> None:
        path = self._rung(inputs) / "plain.npz"
        arrays = {f"image{i}": np.asarray(image) for i, image in enumerate(images)}
        tmp = path.with_name("plain.tmp.npz")
        np.savez(tmp, flops=np.asarray(flops, dtype=np.int64), **arrays)
        tmp.replace(path)
