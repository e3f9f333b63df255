"""PixArt-Sigma (and -Alpha): self-attention over image tokens, text by cross-attention.

CFG is batched as [uncond, cond] in one forward.
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
)


class PixArtAdapter(Adapter):
    family = "pixart"
    tasks = {"PixArtSigmaPipeline": "t2i", "PixArtAlphaPipeline": "t2i"}

    def block_groups(self, denoiser: nn.Module) -> list[BlockGroup]:
        io = BlockIO(encoder_arg=None, encoder_pos=2)
        return [BlockGroup("transformer_blocks", denoiser.transformer_blocks, io, "image")]

    def attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        sites = []
        for i, block in enumerate(denoiser.transformer_blocks):
            name = f"transformer_blocks.{i}"
            sites.append(AttentionSite(f"{name}.attn1", block.attn1, "self", name))
            sites.append(AttentionSite(f"{name}.attn2", block.attn2, "cross", name))
        return sites

    def token_layout(self, denoiser, args, kwargs) -> TokenLayout:
        hidden = self.argument("hidden_states", 0, args, kwargs)
        text = self.argument("encoder_hidden_states", 1, args, kwargs)
        grid = self.patch_grid(hidden, denoiser.config.patch_size)
        return TokenLayout(image=grid[1] * grid[2], text=text.shape[1], grid=grid)

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        return self.batched_cfg_mode(call_kwargs, ("uncond", "cond"))

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        return {**self._common_call(request), "prompt": request.prompt}
