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
    call_default,
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
        patch = denoiser.config.patch_size
        rows, cols = hidden.shape[-2] // patch, hidden.shape[-1] // patch
        return TokenLayout(image=rows * cols, text=text.shape[1], grid=(1, rows, cols))

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        scale = call_default(self.pipeline, "guidance_scale", call_kwargs)
        return CFGMode(batched=("uncond", "cond") if scale > 1 else ())

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        return {**self._common_call(request), "prompt": request.prompt}
