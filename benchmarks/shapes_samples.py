"""Sample sheet of shapes-flux: the default prompts (with the checker's verdict) and edits.

Writes one PNG: a row of text-to-image samples for the first bench prompts, then rows of
edit cases (source | output). Usage: python benchmarks/shapes_samples.py --out docs/results/shapes_flux_samples.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from ditaccel import AcceleratedPipeline, GenerationRequest  # noqa: E402
from ditaccel import models as embedded  # noqa: E402
from ditaccel.media import output_images, to_pil  # noqa: E402

BORDER = 4  # px frame: green = checker says correct, red = not


def _framed(image: Image.Image, ok: bool | None) -> Image.Image:
    if ok is None:
        return image
    framed = image.copy()
    ImageDraw.Draw(framed).rectangle(
        [0, 0, image.width - 1, image.height - 1], outline="green" if ok else "red", width=BORDER
    )
    return framed


def _run(task: str, count: int, steps: int) -> list[tuple[Image.Image | None, Image.Image, bool]]:
    entry = embedded.get("shapes-flux")
    pipe = AcceleratedPipeline.from_pretrained("shapes-flux", pipeline_class=entry.pipeline_for(task))
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for case in entry.cases[task]()[:count]:
        request = GenerationRequest(prompt=case.prompt, image=case.image, seed=case.seed, steps=steps,
                                    height=entry.height, width=entry.width, output_type="np",
                                    extra=dict(entry.call_defaults))  # fmt: skip
        image = output_images(pipe(**pipe.adapter.build_call(request)))[0]
        rows.append((case.image, to_pil(image)[0], entry.scorer(image, case)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/shapes_flux_samples.png"))
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--steps", type=int, default=28)
    args = parser.parse_args()
    t2i = _run("t2i", args.count, args.steps)
    edits = _run("edit", args.count, args.steps)
    side = t2i[0][1].width
    sheet = Image.new("RGB", (args.count * side, 3 * side), "white")
    for i, (_, image, ok) in enumerate(t2i):
        sheet.paste(_framed(image, ok), (i * side, 0))
    for i, (source, image, ok) in enumerate(edits):
        sheet.paste(source, (i * side, side))
        sheet.paste(_framed(image, ok), (i * side, 2 * side))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(
        f"t2i correct {np.mean([ok for *_, ok in t2i]):.2f}, edits correct {np.mean([ok for *_, ok in edits]):.2f}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
