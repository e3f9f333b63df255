"""How well the shapes world survives shapes-flux's VAE: encode, decode, check.

For each background kind, renders scenes at 128 px (or ``--size``), passes them through the shipped
VAE (posterior mode, as the pipelines encode a reference image) and reports the share the checker
still accepts, the share whose background it still names right, and the PSNR of the round trip.
The denoiser can draw no better than this, so a background the round trip loses is one no training
can teach.

    python benchmarks/vae_round_trip.py --json docs/results/vae_round_trip.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from diffusers import AutoencoderKL

from ditaccel import models, shapes
from ditaccel.metrics.image import psnr


def round_trip(vae: AutoencoderKL, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        y = vae.decode(z).sample
    return ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=32, help="scenes per background kind")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    vae = AutoencoderKL.from_pretrained(models.path("shapes-flux") / "vae", local_files_only=True).eval()
    rng = np.random.default_rng(args.seed)
    rows = []
    for background in shapes.BACKGROUNDS:
        scenes = []
        while len(scenes) < args.scenes:
            scene = shapes.sample_scene(rng)
            scenes.append(shapes.Scene(scene.shapes, background))
        images = np.stack([shapes.render(scene, args.size) for scene in scenes])
        decoded = round_trip(vae, images)
        checks = [shapes.check_scene(image, scene) for image, scene in zip(decoded, scenes, strict=True)]
        rows.append(
            {
                "background": background,
                "scenes": len(scenes),
                "correct": float(np.mean([c.correct for c in checks])),
                "background_ok": float(np.mean([c.background_ok for c in checks])),
                "psnr_db": float(psnr(images / 255.0, decoded / 255.0)),
            }
        )
        print(json.dumps(rows[-1]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "vae": "shapes-flux (shipped)", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
