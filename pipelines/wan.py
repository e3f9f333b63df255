"""Wan 2.x text-to-video: self-attention over frame x row x col tokens, text by cross-attention.

Wan 2.2 may carry a second transformer for low-noise steps; both are denoisers. CFG runs cond
and uncond as separate forwards.
"""

from __future__ import annotations

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
    call_default,
)


class WanAdapter(Adapter):
    family = "wan"
    tasks = {"WanPipeline": "t2v"}

    def denoisers(self) -> list[nn.Module]:
        second = getattr(self.pipeline, "transformer_2", None)
        return [m for m in (self.pipeline.transformer, second) if m is not None]

    def block_groups(self, denoiser: nn.Module) -> list[BlockGroup]:
        io = BlockIO(encoder_arg=None)
        return [BlockGroup("blocks", denoiser.blocks, io, "image")]

    def attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        sites = []
        for i, block in enumerate(denoiser.blocks):
            sites.append(AttentionSite(f"blocks.{i}.attn1", block.attn1, "self", f"blocks.{i}"))
            sites.append(AttentionSite(f"blocks.{i}.attn2", block.attn2, "cross", f"blocks.{i}"))
        return sites

    def token_layout(self, denoiser, args, kwargs) -> TokenLayout:
        hidden = self.argument("hidden_states", 0, args, kwargs)
        text = self.argument("encoder_hidden_states", 2, args, kwargs)
        pt, ph, pw = denoiser.config.patch_size
        grid = (hidden.shape[2] // pt, hidden.shape[3] // ph, hidden.shape[4] // pw)
        return TokenLayout(image=grid[0] * grid[1] * grid[2], text=text.shape[1], grid=grid)

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        scale = call_default(self.pipeline, "guidance_scale", call_kwargs)
        return CFGMode(separate=bool(scale > 1))

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        if request.image is not None or request.mask is not None:
            raise ValueError("WanPipeline is text-to-video: it takes no image or mask")
        kwargs = self._common_call(request)
        kwargs["prompt"] = request.prompt
        if kwargs.get("output_type") == "pil":
            kwargs["output_type"] = "np"
        return kwargs
