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

Fine-tuning (shapes-flux v3). ``--init FOLDER`` continues a saved pipeline; ``--state DIR`` makes
stage 3 resumable (:mod:`ditaccel.models.train_state`: weights, EMA, optimiser, random streams;
rerunning the same command continues from the last save, bit for bit); ``--set FIELD=VALUE`` sets
any :class:`TrainConfig` field. The v3 options: ``decoder_steps`` (stage 1b, the VAE decoder
alone learns the current world, so the denoiser's latents stay), ``copy_weight`` (an edit's
untouched tokens weigh more: a token-for-token copy of the reference is what the world asks there,
and with caption-determined backgrounds it can be learnt), ``parse_weight`` (a scene-parse
auxiliary loss: a linear head on the last hidden states names what each target token shows,
which only the caption can tell at high noise). ``--device cuda`` trains on a GPU with bfloat16
autocast (``benchmarks/train_gpu.sh``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from ..metrics.image import psnr_from_mse
from . import shapes_flux as arch
from . import train_state


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
    # Which text-to-image tokens object_weight weighs: "objects" (those the target's objects cover)
    # or "anchors" (those any shape at any of the world's anchors may cover: the same for every
    # scene). A weight that depends on the target biases the minimiser: where the noisy input leaves
    # it unsure whether an object is there, an object weighs 1 + object_weight and background 1, so
    # the weighted optimum paints an object (extra objects) and bleeds its colour past its outline
    # (blobs for triangles and circles). A weight fixed by position is unbiased.
    focus: str = "objects"
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
    # --- fine-tuning and resuming (shapes-flux v3) ---
    # A state folder: saved every state_every steps and at the end; a run whose state folder holds a
    # state continues from it (same config, fields named in amend may differ).
    state: Path | None = None
    state_every: int = 500
    amend: tuple[str, ...] = ()
    device: str = "cpu"
    bf16: bool = False  # bfloat16 autocast of the forward passes (CUDA)
    # Before the denoiser, fine-tune the init pipeline's VAE decoder (encoder frozen, so latents and
    # the denoiser's targets are unchanged) on the current world's renders for this many steps.
    decoder_steps: int = 0
    # Edit items: tokens the edit leaves alone weigh 1 + copy_weight (on top of object_weight), so
    # a token-for-token copy of the reference there is what the loss rewards most.
    copy_weight: float = 0.0
    # Scene-parse auxiliary loss: a linear head on the transformer's last hidden states predicts
    # what each target token shows (background kind, or an object's colour and kind); its
    # cross-entropy, times this, joins the flow loss. At high noise only the caption can tell.
    parse_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.focus not in ("objects", "anchors"):
            raise ValueError(f"focus must be 'objects' or 'anchors', got {self.focus!r}")

    @classmethod
    def smoke(cls, out: Path) -> TrainConfig:
        """A few steps of every stage, for tests."""
        return cls(
            out=out, threads=1, vae_steps=2, vae_batch=2, vae_pool=4, steps=3, batch=2, warmup=1, log_every=1,
            eval_every=3, eval_cases=1, eval_steps=2, buckets={"t2i-128": 4, "t2i-64": 2, "edit-128": 2, "edit-64": 2},
            state_every=2,
        )  # fmt: skip


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 renders -> float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _chroma(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's deviation from its grey (channel mean): zero on every background."""
    return x - x.mean(dim=1, keepdim=True)


# --- stage 1 --------------------------------------------------------------------------------------
def _crops(pool: list[np.ndarray], rng: np.random.Generator, cfg: TrainConfig) -> torch.Tensor:
    """A batch of ``vae_crop`` random crops of random renders from ``pool``."""
    crops = []
    for i in rng.integers(0, len(pool), size=cfg.vae_batch):
        img = pool[i]
        y, x = (rng.integers(0, img.shape[k] - cfg.vae_crop + 1) for k in (0, 1))
        crops.append(img[y : y + cfg.vae_crop, x : x + cfg.vae_crop])
    return _to_tensor(crops)


def _reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, cfg: TrainConfig, extra=0.0) -> torch.Tensor:
    """L1, plus ``extra`` (the VAE's KL term), plus the chroma L1 and MSE (see ``vae_chroma``)."""
    loss = (recon - x).abs().mean() + extra
    return loss + cfg.vae_chroma * (_chroma(recon) - _chroma(x)).abs().mean() + F.mse_loss(recon, x)


def train_vae(pipe: FluxPipeline, cfg: TrainConfig, rng: np.random.Generator, log: dict) -> None:
    vae = pipe.vae.train()
    pool = [
        shapes.render(shapes.sample_scene(rng), size=int(rng.choice([64, 128]))) for _ in range(cfg.vae_pool)
    ]
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in tqdm(range(cfg.vae_steps), desc="vae", mininterval=10):
        x = _crops(pool, rng, cfg)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(gen)).sample
        loss = _reconstruction_loss(recon, x, cfg, extra=cfg.vae_kl * posterior.kl().mean())
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


def round_trip(vae, cfg: TrainConfig) -> dict[str, float]:
    """The VAE's round trip (encode, decode) of held-out 128 px renders: the share the checker still
    judges correct (the ceiling the VAE puts on the whole pipeline's accuracy) and the pooled PSNR
    (the ceiling on how well an edit can keep what it leaves alone)."""
    rng = np.random.default_rng(cfg.seed + 104729)
    scenes = [shapes.sample_scene(rng) for _ in range(cfg.eval_cases * 4)]
    right, squared = 0, 0.0
    with torch.no_grad():
        for scene in scenes:
            render = shapes.render(scene, arch.IMAGE_SIZE)
            x = _to_tensor([render]).to(vae.device)
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample[0]
            image = ((y.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
            right += shapes.check_scene(image, scene).correct
            squared += float((((image.astype(np.float64) - render) / 255.0) ** 2).mean())
    return {
        "round_trip_correct": right / len(scenes),
        "round_trip_psnr_db": psnr_from_mse(squared / len(scenes)),
    }


def round_trip_accuracy(vae, cfg: TrainConfig) -> float:
    """The share of :func:`round_trip`'s renders the checker still judges correct."""
    return round_trip(vae, cfg)["round_trip_correct"]


def finetune_decoder(pipe: FluxPipeline, cfg: TrainConfig, rng: np.random.Generator, log: dict) -> None:
    """Stage 1b: the decoder (and its post-quant conv) of a trained VAE learns the current world's
    renders; the encoder is frozen, so latents, shift / scale and the denoiser's targets stay."""
    vae = pipe.vae
    before = round_trip(vae, cfg)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    vae.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    vae.decoder.train()
    pool = [shapes.render(shapes.sample_scene(rng), arch.IMAGE_SIZE) for _ in range(cfg.vae_pool)]
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr / 4)
    losses = []
    for _ in tqdm(range(cfg.decoder_steps), desc="decoder", mininterval=10):
        x = _crops(pool, rng, cfg).to(vae.device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        recon = vae.decode(z).sample
        loss = _reconstruction_loss(recon, x, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    vae.eval().requires_grad_(False)
    after = round_trip(vae, cfg)
    log["decoder"] = {"steps": cfg.decoder_steps, "final_loss": float(np.mean(losses[-50:] or [0])),
                      "before": before, "after": after}  # fmt: skip
    tqdm.write(f"decoder: {log['decoder']}")


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
    keep: torch.Tensor | None = None  # (N, tokens) edits: share of each token the edit leaves alone
    labels: torch.Tensor | None = None  # (N, tokens) int64: what each target token shows (PARSE_CLASSES)


def _token_share(mask: np.ndarray, size: int) -> np.ndarray:
    """Per packed token (8x8 pixels: 4x VAE, 2x2 packing), the share of ``mask`` it covers, in
    FluxPipeline's token order (row-major)."""
    px, grid = arch.PIXELS_PER_TOKEN, size // arch.PIXELS_PER_TOKEN
    return mask.astype(np.float32).reshape(grid, px, grid, px).mean(axis=(1, 3)).reshape(-1)


def _scene_focus(scene, size: int) -> np.ndarray:
    covered = sum(shapes.shape_coverage(shape, size) for shape in scene.shapes)
    return np.minimum(covered, 1.0)


def anchor_focus(size: int) -> np.ndarray:
    """Pixels some shape at some anchor may cover (a large square's box at every anchor): where a
    caption decides what is drawn, whatever it says."""
    boxes = [shapes.shape_coverage(shapes.Shape("square", "red", "large", p), size) for p in shapes.ANCHORS]
    return np.max(boxes, axis=0)


# Scene-parse classes of a token: the background kinds, then (colour, kind) of an object.
PARSE_CLASSES = len(shapes.BACKGROUNDS) + len(shapes.COLORS) * len(shapes.KINDS)


def parse_labels(scene, size: int) -> np.ndarray:
    """Per packed token (FluxPipeline's order), the class most of its pixels show: the scene's
    background kind, or ``len(BACKGROUNDS) + colour * len(KINDS) + kind`` of the object covering it."""
    pixels = np.full((size, size), shapes.BACKGROUNDS.index(scene.background), np.int64)
    colors, kinds = list(shapes.COLORS), list(shapes.KINDS)
    for shape in scene.shapes:
        label = len(shapes.BACKGROUNDS) + colors.index(shape.color) * len(kinds) + kinds.index(shape.kind)
        pixels[shapes.shape_coverage(shape, size) >= 0.5] = label
    px, grid = arch.PIXELS_PER_TOKEN, size // arch.PIXELS_PER_TOKEN
    tokens = pixels.reshape(grid, px, grid, px).transpose(0, 2, 1, 3).reshape(grid * grid, px * px)
    return np.array([np.bincount(row, minlength=PARSE_CLASSES).argmax() for row in tokens])


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
            masks = [anchor_focus(size) if cfg.focus == "anchors" else _scene_focus(s, size) for s in scenes]
            targets, keep = scenes, None
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
            scenes, targets = [p.source for p in pairs], [p.target for p in pairs]
            keep = 1 - torch.from_numpy(
                np.stack([_token_share(shapes.edit_mask(p, size), size) for p in pairs])
            )
        clip_ids, t5_ids = tokenize(pipe, texts)
        focus = torch.from_numpy(np.stack([_token_share(m, size) for m in masks])).float()
        easiness = torch.tensor([_easiness(s) for s in scenes], dtype=torch.float32)
        labels = (
            torch.from_numpy(np.stack([parse_labels(t, size) for t in targets])) if cfg.parse_weight else None
        )
        buckets[name] = Bucket(
            task == "edit", latents, references, clip_ids, t5_ids, focus, easiness,
            keep=None if keep is None else keep.float(), labels=labels,
        )  # fmt: skip
    return buckets


# --- stage 3 --------------------------------------------------------------------------------------
def _packed_ids(batch: int, h: int, w: int, reference: bool) -> torch.Tensor:
    ids = FluxPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, torch.device("cpu"), torch.float32)
    if reference:
        ids[..., 0] = 1
    return ids


class _LastHidden:
    """Keeps the transformer's last hidden states (the input of its output norm) of a forward."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = transformer.norm_out.register_forward_pre_hook(self._keep)

    def _keep(self, module, args) -> None:
        self.value = args[0]


def flow_loss(
    pipe: FluxPipeline, bucket: Bucket, idx: torch.Tensor, drop: torch.Tensor, empty, gen, cfg: TrainConfig,
    parse_head: torch.nn.Module | None = None, last_hidden: _LastHidden | None = None,
) -> torch.Tensor:  # fmt: skip
    """Rectified-flow loss of one batch: predict noise - data at a logit-normal time, tokens
    weighted by how much of them objects (or the edit) cover and, for edits, by what the edit leaves
    alone; plus the scene-parse loss when ``parse_head`` is given."""
    device = pipe.transformer.device
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
    clip_ids = torch.where(drop[:, None], empty[0], bucket.clip_ids[idx]).to(device)
    t5_ids = torch.where(drop[:, None], empty[1], bucket.t5_ids[idx]).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        pooled = pipe.text_encoder(clip_ids, output_hidden_states=False).pooler_output
        text = pipe.text_encoder_2(t5_ids, output_hidden_states=False)[0]
        txt_ids = torch.zeros(text.shape[1], 3, device=device)
        pred = pipe.transformer(hidden_states=hidden.to(device), encoder_hidden_states=text,
                                pooled_projections=pooled, timestep=t.to(device), img_ids=ids.to(device),
                                txt_ids=txt_ids, return_dict=False)[0]  # fmt: skip
    target = FluxPipeline._pack_latents(noise - x0, b, c, h, w).to(device)
    weight = 1.0 + cfg.object_weight * bucket.focus[idx]
    if bucket.keep is not None:
        weight = weight + cfg.copy_weight * bucket.keep[idx]
    weight = weight.to(device)
    per_token = (pred[:, :n_target].float() - target).pow(2).mean(dim=-1)
    loss = (weight * per_token).sum() / weight.sum()
    if parse_head is not None:
        logits = parse_head(last_hidden.value[:, :n_target].float())
        labels = bucket.labels[idx].to(device)
        loss = loss + cfg.parse_weight * F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        )
    return loss


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
    device = pipe.transformer.device
    hidden = torch.randn(1, size * size, 4 * arch.LATENT_CHANNELS, generator=gen).to(device)
    ids = _packed_ids(1, 2 * size, 2 * size, reference=False).to(device)
    preds = []
    for caption in captions:
        text, pooled, txt_ids = pipe.encode_prompt(caption, None, max_sequence_length=arch.TEXT_TOKENS)
        preds.append(pipe.transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled,
                                      timestep=torch.tensor([t], device=device), img_ids=ids, txt_ids=txt_ids,
                                      return_dict=False)[0])  # fmt: skip
    diffs = [(a - b).abs().mean() / a.abs().mean() for a, b in zip(preds, preds[1:] + preds[:1], strict=True)]
    return float(torch.stack(diffs).mean())


def evaluate(pipe: FluxPipeline, modules: list[torch.nn.Module], cfg: TrainConfig) -> dict[str, float]:
    """Checker verdicts on ``modules`` (transformer, CLIP, T5) on held-out t2i scenes and edits at
    128 px: whole-scene and edit accuracy, and the share of shapes found / of the right kind, colour,
    position and size, of right backgrounds, and the text sensitivity (early signals the strict
    accuracies are not), and ``preserve_psnr_db``: the edits' PSNR against their source outside the
    edit mask, pooled (what the token methods for editing live on)."""
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
    kept_error = kept_pixels = 0.0
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
            outside = ~shapes.edit_mask(pair, arch.IMAGE_SIZE)
            diff = (np.asarray(image, np.float64) - np.asarray(source, np.float64)) / 255.0
            kept_error += float((diff[outside] ** 2).sum())
            kept_pixels += float(outside.sum() * 3)
    result = {task: count / len(scenes) for task, count in right.items()}
    result["preserve_psnr_db"] = psnr_from_mse(kept_error / kept_pixels) if kept_pixels else float("nan")
    result |= {f"shapes_{key}": count / n_shapes for key, count in parts.items()}
    return result | {"background_ok": background / len(scenes), "text_sensitivity": sensitivity}


def _item_weights(bucket: Bucket, progress: float, cfg: TrainConfig) -> np.ndarray:
    """Sampling probabilities of a bucket's items at ``progress`` (0-1) of the run: the curriculum."""
    remaining = max(0.0, 1.0 - progress / cfg.curriculum) if cfg.curriculum > 0 else 0.0
    weights = (1.0 + cfg.easy_boost * remaining) ** bucket.easiness.numpy().astype(np.float64)
    return weights / weights.sum()


def _schedule(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up, cosine decay to ``min_lr_ratio`` over ``steps``."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
    return lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))


def _config_record(cfg: TrainConfig) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}


def _check_resumable(saved: dict, cfg: TrainConfig) -> None:
    """A resumed run must be the run that was saved, except for the fields ``amend`` names and
    those that say where and how long to run."""
    free = {"out", "state", "checkpoints", "budget_min", "amend", "device", "bf16", "threads", "init",
            "decoder_steps", "stop_after", *cfg.amend}  # fmt: skip
    now = _config_record(cfg)
    changed = sorted(k for k in now if k not in free and k in saved and saved[k] != now[k])
    if changed:
        raise ValueError(
            f"the state in {cfg.state} was saved with other values of {changed}; resume with the same "
            f"settings, or name the fields to change in amend (--set 'amend=[...]')"
        )


def train_denoiser(pipe, buckets, cfg: TrainConfig, rng, log: dict, deadline: float) -> None:
    """Stage 3, resumable: continues from ``cfg.state`` when it holds a state."""
    device = torch.device(cfg.device)
    live = {name: getattr(pipe, name) for name in TRAINED}
    ema = [copy.deepcopy(m).eval().requires_grad_(False) for m in live.values()]  # the pipeline's: EMA
    parse_head = last_hidden = None
    if cfg.parse_weight:
        parse_head = torch.nn.Linear(pipe.transformer.config.num_attention_heads
                                     * pipe.transformer.config.attention_head_dim, PARSE_CLASSES).to(device)  # fmt: skip
        live["parse_head"] = parse_head
        last_hidden = _LastHidden(pipe.transformer)
    for m in live.values():
        m.train().requires_grad_(True)
    params = [p for m in live.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    progress = train_state.Progress()
    if cfg.state is not None and (Path(cfg.state) / "progress.json").is_file():
        progress, saved = train_state.load(cfg.state, live, opt, rng, gen)
        _check_resumable(saved, cfg)
        log.update(progress.stages)
        tqdm.write(f"resumed from {cfg.state} at step {progress.step}")
    else:
        progress.stages = {key: log[key] for key in ("vae", "decoder") if key in log}
    progress.legs.append({"step": progress.step, "device": cfg.device, "amend": list(cfg.amend)})
    empty = tokenize(pipe, [""])
    names = list(cfg.bucket_weights)
    weights = np.array([cfg.bucket_weights[n] for n in names])
    losses, leg_start, spent = [], time.time(), progress.seconds
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)

    def save_state() -> None:
        progress.seconds = spent + time.time() - leg_start
        if cfg.state is not None:
            ema_pipe = _pipeline_with(pipe, ema, FluxPipeline)
            train_state.save(cfg.state, ema_pipe, live, opt, progress, rng, gen, _config_record(cfg))

    bar = tqdm(
        range(progress.step, end), desc="transformer", mininterval=10, initial=progress.step, total=end
    )
    for step in bar:
        if time.time() > deadline:  # safety stop; resume from the state, or rerun with stop_after
            log["stopped_by_budget"] = True
            break
        lr = _schedule(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        bucket = buckets[name]
        p = _item_weights(bucket, step / cfg.steps, cfg)
        idx = torch.from_numpy(rng.choice(len(bucket.latents), size=cfg.batch, p=p))
        drop = torch.from_numpy(rng.random(cfg.batch) < cfg.caption_dropout)
        loss = flow_loss(pipe, bucket, idx, drop, empty, gen, cfg, parse_head, last_hidden)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for module, avg in zip(live.values(), ema, strict=False):  # parse_head has no EMA
                for p, q in zip(module.parameters(), avg.parameters(), strict=True):
                    q.lerp_(p, 1 - cfg.ema)
        losses.append(loss.item())
        progress.step = step + 1
        if progress.step % cfg.log_every == 0:
            progress.losses.append(float(np.mean(losses[-cfg.log_every :])))
            bar.set_postfix(loss=f"{progress.losses[-1]:.4f}", lr=f"{lr:.1e}")
        if progress.step % cfg.eval_every == 0:
            for m in ema:
                m.eval()
            row = {
                "step": progress.step,
                "seconds": spent + time.time() - leg_start,
                **evaluate(pipe, ema, cfg),
            }
            progress.evals.append(row)
            tqdm.write(f"step {progress.step}: " + json.dumps({k: round(v, 3) for k, v in row.items()}))
            if cfg.checkpoints is not None:
                _pipeline_with(pipe, ema, FluxPipeline).save_pretrained(
                    Path(cfg.checkpoints) / f"step-{progress.step}", safe_serialization=True
                )
        if progress.step % cfg.state_every == 0:
            save_state()
    save_state()
    if last_hidden is not None:
        last_hidden.handle.remove()
    for name, avg in zip(TRAINED, ema, strict=True):
        live[name].load_state_dict(avg.state_dict())
        live[name].eval().requires_grad_(False)
    log["denoiser"] = progress.record()


def train(cfg: TrainConfig) -> Path:
    """Run all stages and save the pipeline folder to ``cfg.out``."""
    start = time.time()
    deadline = start + 60 * cfg.budget_min
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    log: dict = {"config": _config_record(cfg)}
    carried = 0.0  # seconds of a stage taken from an earlier run
    resuming = cfg.state is not None and (Path(cfg.state) / "progress.json").is_file()
    if resuming:  # the state's pipeline: its EMA weights and the VAE the run started with
        pipe = FluxPipeline.from_pretrained(Path(cfg.state) / "pipeline", local_files_only=True)
        previous = Path(cfg.init) / "training.json" if cfg.init is not None else None
        if previous is not None and previous.is_file():
            log["continues"] = json.loads(previous.read_text())
    elif cfg.init is None:
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
    pipe.to(cfg.device)
    if cfg.decoder_steps and not resuming:
        finetune_decoder(pipe, cfg, np.random.default_rng([cfg.seed, 5]), log)
    # stages 2 and 3 draw from their own streams: they are the same whether stage 1 ran or not
    torch.manual_seed(cfg.seed + 2)
    buckets = build_buckets(pipe, cfg, np.random.default_rng([cfg.seed, 2]))
    train_denoiser(pipe, buckets, cfg, np.random.default_rng([cfg.seed, 3]), log, deadline)
    log["total_seconds"] = time.time() - start + carried
    out = Path(cfg.out)
    pipe.to("cpu").save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(log, indent=1))
    return out


def _parse_set(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``key=value`` overrides of TrainConfig fields; values are JSON (strings may be bare)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key in ("out", "init", "vae_from", "checkpoints", "state") and value is not None:
            value = Path(value)
        if key == "amend":
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


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
    parser.add_argument(
        "--state", type=Path, default=None, help="resumable state folder: saved as the run goes, resumed from"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bfloat16 autocast)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="any TrainConfig field (JSON value)"
    )
    parser.add_argument(
        "--eval-json", type=Path, default=None, help="evaluate the final weights (held out) and write it here"
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps of every stage")
    args = parser.parse_args()
    cfg = TrainConfig.smoke(args.out) if args.smoke else TrainConfig(
        out=args.out, seed=args.seed, init=args.init, lr=args.lr, steps=args.steps, stop_after=args.stop_after,
        budget_min=args.budget_min, vae_from=args.vae_from, checkpoints=args.checkpoints,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, state=args.state, device=args.device, bf16=args.device.startswith("cuda"))
    cfg = _parse_set(cfg, args.set)
    out = train(cfg)
    print(f"saved to {out}")
    if args.eval_json is not None:
        final = FluxPipeline.from_pretrained(out, local_files_only=True).to(cfg.device)
        row = evaluate(final, [getattr(final, name) for name in TRAINED], cfg)
        args.eval_json.write_text(json.dumps({"model": str(out), "eval_cases": cfg.eval_cases,
                                              "eval_steps": cfg.eval_steps, **row}, indent=1))  # fmt: skip
        print(json.dumps(row))


if __name__ == "__main__":
    main()
