"""Tiny random-weight diffusers pipelines of nine DiT families, built fully offline.

Tests (and the CLI, which accepts these names as model ids) need real diffusers pipeline classes
with every component in place -- tokenizers, text encoders, VAE, transformer, scheduler -- so that
``pipe(prompt=...)`` runs end to end exactly as with a released checkpoint, but in a fraction of a
second on a CPU and without the Hugging Face hub or any downloaded file. Each pipeline here is
assembled from tiny configs (hidden sizes 16-64, two layers) with random weights:

* the tokenizers are merge-free byte-level BPEs (:mod:`ditaccel.tokenizers`), so no vocabulary file
  is needed;
* ``torch.manual_seed(seed)`` is called before each module is built, so the same name and seed give
  identical weights, and every module is put in ``eval()`` mode so calls are deterministic;
* image sizes are the smallest that give the transformer at least 16 image tokens (see
  :func:`example_call`); patch sizes, latent packing and channel bookkeeping follow the real
  models so the pipelines' own shape logic is exercised, but VAE compression is 4x for the 2D
  KL VAEs (real: 8x) so that 32x32 images suffice, and 16x for Qwen (see below). Wan keeps the
  real 8x spatial / 4x temporal compression.

Quirks these configs must respect (found by building them):

* Flux-Fill concatenates latents, masked-image latents and a packed pixel-space mask along the
  channel axis, so its transformer's ``in_channels`` is ``2 * 4 * latent_channels + 4 * s**2``
  where ``s`` is the VAE's spatial compression (the real model: 64 + 64 + 256 = 384).
* ``AutoencoderKL`` for Flux/SD3 needs ``scaling_factor`` *and* ``shift_factor`` set; a ``None``
  shift breaks FluxPipeline's decoding.
* SD3 zero-pads the concatenated CLIP-L/CLIP-G embeddings to the T5 width, so the T5 width must be
  at least the sum of the two CLIP widths, and the transformer's pooled projection takes the
  concatenation of both CLIP projections.
* CLIP pools at the first ``eos_token_id``, so the CLIP configs take their special ids from the
  byte-level tokenizer.
* ``DiTPipeline`` hardcodes the null class id 1000, so ``num_embeds_ada_norm`` must be 1000.
* ``QwenImageEditPipeline`` always resizes the condition image to about 1024x1024 pixels before
  VAE-encoding it (the target area is hardcoded, and a latent tensor cannot be passed instead
  because the pipeline reads ``image.size`` as a PIL size), whatever ``height``/``width`` are.
  The tiny Qwen VAE therefore compresses 16x (~1k condition tokens instead of 16k at 4x) and has
  no encoder residual blocks (full-resolution causal conv3d costs seconds on a CPU); the output
  must then be 128x128 for 16 image tokens.
* ``Qwen2VLProcessor`` cannot be constructed at all without torchvision in transformers 5 (see
  :class:`ImageOnlyQwen2VLProcessor`); the edit pipeline gets that thin subclass, built from
  ``Qwen2VLImageProcessorPil`` with ``min_pixels = max_pixels`` so the vision tower sees a 56x56
  image. The subclass round-trips through ``save_pretrained``/``from_pretrained``.
* Qwen-Image drops a fixed number of template tokens counted with the real Qwen tokenizer; with the
  byte-level tokenizer ~100 bytes of the system prompt survive in the text embeddings. That works,
  but dilutes the prompt: changing it moves Qwen-Image's output far less than other families'.
* ``from_pretrained`` memory-maps safetensors, and GEMMs on those (unaligned) buffers can round
  differently in the last bit; reloaded pipelines match to ~1e-6, and bit-exactly with
  ``from_pretrained(..., disable_mmap=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    AutoencoderKLWan,
    DDIMScheduler,
    DiffusionPipeline,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxFillPipeline,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    QwenImageEditPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SD3ControlNetModel,
    SD3Transformer2DModel,
    StableDiffusion3ControlNetPipeline,
    StableDiffusion3Pipeline,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from PIL import Image, ImageDraw
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedTokenizerFast,
    ProcessorMixin,  # also needed by diffusers to reload ImageOnlyQwen2VLProcessor (see there)
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from ditaccel.tokenizers import byte_level_tokenizer

__all__ = ["TINY_MODELS", "example_call", "synthetic_profile", "tiny_pipeline"]

TINY_MODELS: tuple[str, ...] = (
    "tiny-random-flux",
    "tiny-random-flux-kontext",
    "tiny-random-flux-fill",
    "tiny-random-flux-controlnet",
    "tiny-random-sd3",
    "tiny-random-sd3-controlnet",
    "tiny-random-pixart",
    "tiny-random-qwen-image",
    "tiny-random-qwen-image-edit",
    "tiny-random-wan",
    "tiny-random-dit",
)

# --- Shared transformer geometry --------------------------------------------------------------
NUM_LAYERS = 2  # transformer blocks (Flux: double and single blocks each)
# ControlNet blocks: fewer than the transformer's, so each residual is added after several blocks
# (diffusers spreads them evenly), as with the released FLUX / SD3 ControlNets
CONTROLNET_LAYERS = 1
NUM_HEADS = 2
HEAD_DIM = 16
INNER_DIM = NUM_HEADS * HEAD_DIM
MLP_RATIO = 2  # feed-forward width / hidden width, in every transformer and text encoder here
FFN_DIM = MLP_RATIO * INNER_DIM
ROPE_AXES_DIMS = (4, 6, 6)  # (frame, height, width) RoPE split; must sum to HEAD_DIM
PATCH_SIZE = 2  # spatial patch (or 2x2 latent packing for Flux/Qwen)

# --- Text encoders ----------------------------------------------------------------------------
TEXT_LAYERS = 2
TEXT_HEADS = 2
CLIP_HIDDEN = 32
CLIP_MAX_LENGTH = 77  # CLIP's real context length; pipelines always pad CLIP prompts to it
T5_D_MODEL = 32  # also the transformers' joint/caption/text dim
T5_RELATIVE_BUCKETS = 8
T5_MAX_LENGTH = 512  # real T5 tokenizer limit; pipelines pad T5 prompts to `max_sequence_length`
EXAMPLE_MAX_SEQUENCE_LENGTH = 32  # T5 length used by example_call, to keep text tokens few
SD3_POS_EMBED_MAX_SIZE = 32  # largest latent side SD3's cropped pos-embed supports: 128 px images
SD3_CLIP_HIDDEN = T5_D_MODEL // 2  # two CLIPs concatenated must fit the T5 width (zero-padded)
QWEN_TEXT_HIDDEN = 32
QWEN_MROPE_SECTION = (2, 3, 3)  # multimodal RoPE split of the half head dim (sum 8 = 16 / 2)
QWEN_ROPE_THETA = 1_000_000.0
QWEN_MAX_LENGTH = 8192  # > the 1024 + template tokens QwenImage tokenizes to
QWEN_VISION_HIDDEN = 16
QWEN_VISION_PATCH = 14  # Qwen2.5-VL's real vision patch size
QWEN_VISION_MERGE = 2  # 2x2 vision patches merge into one text-space token
QWEN_VISION_TEMPORAL_PATCH = 2
QWEN_VISION_TOKENS_PER_SIDE = 2  # the vision tower sees 2x2 merged tokens (4x4 patches)
QWEN_VISION_SIDE = QWEN_VISION_TOKENS_PER_SIDE * QWEN_VISION_PATCH * QWEN_VISION_MERGE  # 56 px
QWEN_SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# --- VAEs -------------------------------------------------------------------------------------
LATENT_CHANNELS = 4
VAE_BLOCK_CHANNELS = (8, 16, 16)  # 3 levels: 4x spatial compression (real SD/Flux VAEs: 8x)
VAE_NORM_GROUPS = 4
VAE_SPATIAL_SCALE = 2 ** (len(VAE_BLOCK_CHANNELS) - 1)
FLUX_VAE_SCALING_FACTOR = 0.3611  # real FLUX.1 VAE values; FluxPipeline needs both set
FLUX_VAE_SHIFT_FACTOR = 0.1159
SD3_VAE_SCALING_FACTOR = 1.5305  # real SD3 VAE values
SD3_VAE_SHIFT_FACTOR = 0.0609
SDXL_VAE_SCALING_FACTOR = 0.13025  # PixArt-Sigma uses the SDXL VAE
SD_VAE_SCALING_FACTOR = 0.18215  # DiT uses the SD VAE
QWEN_VAE_BASE_DIM = 32  # narrower random 5-level decoders barely depend on the latents
QWEN_VAE_DIM_MULT = (1, 1, 1, 1, 1)  # 5 levels: 16x spatial compression (real: 8x); equal widths
# No encoder residual blocks (the decoder still gets one per level): Qwen-Image-Edit always encodes
# a ~1024x1024 condition image, and full-resolution causal conv3d blocks cost ~1.3 s on a 2-core CPU.
QWEN_VAE_NUM_RES_BLOCKS = 0
QWEN_VAE_TEMPORAL_DOWNSAMPLE = (False, False, True, True)
QWEN_VAE_SPATIAL_SCALE = 2 ** len(QWEN_VAE_TEMPORAL_DOWNSAMPLE)
WAN_VAE_BASE_DIM = 8
WAN_VAE_DIM_MULT = (1, 1, 1, 1)
WAN_VAE_TEMPORAL_DOWNSAMPLE = (False, True, True)  # real Wan geometry: 8x spatial, 4x temporal
WAN_VAE_SPATIAL_SCALE = 2 ** len(WAN_VAE_TEMPORAL_DOWNSAMPLE)
WAN_VAE_TEMPORAL_SCALE = 2 ** sum(WAN_VAE_TEMPORAL_DOWNSAMPLE)

# --- Schedulers -------------------------------------------------------------------------------
SD3_SHIFT = 3.0
WAN_FLOW_SHIFT = 3.0
DIT_NUM_CLASSES = 1000  # DiTPipeline hardcodes 1000 as the null (unconditional) class id
DIT_ID2LABEL = {0: "circle", 1: "square", 2: "triangle"}
WAN_FREQ_DIM = 32  # sinusoidal timestep embedding width
WAN_ROPE_MAX_SEQ_LEN = 32

# --- Example calls ----------------------------------------------------------------------------
# Output sizes are the smallest that give the transformer >= 16 image tokens.
IMAGE_TOKENS_PER_SIDE = 4  # 4x4 = 16 tokens: 32 px for the 4x VAEs, 128 px for the 16x Qwen VAE
VIDEO_TOKENS_PER_SIDE = 3  # 3x3 tokens x 2 latent frames = 18 tokens: 48 px for Wan
IMAGE_SIZE = PATCH_SIZE * VAE_SPATIAL_SCALE * IMAGE_TOKENS_PER_SIDE
QWEN_IMAGE_SIZE = PATCH_SIZE * QWEN_VAE_SPATIAL_SCALE * IMAGE_TOKENS_PER_SIDE
WAN_SIZE = PATCH_SIZE * WAN_VAE_SPATIAL_SCALE * VIDEO_TOKENS_PER_SIDE
WAN_NUM_FRAMES = 1 + WAN_VAE_TEMPORAL_SCALE  # 5 frames -> 2 latent frames (causal VAE: 1 + 4k)
EXAMPLE_PROMPT = "a red circle"
FLUX_FILL_GUIDANCE = 30.0  # FluxFillPipeline's default distilled guidance
CFG_SCALE = 4.0  # classifier-free guidance scale where the pipeline has CFG


# ==============================================================================================
# Building blocks
# ==============================================================================================


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build one module right after ``torch.manual_seed(seed)``, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    return build().eval()


def _clip_tokenizer() -> PreTrainedTokenizerFast:
    """CLIP-style tokenizer: ``<|startoftext|> ... <|endoftext|>``, padded with the eos token."""
    return byte_level_tokenizer(
        model_max_length=CLIP_MAX_LENGTH,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _t5_tokenizer() -> PreTrainedTokenizerFast:
    """T5-style tokenizer: ``... </s>``, padded with ``<pad>``."""
    return byte_level_tokenizer(
        model_max_length=T5_MAX_LENGTH, bos_token=None, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen2-style tokenizer with the chat/vision special tokens the Qwen-Image templates use."""
    return byte_level_tokenizer(
        model_max_length=QWEN_MAX_LENGTH,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=QWEN_SPECIAL_TOKENS,
    )


def _clip_config(tokenizer: PreTrainedTokenizerFast, hidden: int) -> CLIPTextConfig:
    """A tiny CLIP text config whose special ids match ``tokenizer`` (eos pooling needs them)."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=MLP_RATIO * hidden,
        projection_dim=hidden,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5_config(config_class: type, tokenizer: PreTrainedTokenizerFast) -> T5Config | UMT5Config:
    """A tiny T5 (or UMT5) encoder config sized for ``tokenizer``."""
    return config_class(
        vocab_size=len(tokenizer),
        d_model=T5_D_MODEL,
        d_kv=T5_D_MODEL // TEXT_HEADS,
        d_ff=MLP_RATIO * T5_D_MODEL,
        num_layers=TEXT_LAYERS,
        num_heads=TEXT_HEADS,
        relative_attention_num_buckets=T5_RELATIVE_BUCKETS,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def _autoencoder_kl(
    seed: int, scaling_factor: float, shift_factor: float | None = None, **extra: Any
) -> AutoencoderKL:
    """A tiny 2D KL VAE with 4x spatial compression and ``LATENT_CHANNELS`` latent channels."""
    levels = len(VAE_BLOCK_CHANNELS)
    return _seeded(
        seed,
        lambda: AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=VAE_BLOCK_CHANNELS,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=VAE_NORM_GROUPS,
            sample_size=IMAGE_SIZE,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            **extra,
        ),
    )


def _flux_geometry(in_channels: int, layers: int) -> dict[str, Any]:
    """The tiny FLUX transformer's (and ControlNet's) sizes: ``layers`` double and single blocks."""
    return dict(
        patch_size=1,  # Flux packs 2x2 latent patches in the pipeline, not the model
        in_channels=in_channels,
        num_layers=layers,
        num_single_layers=layers,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=NUM_HEADS,
        joint_attention_dim=T5_D_MODEL,
        pooled_projection_dim=CLIP_HIDDEN,
        guidance_embeds=True,  # FLUX.1-dev style guidance distillation
        axes_dims_rope=ROPE_AXES_DIMS,
    )


def _flux_components(seed: int, transformer_in_channels: int) -> dict[str, Any]:
    """All components of a Flux-family pipeline (CLIP-L + T5 text encoders, Flux VAE, MMDiT)."""
    clip_tok, t5_tok = _clip_tokenizer(), _t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: FluxTransformer2DModel(
            out_channels=LATENT_CHANNELS * PATCH_SIZE**2,
            **_flux_geometry(transformer_in_channels, NUM_LAYERS),
        ),
    )
    # Flux's VAE has no quant convs; shift and scale must be set or decoding fails.
    vae = _autoencoder_kl(
        seed, FLUX_VAE_SCALING_FACTOR, FLUX_VAE_SHIFT_FACTOR, use_quant_conv=False, use_post_quant_conv=False
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        "vae": vae,
        "text_encoder": _seeded(seed, lambda: CLIPTextModel(_clip_config(clip_tok, CLIP_HIDDEN))),
        "tokenizer": clip_tok,
        "text_encoder_2": _seeded(seed, lambda: T5EncoderModel(_t5_config(T5Config, t5_tok))),
        "tokenizer_2": t5_tok,
        "transformer": transformer,
    }


# ==============================================================================================
# One builder per family
# ==============================================================================================


def _build_flux(seed: int) -> DiffusionPipeline:
    """FLUX.1-dev: text-to-image MMDiT with double- and single-stream blocks."""
    return FluxPipeline(**_flux_components(seed, LATENT_CHANNELS * PATCH_SIZE**2))


def _build_flux_kontext(seed: int) -> DiffusionPipeline:
    """FLUX.1-Kontext: image editing; the condition image's tokens join the sequence."""
    return FluxKontextPipeline(**_flux_components(seed, LATENT_CHANNELS * PATCH_SIZE**2))


def _build_flux_fill(seed: int) -> DiffusionPipeline:
    """FLUX.1-Fill: inpainting; latents, masked-image latents and the packed mask are concatenated."""
    packed_latents = LATENT_CHANNELS * PATCH_SIZE**2
    packed_mask = VAE_SPATIAL_SCALE**2 * PATCH_SIZE**2
    return FluxFillPipeline(**_flux_components(seed, 2 * packed_latents + packed_mask))


def _build_flux_controlnet(seed: int) -> DiffusionPipeline:
    """FLUX.1 with a ControlNet: its residuals are added to the image stream after the blocks."""
    controlnet = _seeded(
        seed + 1,
        lambda: FluxControlNetModel(**_flux_geometry(LATENT_CHANNELS * PATCH_SIZE**2, CONTROLNET_LAYERS)),
    )
    _randomize_zero_projections(controlnet)
    return FluxControlNetPipeline(
        **_flux_components(seed, LATENT_CHANNELS * PATCH_SIZE**2), controlnet=controlnet
    )


def _randomize_zero_projections(controlnet: torch.nn.Module) -> None:
    """ControlNets start with zero input and output projections (they add nothing until trained):
    random ones make the tiny ControlNet's residuals non-zero and dependent on the control image,
    so tests see the control signal."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in controlnet.parameters():
            if param.dim() > 1 and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def _sd3_transformer(
    seed: int, layers: int, model: type = SD3Transformer2DModel, **extra: Any
) -> torch.nn.Module:
    return _seeded(
        seed,
        lambda: model(
            sample_size=IMAGE_SIZE // VAE_SPATIAL_SCALE,
            patch_size=PATCH_SIZE,
            in_channels=LATENT_CHANNELS,
            num_layers=layers,
            attention_head_dim=HEAD_DIM,
            num_attention_heads=NUM_HEADS,
            joint_attention_dim=T5_D_MODEL,
            caption_projection_dim=INNER_DIM,
            pooled_projection_dim=2 * SD3_CLIP_HIDDEN,  # CLIP-L and CLIP-G pooled, concatenated
            out_channels=LATENT_CHANNELS,
            pos_embed_max_size=SD3_POS_EMBED_MAX_SIZE,
            **extra,
        ),
    )


def _build_sd3(seed: int) -> DiffusionPipeline:
    """Stable Diffusion 3: MMDiT with CLIP-L + CLIP-G + T5 text encoders."""
    return StableDiffusion3Pipeline(**_sd3_components(seed))


def _build_sd3_controlnet(seed: int) -> DiffusionPipeline:
    """Stable Diffusion 3 with a ControlNet (residuals added to the image stream after the blocks)."""
    controlnet = _sd3_transformer(seed + 1, CONTROLNET_LAYERS, SD3ControlNetModel)
    _randomize_zero_projections(controlnet)
    return StableDiffusion3ControlNetPipeline(**_sd3_components(seed), controlnet=controlnet)


def _sd3_components(seed: int) -> dict[str, Any]:
    clip_tok, clip_tok_2, t5_tok = _clip_tokenizer(), _clip_tokenizer(), _t5_tokenizer()
    return dict(
        transformer=_sd3_transformer(seed, NUM_LAYERS),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SD3_SHIFT),
        vae=_autoencoder_kl(seed, SD3_VAE_SCALING_FACTOR, SD3_VAE_SHIFT_FACTOR),
        text_encoder=_seeded(
            seed, lambda: CLIPTextModelWithProjection(_clip_config(clip_tok, SD3_CLIP_HIDDEN))
        ),
        tokenizer=clip_tok,
        text_encoder_2=_seeded(
            seed, lambda: CLIPTextModelWithProjection(_clip_config(clip_tok_2, SD3_CLIP_HIDDEN))
        ),
        tokenizer_2=clip_tok_2,
        text_encoder_3=_seeded(seed, lambda: T5EncoderModel(_t5_config(T5Config, t5_tok))),
        tokenizer_3=t5_tok,
    )


def _build_pixart(seed: int) -> DiffusionPipeline:
    """PixArt-Sigma: DiT with adaLN-single, T5 cross-attention and learned sigma."""
    t5_tok = _t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: PixArtTransformer2DModel(
            num_attention_heads=NUM_HEADS,
            attention_head_dim=HEAD_DIM,
            in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS,  # learned sigma: the pipeline keeps the first half
            num_layers=NUM_LAYERS,
            cross_attention_dim=INNER_DIM,
            sample_size=IMAGE_SIZE // VAE_SPATIAL_SCALE,
            patch_size=PATCH_SIZE,
            caption_channels=T5_D_MODEL,
        ),
    )
    return PixArtSigmaPipeline(
        tokenizer=t5_tok,
        text_encoder=_seeded(seed, lambda: T5EncoderModel(_t5_config(T5Config, t5_tok))),
        vae=_autoencoder_kl(seed, SDXL_VAE_SCALING_FACTOR),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )


def _qwen_text_encoder(seed: int, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    """A tiny Qwen2.5-VL (text + vision tower) whose special token ids match ``tokenizer``."""
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": QWEN_TEXT_HIDDEN,
            "intermediate_size": MLP_RATIO * QWEN_TEXT_HIDDEN,
            "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": TEXT_HEADS,
            "num_key_value_heads": TEXT_HEADS,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": list(QWEN_MROPE_SECTION),
                "rope_theta": QWEN_ROPE_THETA,
            },
            "bos_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": TEXT_LAYERS,
            "hidden_size": QWEN_VISION_HIDDEN,
            "intermediate_size": MLP_RATIO * QWEN_VISION_HIDDEN,
            "num_heads": TEXT_HEADS,
            "out_hidden_size": QWEN_TEXT_HIDDEN,
            "patch_size": QWEN_VISION_PATCH,
            "spatial_merge_size": QWEN_VISION_MERGE,
            "temporal_patch_size": QWEN_VISION_TEMPORAL_PATCH,
            "fullatt_block_indexes": [TEXT_LAYERS - 1],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return _seeded(seed, lambda: Qwen2_5_VLForConditionalGeneration(config))


def _qwen_components(seed: int) -> dict[str, Any]:
    """Components shared by Qwen-Image and Qwen-Image-Edit (same transformer, VAE, text encoder)."""
    tokenizer = _qwen_tokenizer()
    transformer = _seeded(
        seed,
        lambda: QwenImageTransformer2DModel(
            patch_size=PATCH_SIZE,
            in_channels=LATENT_CHANNELS * PATCH_SIZE**2,
            out_channels=LATENT_CHANNELS,
            num_layers=NUM_LAYERS,
            attention_head_dim=HEAD_DIM,
            num_attention_heads=NUM_HEADS,
            joint_attention_dim=QWEN_TEXT_HIDDEN,
            axes_dims_rope=ROPE_AXES_DIMS,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLQwenImage(
            base_dim=QWEN_VAE_BASE_DIM,
            z_dim=LATENT_CHANNELS,
            dim_mult=list(QWEN_VAE_DIM_MULT),
            num_res_blocks=QWEN_VAE_NUM_RES_BLOCKS,
            temperal_downsample=list(QWEN_VAE_TEMPORAL_DOWNSAMPLE),
            latents_mean=[0.0] * LATENT_CHANNELS,
            latents_std=[1.0] * LATENT_CHANNELS,
        ),
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        "vae": vae,
        "text_encoder": _qwen_text_encoder(seed, tokenizer),
        "tokenizer": tokenizer,
        "transformer": transformer,
    }


def _build_qwen_image(seed: int) -> DiffusionPipeline:
    """Qwen-Image: MMDiT conditioned on the last hidden state of a Qwen2.5-VL language model."""
    return QwenImagePipeline(**_qwen_components(seed))


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without its video slot, so it can be built when torchvision is absent.

    In transformers 5, ``video_processor`` is a mandatory processor attribute (taken from the
    ``__init__`` signature) and ``ProcessorMixin.__init__`` validates it by resolving the class name
    ``VideoProcessorMixin``; that name is not exported at the top level, so the lookup falls back
    to ``VIDEO_PROCESSOR_MAPPING._extra_content``, and without torchvision that mapping is a
    placeholder object, so ``Qwen2VLProcessor(...)`` raises ``AttributeError`` whatever is passed
    (the concrete ``Qwen2VLVideoProcessor`` also imports torchvision). Qwen-Image-Edit only feeds
    images and text to its processor, so dropping the video slot changes no behaviour: every
    method is inherited.

    ``save_pretrained`` records it as ``["ditaccel.testing", "ImageOnlyQwen2VLProcessor"]``;
    ``from_pretrained`` then imports this module and finds its load method by looking up the
    loadable base classes (``ProcessorMixin``) *in this module's namespace*, which is why
    ``ProcessorMixin`` is imported here.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def _qwen_processor(tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    """The VL processor of Qwen-Image-Edit: PIL image processor (no torchvision) + ``tokenizer``.

    The vision tower always sees a ``QWEN_VISION_SIDE`` square image (min = max pixels), i.e.
    4x4 patches merged into 4 image tokens, whatever size the pipeline hands over.
    """
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=QWEN_VISION_PATCH,
        temporal_patch_size=QWEN_VISION_TEMPORAL_PATCH,
        merge_size=QWEN_VISION_MERGE,
        min_pixels=QWEN_VISION_SIDE**2,
        max_pixels=QWEN_VISION_SIDE**2,
    )
    return ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _build_qwen_image_edit(seed: int) -> DiffusionPipeline:
    """Qwen-Image-Edit: Qwen-Image plus a VL processor so the text encoder also sees the image."""
    components = _qwen_components(seed)
    processor = _qwen_processor(components["tokenizer"])
    return QwenImageEditPipeline(processor=processor, **components)


def _build_wan(seed: int) -> DiffusionPipeline:
    """Wan 2.1 text-to-video: 3D DiT with UMT5 cross-attention and a causal 3D VAE."""
    tokenizer = _t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: WanTransformer3DModel(
            patch_size=(1, PATCH_SIZE, PATCH_SIZE),
            num_attention_heads=NUM_HEADS,
            attention_head_dim=HEAD_DIM,
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            text_dim=T5_D_MODEL,
            freq_dim=WAN_FREQ_DIM,
            ffn_dim=FFN_DIM,
            num_layers=NUM_LAYERS,
            rope_max_seq_len=WAN_ROPE_MAX_SEQ_LEN,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLWan(
            base_dim=WAN_VAE_BASE_DIM,
            z_dim=LATENT_CHANNELS,
            dim_mult=list(WAN_VAE_DIM_MULT),
            num_res_blocks=1,
            temperal_downsample=list(WAN_VAE_TEMPORAL_DOWNSAMPLE),
            latents_mean=[0.0] * LATENT_CHANNELS,
            latents_std=[1.0] * LATENT_CHANNELS,
            scale_factor_spatial=WAN_VAE_SPATIAL_SCALE,
            scale_factor_temporal=WAN_VAE_TEMPORAL_SCALE,
        ),
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=WAN_FLOW_SHIFT
    )
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: UMT5EncoderModel(_t5_config(UMT5Config, tokenizer))),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def _build_dit(seed: int) -> DiffusionPipeline:
    """DiT: class-conditional DiT with adaLN-zero; DDIM on purpose (a scheduler with no step_index)."""
    transformer = _seeded(
        seed,
        lambda: DiTTransformer2DModel(
            num_attention_heads=NUM_HEADS,
            attention_head_dim=HEAD_DIM,
            in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS,  # learned sigma: the pipeline keeps the first half
            num_layers=NUM_LAYERS,
            sample_size=IMAGE_SIZE // VAE_SPATIAL_SCALE,
            patch_size=PATCH_SIZE,
            num_embeds_ada_norm=DIT_NUM_CLASSES,
        ),
    )
    return DiTPipeline(
        transformer=transformer,
        vae=_autoencoder_kl(seed, SD_VAE_SCALING_FACTOR),
        scheduler=DDIMScheduler(),
        id2label=dict(DIT_ID2LABEL),
    )


_BUILDERS: dict[str, Callable[[int], DiffusionPipeline]] = {
    "tiny-random-flux": _build_flux,
    "tiny-random-flux-kontext": _build_flux_kontext,
    "tiny-random-flux-fill": _build_flux_fill,
    "tiny-random-flux-controlnet": _build_flux_controlnet,
    "tiny-random-sd3": _build_sd3,
    "tiny-random-sd3-controlnet": _build_sd3_controlnet,
    "tiny-random-pixart": _build_pixart,
    "tiny-random-qwen-image": _build_qwen_image,
    "tiny-random-qwen-image-edit": _build_qwen_image_edit,
    "tiny-random-wan": _build_wan,
    "tiny-random-dit": _build_dit,
}


def _check_name(name: str) -> None:
    """Raise ``ValueError`` naming the valid choices if ``name`` is not a tiny model."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; choose one of: {', '.join(TINY_MODELS)}")


# ==============================================================================================
# Public API
# ==============================================================================================


def tiny_pipeline(name: str, *, seed: int = 0, torch_dtype: torch.dtype = torch.float32) -> DiffusionPipeline:
    """Build the tiny random-weight pipeline ``name`` (one of :data:`TINY_MODELS`), fully offline.

    The result is the real diffusers pipeline class with all its components, so it exercises the
    same code paths as a released checkpoint. Weights depend only on ``seed`` (the global RNG is
    reseeded before each module is built), so two builds with the same seed are identical.
    Modules are built in float32 and then cast to ``torch_dtype``. Progress bars are left at the
    diffusers default. Raises ``ValueError`` for an unknown name.
    """
    _check_name(name)
    pipe = _BUILDERS[name](seed)
    if torch_dtype != torch.float32:
        pipe.to(dtype=torch_dtype)
    return pipe


def _example_image(size: int) -> Image.Image:
    """A deterministic RGB test image: a red disc on a light grey background."""
    image = Image.new("RGB", (size, size), (230, 230, 230))
    margin = size // 4
    ImageDraw.Draw(image).ellipse((margin, margin, size - margin, size - margin), fill=(220, 30, 30))
    return image


def _example_mask(size: int) -> Image.Image:
    """A deterministic inpainting mask: white (repaint) central square on black (keep)."""
    mask = Image.new("L", (size, size), 0)
    margin = size // 4
    ImageDraw.Draw(mask).rectangle((margin, margin, size - margin - 1, size - margin - 1), fill=255)
    return mask


def _family_kwargs(name: str) -> dict[str, Any]:
    """The pipeline-specific part of :func:`example_call` (sizes, images, guidance settings)."""
    t5_len = {"max_sequence_length": EXAMPLE_MAX_SEQUENCE_LENGTH}
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    qwen_square = {"height": QWEN_IMAGE_SIZE, "width": QWEN_IMAGE_SIZE}
    qwen_cfg = {"negative_prompt": " ", "true_cfg_scale": CFG_SCALE}
    if name == "tiny-random-flux":
        return {"prompt": EXAMPLE_PROMPT, **square, **t5_len}
    if name == "tiny-random-flux-kontext":
        # Kontext resizes the output to `max_area` (default 1024**2) and, with `_auto_resize`,
        # the input image to a preferred Kontext resolution; both would defeat a tiny call.
        return {
            "prompt": EXAMPLE_PROMPT,
            "image": _example_image(IMAGE_SIZE),
            "max_area": IMAGE_SIZE * IMAGE_SIZE,
            "_auto_resize": False,
            **square,
            **t5_len,
        }
    if name == "tiny-random-flux-fill":
        return {
            "prompt": EXAMPLE_PROMPT,
            "image": _example_image(IMAGE_SIZE),
            "mask_image": _example_mask(IMAGE_SIZE),
            "guidance_scale": FLUX_FILL_GUIDANCE,
            **square,
            **t5_len,
        }
    if name == "tiny-random-flux-controlnet":
        return {"prompt": EXAMPLE_PROMPT, "control_image": _example_image(IMAGE_SIZE), **square, **t5_len}
    if name == "tiny-random-sd3":
        return {"prompt": EXAMPLE_PROMPT, "guidance_scale": CFG_SCALE, **square, **t5_len}
    if name == "tiny-random-sd3-controlnet":
        return {
            "prompt": EXAMPLE_PROMPT,
            "control_image": _example_image(IMAGE_SIZE),
            "guidance_scale": CFG_SCALE,
            **square,
            **t5_len,
        }
    if name == "tiny-random-pixart":
        return {
            "prompt": EXAMPLE_PROMPT,
            "guidance_scale": CFG_SCALE,
            "use_resolution_binning": False,  # binning only knows the real sample sizes
            "clean_caption": False,  # needs bs4/ftfy; off keeps the call quiet and exact
            **square,
            **t5_len,
        }
    if name == "tiny-random-qwen-image":
        return {"prompt": EXAMPLE_PROMPT, **qwen_cfg, **qwen_square}
    if name == "tiny-random-qwen-image-edit":
        return {"prompt": EXAMPLE_PROMPT, "image": _example_image(QWEN_IMAGE_SIZE), **qwen_cfg, **qwen_square}
    if name == "tiny-random-wan":
        return {
            "prompt": EXAMPLE_PROMPT,
            "height": WAN_SIZE,
            "width": WAN_SIZE,
            "num_frames": WAN_NUM_FRAMES,
            "guidance_scale": CFG_SCALE,
            **t5_len,
        }
    # tiny-random-dit
    return {"class_labels": [0], "guidance_scale": CFG_SCALE}


def example_call(name: str, *, steps: int = 2, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for a quick, valid, deterministic call of ``tiny_pipeline(name)``.

    Use as ``pipe(**example_call(name))``. Contains the prompt (``class_labels`` for DiT), the
    smallest output size that gives the transformer >= 16 image tokens, ``num_inference_steps=steps``,
    a CPU ``generator`` seeded with ``seed``, ``output_type="np"``, plus what the family needs:
    a small PIL ``image`` (Kontext, Qwen-Image-Edit), ``image`` + ``mask_image`` (Fill),
    ``num_frames`` (Wan), ``use_resolution_binning=False`` (PixArt), a short T5
    ``max_sequence_length``, and guidance settings that exercise classifier-free guidance where the
    pipeline has it (batched cond/uncond for SD3, PixArt and DiT; separate passes for Wan and, via
    ``true_cfg_scale`` + ``negative_prompt``, Qwen-Image). ``overrides`` replace entries.
    """
    _check_name(name)
    kwargs: dict[str, Any] = {
        **_family_kwargs(name),
        "num_inference_steps": steps,
        "generator": torch.Generator("cpu").manual_seed(seed),
        "output_type": "np",
    }
    kwargs.update(overrides)
    return kwargs


def synthetic_profile(pipeline: Any, steps: int = 4, seed: int = 0, **fields: Any):
    """A calibration profile of ``pipeline``'s own block layout with made-up numbers (uniform
    change, random reuse errors from ``seed``), its plans made: for tests of what reads profiles.
    ``fields`` replace any of the profile's fields (e.g. attention layers, or ``tensors={}``)."""
    from .calibration import plan_all
    from .calibration.profile import Profile, fingerprint
    from .hooks.block_range import flat_blocks
    from .pipelines import adapter_for

    adapter = adapter_for(pipeline)
    denoiser = adapter.denoisers()[0]
    blocks = [block.name for block in flat_blocks(adapter, denoiser)]
    n = len(blocks)
    generator = torch.Generator().manual_seed(seed)
    values: dict[str, Any] = dict(
        model="tiny", pipeline=type(pipeline).__name__, steps=steps, prompts=1, blocks=blocks,
        block_change=[[0.0] * n] + [[0.1] * n] * (steps - 1), block_change_cv=[[0.0] * n] * steps,
        fingerprint=fingerprint(denoiser.config), block_gflops=[1.0] * n, forward_gflops=float(n),
        tensors={"reuse_error_order0": torch.rand(n, steps, 3, generator=generator),
                 "reuse_error_order1": torch.rand(n, steps, 3, 3, generator=generator)},
    )  # fmt: skip
    return plan_all(Profile(**{**values, **fields}))
