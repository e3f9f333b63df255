"""Train ``shapes-flux`` from scratch on the shapes world, on CPU, reproducibly from a seed.

Three stages, each with a progress bar:

1. the VAE, on renders (random crops), L1 reconstruction plus a small KL term; its latent
   statistics then set ``shift_factor`` / ``scaling_factor``;
2. a dataset of scenes and edit pairs at 128 and 64 pixels, encoded once to latents (posterior
   mode, as FluxKontextPipeline encodes its reference image);
3. the transformer and both text encoders jointly, rectified flow (velocity = noise - data,
   logit-normal timesteps), text-to-image and Kontext-style editing (reference tokens appended
   after the generated ones with position-id flag 1), captions dropped 10% of the time so true
   CFG works; an exponential moving average of the weights is what gets saved.

Run 2 of the plain recipe learned an unconditional prior of shapes and ignored the caption's
content (same seed, different captions: nearly the same image). What the caption decides
(which objects, where, which colour) is a few percent of the tokens and is settled at high noise,
while the loss was dominated by unpredictable background textures at middle noise. So stage 3
weights the tokens an object (or an edit) covers more, draws timesteps biased to high noise, and
starts on a curriculum of single-shape and plain-background scenes that anneals to the world's
own mix.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m ditaccel.models.train_shapes_flux [--out DIR]`` (about
80 minutes on 2 cores; passive OpenMP waiting keeps 2 threads from collapsing to a crawl when
another process holds a core). CI never trains; a test runs a few steps of every stage
(``--smoke``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FluxKontextPipeline, FluxPipeline
from PIL import Image
from tqdm import tqdm

from .. import shapes
from . import shapes_flux as arch


@dataclass
class TrainConfig:
    """Every knob of a training run; the run is a function of this and nothing else."""

    seed: int = 0
    out: Path = arch.FOLDER
    init: Path | None = None  # continue from a saved pipeline (its VAE is kept, stage 1 skipped)
    # take the VAE of a saved pipeline and skip stage 1 (stage 1 is deterministic: a run from
    # scratch with the same seed trains the same VAE); stages 2-3 start fresh as from scratch
    vae_from: Path | None = None
    checkpoints: Path | None = None  # save the EMA pipeline here at every evaluation
    threads: int = 2
    budget_min: float = 78.0  # safety stop for the whole run; the step count is what should fit
    # stage 1: VAE
    # Measured round trips (share of renders the checker still accepts): 4 latent channels with L1
    # reached 13-28% in 600-1500 steps (grey objects, colour specks); 8 channels with the chroma
    # and MSE terms reached 98% in 1000 steps (PSNR 29 dB, 8 minutes)
    vae_steps: int = 1000
    vae_batch: int = 8
    vae_crop: int = 64
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    # Objects cover a few percent of the pixels and are the only coloured ones: with plain L1 the
    # VAE learns grey first and returns grey objects. An L1 term on chroma (pixel minus its grey),
    # weighted like this, plus MSE (large colour errors cost quadratically) make colour come early.
    vae_chroma: float = 4.0
    vae_pool: int = 1500  # renders the VAE trains on
    # stage 2: dataset sizes per bucket
    buckets: dict[str, int] = field(
        default_factory=lambda: {"t2i-128": 6000, "t2i-64": 3000, "edit-128": 3000, "edit-64": 2000}
    )
    # stage 3: transformer + text encoders
    steps: int = 4500  # length of the learning-rate schedule
    stop_after: int | None = None  # end early at this step (reproduces a run the budget stopped)
    batch: int = 8
    lr: float = 5e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    ema: float = 0.998
    caption_dropout: float = 0.1
    bucket_weights: dict[str, float] = field(
        default_factory=lambda: {"t2i-128": 0.55, "t2i-64": 0.1, "edit-128": 0.25, "edit-64": 0.1}
    )
    # Tokens an object covers (for edits: also the changed region) weigh 1 + this in the loss.
    object_weight: float = 8.0
    # Logit-normal timesteps: sigmoid(mean + std * N(0, 1)); mean > 0 favours high noise, where
    # layout, kind and colour are decided.
    t_mean: float = 0.5
    t_std: float = 1.0
    # Curriculum: an item's sampling weight is (1 + easy_boost * r) ** easiness, easiness = (one
    # shape) + (plain background), r falling linearly from 1 to 0 over this share of the steps.
    curriculum: float = 0.4
    easy_boost: float = 3.0
    log_every: int = 50
    # progress check: the checker's verdict on held-out scenes / edits (not the bench sets)
    eval_every: int = 750
    eval_cases: int = 8
    eval_steps: int = 20

    @classmethod
    def smoke(cls, out: Path) -> TrainConfig:
        """A few steps of every stage, for tests."""
        return cls(
            out=out, threads=1, vae_steps=2, vae_batch=2, vae_pool=4, steps=3, batch=2, warmup=1, log_every=1,
            eval_every=3, eval_cases=1, eval_steps=2, buckets={"t2i-128": 4, "t2i-64": 2, "edit-128": 2, "edit-64": 2},
        )  # fmt: skip


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 renders -> float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _chroma(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's deviation from its grey (channel mean): zero on every background."""
    return x - x.mean(dim=1, keepdim=True)


# --- stage 1 --------------------------------------------------------------------------------------
def train_vae(pipe: FluxPipeline, cfg: TrainConfig, rng: np.random.Generator, log: dict) -> None:
    vae = pipe.vae.train()
    pool = [
        shapes.render(shapes.sample_scene(rng), size=int(rng.choice([64, 128]))) for _ in range(cfg.vae_pool)
    ]
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in tqdm(range(cfg.vae_steps), desc="vae", mininterval=10):
        crops = []
        for i in rng.integers(0, len(pool), size=cfg.vae_batch):
            img = pool[i]
            y, x = (rng.integers(0, img.shape[k] - cfg.vae_crop + 1) for k in (0, 1))
            crops.append(img[y : y + cfg.vae_crop, x : x + cfg.vae_crop])
        x = _to_tensor(crops)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(gen)).sample
        loss = (recon - x).abs().mean() + cfg.vae_kl * posterior.kl().mean()
        loss = loss + cfg.vae_chroma * (_chroma(recon) - _chroma(x)).abs().mean() + F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # cosine decay
            group["lr"] = cfg.vae_lr * (
                0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step + 1) / cfg.vae_steps))
            )
        losses.append(loss.item())
    vae.eval()
    with torch.no_grad():  # latent statistics on same-size crops
        sample = [img[: cfg.vae_crop, : cfg.vae_crop] for img in pool[:256]]
        z = vae.encode(_to_tensor(sample)).latent_dist.mode()
    shift, scale = float(z.mean()), 1.0 / float(z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    log["vae"] = {
        "final_loss": float(np.mean(losses[-50:])),
        "shift_factor": shift,
        "scaling_factor": scale,
        "round_trip_correct": round_trip_accuracy(vae, cfg),
    }
    tqdm.write(f"vae: {log['vae']}")


def round_trip_accuracy(vae, cfg: TrainConfig) -> float:
    """Share of held-out 128 px renders the checker still judges correct after encode + decode:
    the ceiling the VAE puts on the whole pipeline's accuracy."""
    rng = np.random.default_rng(cfg.seed + 104729)
    scenes = [shapes.sample_scene(rng) for _ in range(cfg.eval_cases * 4)]
    right = 0
    with torch.no_grad():
        for scene in scenes:
            x = _to_tensor([shapes.render(scene, arch.IMAGE_SIZE)])
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample[0]
            image = ((y.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
            right += shapes.check_scene(image, scene).correct
    return right / len(scenes)


# --- stage 2 --------------------------------------------------------------------------------------
@dataclass
class Bucket:
    """Pre-encoded training items of one task and size."""

    edit: bool
    latents: torch.Tensor  # (N, C, h, w), normalised
    references: torch.Tensor | None  # edit source latents
    clip_ids: torch.Tensor  # (N, 77)
    t5_ids: torch.Tensor  # (N, 32)
    focus: torch.Tensor  # (N, tokens): share of each packed token covered by objects / the edit
    easiness: torch.Tensor  # (N,): (one shape) + (plain background) of the (source) scene


def _token_share(mask: np.ndarray, size: int) -> np.ndarray:
    """Per packed token (8x8 pixels: 4x VAE, 2x2 packing), the share of ``mask`` it covers, in
    FluxPipeline's token order (row-major)."""
    px, grid = arch.PIXELS_PER_TOKEN, size // arch.PIXELS_PER_TOKEN
    return mask.astype(np.float32).reshape(grid, px, grid, px).mean(axis=(1, 3)).reshape(-1)


def _scene_focus(scene, size: int) -> np.ndarray:
    covered = sum(shapes.shape_coverage(shape, size) for shape in scene.shapes)
    return np.minimum(covered, 1.0)


def _easiness(scene) -> int:
    return int(len(scene.shapes) == 1) + int(scene.background == "plain")


def _encode(pipe: FluxPipeline, images: list[np.ndarray]) -> torch.Tensor:
    vae = pipe.vae
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 32):
            z = vae.encode(_to_tensor(images[i : i + 32])).latent_dist.mode()
            out.append((z - vae.config.shift_factor) * vae.config.scaling_factor)
    return torch.cat(out)


def tokenize(pipe: FluxPipeline, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids exactly as FluxPipeline makes them (CLIP padded to 77, T5 to 32)."""
    clip = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids  # fmt: skip
    t5 = pipe.tokenizer_2(texts, padding="max_length", max_length=arch.TEXT_TOKENS,
                          truncation=True, return_tensors="pt").input_ids  # fmt: skip
    return clip, t5


def build_buckets(pipe: FluxPipeline, cfg: TrainConfig, rng: np.random.Generator) -> dict[str, Bucket]:
    buckets = {}
    for name, count in tqdm(cfg.buckets.items(), desc="dataset", mininterval=10):
        task, size = name.split("-")
        size = int(size)
        if task == "t2i":
            scenes = [shapes.sample_scene(rng) for _ in range(count)]
            latents = _encode(pipe, [shapes.render(s, size) for s in scenes])
            texts, references = [s.caption() for s in scenes], None
            masks = [_scene_focus(s, size) for s in scenes]
        else:
            pairs = [shapes.sample_edit(rng) for _ in range(count)]
            latents = _encode(pipe, [shapes.render(p.target, size) for p in pairs])
            references = _encode(pipe, [shapes.render(p.source, size) for p in pairs])
            texts = [p.instruction for p in pairs]
            # a background edit's mask is the whole background: weigh only what objects cover
            masks = [
                _scene_focus(p.target, size) if p.kind == "background"
                else np.maximum(_scene_focus(p.target, size), shapes.edit_mask(p, size))
                for p in pairs
            ]  # fmt: skip
            scenes = [p.source for p in pairs]
        clip_ids, t5_ids = tokenize(pipe, texts)
        focus = torch.from_numpy(np.stack([_token_share(m, size) for m in masks])).float()
        easiness = torch.tensor([_easiness(s) for s in scenes], dtype=torch.float32)
        buckets[name] = Bucket(task == "edit", latents, references, clip_ids, t5_ids, focus, easiness)
    return buckets


# --- stage 3 --------------------------------------------------------------------------------------
def _packed_ids(batch: int, h: int, w: int, reference: bool) -> torch.Tensor:
    ids = FluxPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, torch.device("cpu"), torch.float32)
    if reference:
        ids[..., 0] = 1
    return ids


def flow_loss(
    pipe: FluxPipeline, bucket: Bucket, idx: torch.Tensor, drop: torch.Tensor, empty, gen, cfg: TrainConfig
) -> torch.Tensor:
    """Rectified-flow loss of one batch: predict noise - data at a logit-normal time, tokens
    weighted by how much of them objects (or the edit) cover."""
    x0 = bucket.latents[idx]
    b, c, h, w = x0.shape
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.sigmoid(cfg.t_mean + cfg.t_std * torch.randn(b, generator=gen))
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    hidden = FluxPipeline._pack_latents(xt, b, c, h, w)
    ids = _packed_ids(b, h, w, reference=False)
    n_target = hidden.shape[1]
    if bucket.edit:
        ref = FluxPipeline._pack_latents(bucket.references[idx], b, c, h, w)
        hidden = torch.cat([hidden, ref], dim=1)
        ids = torch.cat([ids, _packed_ids(b, h, w, reference=True)], dim=0)
    clip_ids = torch.where(drop[:, None], empty[0], bucket.clip_ids[idx])
    t5_ids = torch.where(drop[:, None], empty[1], bucket.t5_ids[idx])
    pooled = pipe.text_encoder(clip_ids, output_hidden_states=False).pooler_output
    text = pipe.text_encoder_2(t5_ids, output_hidden_states=False)[0]
    txt_ids = torch.zeros(text.shape[1], 3)
    pred = pipe.transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled,
                            timestep=t, img_ids=ids, txt_ids=txt_ids, return_dict=False)[0]  # fmt: skip
    target = FluxPipeline._pack_latents(noise - x0, b, c, h, w)
    weight = 1.0 + cfg.object_weight * bucket.focus[idx]
    per_token = (pred[:, :n_target] - target).pow(2).mean(dim=-1)
    return (weight * per_token).sum() / weight.sum()


TRAINED = ("transformer", "text_encoder", "text_encoder_2")  # the modules stage 3 trains, in this order


def _pipeline_with(pipe: FluxPipeline, modules: list[torch.nn.Module], cls: type) -> FluxPipeline:
    """A ``cls`` pipeline sharing ``pipe``'s components but with ``modules`` as the ``TRAINED`` ones."""
    return cls(**{**pipe.components, **dict(zip(TRAINED, modules, strict=True))})


def text_sensitivity(pipe: FluxPipeline, captions: list[str], t: float = 0.9) -> float:
    """How much the prediction at high noise depends on what the caption says: relative L1
    difference of the transformer output for the same noisy latent under two different captions
    (each caption against the next). Near 0 means the model ignores the caption's content."""
    size = arch.IMAGE_SIZE // arch.PIXELS_PER_TOKEN
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, size * size, 4 * arch.LATENT_CHANNELS, generator=gen)
    ids = _packed_ids(1, 2 * size, 2 * size, reference=False)
    preds = []
    for caption in captions:
        text, pooled, txt_ids = pipe.encode_prompt(caption, None, max_sequence_length=arch.TEXT_TOKENS)
        preds.append(pipe.transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled,
                                      timestep=torch.tensor([t]), img_ids=ids, txt_ids=txt_ids,
                                      return_dict=False)[0])  # fmt: skip
    diffs = [(a - b).abs().mean() / a.abs().mean() for a, b in zip(preds, preds[1:] + preds[:1], strict=True)]
    return float(torch.stack(diffs).mean())


def evaluate(pipe: FluxPipeline, modules: list[torch.nn.Module], cfg: TrainConfig) -> dict[str, float]:
    """Checker verdicts on ``modules`` (transformer, CLIP, T5) on held-out t2i scenes and edits at
    128 px: whole-scene and edit accuracy, and the share of shapes found / of the right kind, colour,
    position and size, of right backgrounds, and the text sensitivity (early signals the strict
    accuracies are not)."""
    rng = np.random.default_rng(cfg.seed + 7919)  # own stream: evaluating never changes training
    scenes = [shapes.sample_scene(rng) for _ in range(cfg.eval_cases)]
    pairs = [shapes.sample_edit(rng) for _ in range(cfg.eval_cases)]
    common = dict(height=arch.IMAGE_SIZE, width=arch.IMAGE_SIZE, num_inference_steps=cfg.eval_steps,
                  max_sequence_length=arch.TEXT_TOKENS)  # fmt: skip
    t2i, edit = (_pipeline_with(pipe, modules, cls) for cls in (FluxPipeline, FluxKontextPipeline))
    for p in (t2i, edit):
        p.set_progress_bar_config(disable=True)
    right = {"t2i": 0, "edit": 0}
    parts = {k: 0 for k in ("found", "kind_ok", "color_ok", "position_ok", "size_ok", "ok")}
    n_shapes = background = 0
    with torch.no_grad():
        sensitivity = text_sensitivity(t2i, [s.caption() for s in scenes])
        for i, (scene, pair) in enumerate(zip(scenes, pairs, strict=True)):
            gen = torch.Generator().manual_seed(i)
            image = t2i(scene.caption(), generator=gen, **common).images[0]
            check = shapes.check_scene(image, scene)
            right["t2i"] += check.correct
            background += check.background_ok
            for shape in check.shapes:
                n_shapes += 1
                for key in parts:
                    parts[key] += getattr(shape, key)
            source = Image.fromarray(shapes.render(pair.source, arch.IMAGE_SIZE))
            image = edit(
                image=source,
                prompt=pair.instruction,
                generator=gen,
                max_area=arch.IMAGE_SIZE**2,
                _auto_resize=False,
                **common,
            ).images[0]
            right["edit"] += shapes.check_edit(image, pair)
    result = {task: count / len(scenes) for task, count in right.items()}
    result |= {f"shapes_{key}": count / n_shapes for key, count in parts.items()}
    return result | {"background_ok": background / len(scenes), "text_sensitivity": sensitivity}


def _item_weights(bucket: Bucket, progress: float, cfg: TrainConfig) -> np.ndarray:
    """Sampling probabilities of a bucket's items at ``progress`` (0-1) of the run: the curriculum."""
    remaining = max(0.0, 1.0 - progress / cfg.curriculum) if cfg.curriculum > 0 else 0.0
    weights = (1.0 + cfg.easy_boost * remaining) ** bucket.easiness.numpy().astype(np.float64)
    return weights / weights.sum()


def train_denoiser(pipe, buckets, cfg: TrainConfig, rng, log: dict, deadline: float) -> None:
    modules = [getattr(pipe, name) for name in TRAINED]
    for m in modules:
        m.train()
    params = [p for m in modules for p in m.parameters()]
    ema = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    empty = tokenize(pipe, [""])
    names = list(cfg.bucket_weights)
    weights = np.array([cfg.bucket_weights[n] for n in names])
    losses, evals, steps_done, start = [], [], 0, time.time()
    bar = tqdm(range(cfg.steps), desc="transformer", mininterval=10)
    for step in bar:
        if cfg.stop_after is not None and step >= cfg.stop_after:
            break
        if time.time() > deadline:  # safety stop; rerun with stop_after=<steps done> to reproduce
            log["stopped_by_budget"] = True
            break
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        lr *= cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        bucket = buckets[name]
        p = _item_weights(bucket, step / cfg.steps, cfg)
        idx = torch.from_numpy(rng.choice(len(bucket.latents), size=cfg.batch, p=p))
        drop = torch.from_numpy(rng.random(cfg.batch) < cfg.caption_dropout)
        loss = flow_loss(pipe, bucket, idx, drop, empty, gen, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for live, avg in zip(modules, ema, strict=True):
                for p, q in zip(live.parameters(), avg.parameters(), strict=True):
                    q.lerp_(p, 1 - cfg.ema)
        losses.append(loss.item())
        steps_done = step + 1
        if steps_done % cfg.log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every :]):.4f}", lr=f"{lr:.1e}")
        if steps_done % cfg.eval_every == 0:
            evals.append({"step": steps_done, "seconds": time.time() - start, **evaluate(pipe, ema, cfg)})
            tqdm.write(f"step {steps_done}: " + json.dumps({k: round(v, 3) for k, v in evals[-1].items()}))
            if cfg.checkpoints is not None:
                _pipeline_with(pipe, ema, FluxPipeline).save_pretrained(
                    Path(cfg.checkpoints) / f"step-{steps_done}", safe_serialization=True
                )
    for live, avg in zip(modules, ema, strict=True):
        live.load_state_dict(avg.state_dict())
        live.eval()
    curve = [float(np.mean(losses[i : i + cfg.log_every])) for i in range(0, len(losses), cfg.log_every)]
    log["denoiser"] = {
        "steps": steps_done,
        "seconds": time.time() - start,
        "loss_curve": curve,
        "eval": evals,
    }


def train(cfg: TrainConfig) -> Path:
    """Run all stages and save the pipeline folder to ``cfg.out``."""
    start = time.time()
    deadline = start + 60 * cfg.budget_min
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    log: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    carried = 0.0  # seconds of a stage taken from an earlier run
    if cfg.init is None:
        pipe = arch.build_pipeline([*shapes.vocabulary(), ","], seed=cfg.seed)
        if cfg.vae_from is None:
            train_vae(pipe, cfg, rng, log)
            log["vae"]["seconds"] = time.time() - start
        else:
            pipe.register_modules(
                vae=AutoencoderKL.from_pretrained(Path(cfg.vae_from) / "vae", local_files_only=True)
            )
            previous = json.loads((Path(cfg.vae_from) / "training.json").read_text())
            log["vae"] = {**previous["vae"], "from": str(cfg.vae_from)}
            carried = log["vae"]["seconds"]
            deadline -= carried
    else:
        pipe = FluxPipeline.from_pretrained(cfg.init, local_files_only=True)
        previous = Path(cfg.init) / "training.json"
        log["continues"] = json.loads(previous.read_text()) if previous.is_file() else str(cfg.init)
    # stages 2 and 3 draw from their own streams: they are the same whether stage 1 ran or not
    torch.manual_seed(cfg.seed + 2)
    buckets = build_buckets(pipe, cfg, np.random.default_rng([cfg.seed, 2]))
    train_denoiser(pipe, buckets, cfg, np.random.default_rng([cfg.seed, 3]), log, deadline)
    log["total_seconds"] = time.time() - start + carried
    out = Path(cfg.out)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(log, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=arch.FOLDER)
    parser.add_argument("--init", type=Path, default=None, help="continue training this saved pipeline")
    parser.add_argument(
        "--vae-from", type=Path, default=None, help="take this saved pipeline's VAE, skip stage 1"
    )
    parser.add_argument(
        "--checkpoints", type=Path, default=None, help="save the EMA pipeline here at every eval"
    )
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--stop-after", type=int, default=None, help="end at this step (schedule unchanged)")
    parser.add_argument("--budget-min", type=float, default=TrainConfig.budget_min)
    parser.add_argument("--smoke", action="store_true", help="a few steps of every stage")
    args = parser.parse_args()
    cfg = TrainConfig.smoke(args.out) if args.smoke else TrainConfig(
        out=args.out, seed=args.seed, init=args.init, lr=args.lr, steps=args.steps, stop_after=args.stop_after,
        budget_min=args.budget_min, vae_from=args.vae_from, checkpoints=args.checkpoints,
    )  # fmt: skip
    print(f"saved to {train(cfg)}")


if __name__ == "__main__":
    main()
