"""Stable Diffusion 3 / 3.5: joint-attention MMDiT blocks, image tokens before text tokens;
StableDiffusion3ControlNetPipeline adds ControlNet residuals to the image stream after the blocks.

The last block is ``context_pre_only`` and returns no text stream. CFG is batched as
[uncond, cond] in one forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

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


class SD3Adapter(Adapter):
    family = "sd3"
    tasks = {"StableDiffusion3Pipeline": "t2i", "StableDiffusion3ControlNetPipeline": "control"}

    def block_groups(self, denoiser: nn.Module) -> list[BlockGroup]:
        io = BlockIO(hidden_out=1, encoder_out=0)
        return [BlockGroup("transformer_blocks", denoiser.transformer_blocks, io, "joint")]

    def attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        sites = []
        for i, block in enumerate(denoiser.transformer_blocks):
            name = f"transformer_blocks.{i}"
            sites.append(AttentionSite(f"{name}.attn", block.attn, "joint", name, False))
            if getattr(block, "attn2", None) is not None:
                sites.append(AttentionSite(f"{name}.attn2", block.attn2, "self", name))
        return sites

    def token_layout(self, denoiser, args, kwargs) -> TokenLayout:
        hidden = self.argument("hidden_states", 0, args, kwargs)
        text = self.argument("encoder_hidden_states", 1, args, kwargs)
        grid = self.patch_grid(hidden, denoiser.config.patch_size)
        return TokenLayout(image=grid[1] * grid[2], text=text.shape[1], text_in_sequence=True, grid=grid)

    def block_additions(self, denoiser, args, kwargs):
        samples = kwargs.get("block_controlnet_hidden_states")
        if samples is None:
            return None
        blocks = denoiser.transformer_blocks
        interval = len(blocks) / len(samples)  # the arithmetic of SD3Transformer2DModel.forward
        return {
            i: samples[int(i / interval)] for i, block in enumerate(blocks) if block.context_pre_only is False
        }

    def text_subset_support(self, denoiser):
        return None

    @contextmanager
    def without_text(self, denoiser, args, kwargs):
        if args:
            raise ValueError("SD3 transformer called positionally; token methods need keyword arguments")
        yield args, {**kwargs, "encoder_hidden_states": kwargs["encoder_hidden_states"][:, :0]}

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        return self.batched_cfg_mode(call_kwargs, ("uncond", "cond"))

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = {**self._common_call(request), "prompt": request.prompt}
        if self.task != "control" and request.image is not None:
            raise ValueError(f"{type(self.pipeline).__name__} takes no image")
        return kwargs
