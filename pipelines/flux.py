"""FLUX.1 family: FluxPipeline, FluxKontextPipeline (reference image), FluxFillPipeline (mask),
FluxControlNetPipeline (ControlNet residuals added to the image stream after the blocks).

Double-stream blocks keep text and image apart and attend jointly, text first; single-stream
blocks see the concatenated [text, image] sequence. Kontext appends reference-image tokens after
the generated ones and marks them with a first position id of 1.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .base import (
    Adapter,
    AttentionSite,
    BlockGroup,
    BlockIO,
    CFGMode,
    GenerationRequest,
    TokenLayout,
)

_FLUX_IO = BlockIO(hidden_out=1, encoder_out=0)
TRUE_CFG_SCALE = 4.0  # used when a negative prompt is given without a scale (Qwen-Image's default)


class FluxAdapter(Adapter):
    family = "flux"
    tasks = {
        "FluxPipeline": "t2i",
        "FluxKontextPipeline": "edit",
        "FluxFillPipeline": "inpaint",
        "FluxControlNetPipeline": "control",
    }

    def __init__(self, pipeline) -> None:
        super().__init__(pipeline)
        # The pipeline makes img_ids once per call; reading its values is a device sync, so the
        # layout is derived once per ids tensor (and stream lengths), not once per forward.
        self._layout_key: tuple | None = None
        self._layout: TokenLayout | None = None

    def block_groups(self, denoiser: nn.Module) -> list[BlockGroup]:
        return [
            BlockGroup("transformer_blocks", denoiser.transformer_blocks, _FLUX_IO, "joint"),
            BlockGroup("single_transformer_blocks", denoiser.single_transformer_blocks, _FLUX_IO, "single"),
        ]

    def attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        sites = [
            AttentionSite(
                f"transformer_blocks.{i}.attn", block.attn, "joint", f"transformer_blocks.{i}", True
            )
            for i, block in enumerate(denoiser.transformer_blocks)
        ]
        sites += [
            AttentionSite(
                f"single_transformer_blocks.{i}.attn",
                block.attn,
                "self",
                f"single_transformer_blocks.{i}",
                True,
            )
            for i, block in enumerate(denoiser.single_transformer_blocks)
        ]
        return sites

    def token_layout(self, denoiser, args, kwargs) -> TokenLayout:
        hidden = self.argument("hidden_states", 0, args, kwargs)
        text = self.argument("encoder_hidden_states", 1, args, kwargs)
        ids = kwargs.get("img_ids")
        if ids is None:
            raise ValueError("FLUX transformer called without img_ids; cannot place image tokens")
        key = (ids, hidden.shape[1], text.shape[1])
        cached = self._layout_key
        if cached is not None and cached[0] is ids and cached[1:] == key[1:]:
            return self._layout
        ids = ids[0] if ids.ndim == 3 else ids
        is_target = ids[:, 0] == 0
        n_target, rows, cols = (
            int(v) for v in (is_target.sum(), ids[is_target, 1].max() + 1, ids[is_target, 2].max() + 1)
        )
        reference = ids[~is_target]
        reference_grid = None
        if len(reference) and bool((reference[:, 0] == reference[0, 0]).all()):  # a single reference
            shape = tuple(int(v) for v in reference[:, 1:].amax(0) - reference[:, 1:].amin(0) + 1)
            reference_grid = shape if shape[0] * shape[1] == len(reference) else None
        self._layout_key = key
        self._layout = TokenLayout(
            image=n_target,
            reference=hidden.shape[1] - n_target,
            text=text.shape[1],
            text_in_sequence=True,
            grid=(1, rows, cols),
            reference_grid=reference_grid,
        )
        return self._layout

    def block_additions(self, denoiser, args, kwargs):
        double, single = kwargs.get("controlnet_block_samples"), kwargs.get("controlnet_single_block_samples")
        n_double = len(denoiser.transformer_blocks)
        additions = {}
        if double is not None:  # the index arithmetic of FluxTransformer2DModel.forward
            interval = int(math.ceil(n_double / len(double)))
            repeat = kwargs.get("controlnet_blocks_repeat", False)
            for i in range(n_double):
                additions[i] = double[i % len(double)] if repeat else double[i // interval]
        if single is not None:
            interval = int(math.ceil(len(denoiser.single_transformer_blocks) / len(single)))
            for i in range(len(denoiser.single_transformer_blocks)):
                additions[n_double + i] = single[i // interval]
        return additions or None

    def image_subset_support(self, denoiser):
        return None

    @contextmanager
    def image_subset(self, denoiser, args, kwargs, index):
        if args:
            raise ValueError("FLUX transformer called positionally; region methods need keyword arguments")
        ids = kwargs["img_ids"]
        yield (
            args,
            {
                **kwargs,
                "hidden_states": kwargs["hidden_states"][:, index],
                "img_ids": ids[:, index] if ids.ndim == 3 else ids[index],
            },
        )

    def block_rows_support(self, denoiser):
        return None

    def block_rows(self, denoiser, args, kwargs, index, text, first):
        """Both block kinds take the image stream as ``hidden_states`` and one rotary table (cos,
        sin) over text + image stream rows."""
        if args:
            raise ValueError("FLUX block called positionally; token methods need keyword arguments")
        hidden = kwargs["hidden_states"]
        rows = torch.cat([torch.arange(text, device=index.device), text + index])
        cos, sin = kwargs["image_rotary_emb"]
        if first:
            hidden = hidden[:, index]
        return args, {**kwargs, "hidden_states": hidden, "image_rotary_emb": (cos[rows], sin[rows])}

    def attention_cut_support(self, denoiser, block):
        from diffusers.models.transformers.transformer_flux import FluxTransformerBlock

        if type(block) is not FluxTransformerBlock:
            return "only FLUX's double-stream blocks run their MLP after their attention"
        return None

    def block_cut_after_attention(self, denoiser, block, args, kwargs, rows):
        """``FluxTransformerBlock.forward`` (diffusers 0.42) with the image stream cut to ``rows()``
        between the attention and the output residual; the text stream is untouched."""
        if args:
            raise ValueError("FLUX block called positionally; token methods need keyword arguments")
        hidden, text, temb = kwargs["hidden_states"], kwargs["encoder_hidden_states"], kwargs["temb"]
        norm_hidden, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1(hidden, emb=temb)
        norm_text, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = block.norm1_context(text, emb=temb)
        attn_output, text_attn_output, *ip_output = block.attn(
            hidden_states=norm_hidden,
            encoder_hidden_states=norm_text,
            image_rotary_emb=kwargs.get("image_rotary_emb"),
            **(kwargs.get("joint_attention_kwargs") or {}),
        )
        index = rows()
        hidden = hidden[:, index] + gate_msa.unsqueeze(1) * attn_output[:, index]
        norm_hidden = block.norm2(hidden) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        hidden = hidden + gate_mlp.unsqueeze(1) * block.ff(norm_hidden)
        for extra in ip_output:
            hidden = hidden + extra[:, index]
        text = text + c_gate_msa.unsqueeze(1) * text_attn_output
        norm_text = block.norm2_context(text) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        text = text + c_gate_mlp.unsqueeze(1) * block.ff_context(norm_text)
        if text.dtype == torch.float16:
            text = text.clip(-65504, 65504)
        return text, hidden

    def text_subset_support(self, denoiser):
        return None

    @contextmanager
    def without_text(self, denoiser, args, kwargs):
        if args:
            raise ValueError("FLUX transformer called positionally; token methods need keyword arguments")
        ids = kwargs["txt_ids"]
        text = kwargs["encoder_hidden_states"]
        yield args, {**kwargs, "encoder_hidden_states": text[:, :0], "txt_ids": ids[..., :0, :]}

    def noisy_latents(self, denoiser, args, kwargs):
        latents = super().noisy_latents(denoiser, args, kwargs)
        return latents[..., : denoiser.out_channels]  # Fill: [latents | masked image | mask]

    def source_latents(self, denoiser, args, kwargs):
        if self.task != "inpaint":
            return super().source_latents(denoiser, args, kwargs)
        hidden = self.argument("hidden_states", 0, args, kwargs)  # [latents | masked image | mask]
        channels, image = denoiser.out_channels, self.token_layout(denoiser, args, kwargs).image
        return hidden[:, :image, channels : 2 * channels]

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        return self.true_cfg_mode(call_kwargs)

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = self._common_call(request)
        kwargs["prompt"] = request.prompt
        if self.task in ("edit", "inpaint") and request.image is None:
            raise ValueError(f"{type(self.pipeline).__name__} edits an image: pass --image")
        if self.task == "edit":
            kwargs["image"] = request.image
            if request.height and request.width:
                kwargs.setdefault("max_area", request.height * request.width)
                kwargs.setdefault("_auto_resize", False)
        if self.task == "inpaint":
            if request.mask is None:
                raise ValueError("FluxFillPipeline needs a mask: pass --mask")
            kwargs["image"], kwargs["mask_image"] = request.image, request.mask
        elif request.mask is not None:
            raise ValueError(f"{type(self.pipeline).__name__} takes no mask")
        if self.task == "inpaint":  # FluxFillPipeline has no true CFG
            kwargs.pop("negative_prompt", None)
            return kwargs
        if not self.pipeline.transformer.config.guidance_embeds and "guidance_scale" in kwargs:
            # no distilled guidance: the guidance scale is that of true CFG, against "" by default
            kwargs["true_cfg_scale"] = kwargs.pop("guidance_scale")
            kwargs.setdefault("negative_prompt", "")
        elif "negative_prompt" in kwargs:
            kwargs.setdefault("true_cfg_scale", TRUE_CFG_SCALE)
        return kwargs
