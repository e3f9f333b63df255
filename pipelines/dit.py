"""DiT (class-conditional, Peebles & Xie): self-attention over image tokens, no text.

CFG is batched as [cond, uncond] (the null class last). A prompt names classes by their labels.
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


class DiTAdapter(Adapter):
    family = "dit"
    tasks = {"DiTPipeline": "class"}

    def block_groups(self, denoiser: nn.Module) -> list[BlockGroup]:
        io = BlockIO(encoder_arg=None)
        return [BlockGroup("transformer_blocks", denoiser.transformer_blocks, io, "image")]

    def attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        return [
            AttentionSite(f"transformer_blocks.{i}.attn1", block.attn1, "self", f"transformer_blocks.{i}")
            for i, block in enumerate(denoiser.transformer_blocks)
        ]

    def token_layout(self, denoiser, args, kwargs) -> TokenLayout:
        hidden = self.argument("hidden_states", 0, args, kwargs)
        grid = self.patch_grid(hidden, denoiser.config.patch_size)
        return TokenLayout(image=grid[1] * grid[2], grid=grid)

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        return self.batched_cfg_mode(call_kwargs, ("cond", "uncond"))

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        if request.image is not None or request.mask is not None:
            raise ValueError("DiTPipeline is class-conditional: it takes no image or mask")
        vae_scale = 2 ** (len(self.pipeline.vae.config.block_out_channels) - 1)
        native = self.pipeline.transformer.config.sample_size * vae_scale
        for side in (request.height, request.width):
            if side is not None and side != native:
                raise ValueError(
                    f"DiT generates at its native {native}x{native}; got {request.height}x{request.width}"
                )
        labels = [word.strip() for word in request.prompt.split(",") if word.strip()]
        if not labels:
            raise ValueError(f"DiT needs class labels as the prompt, one of: {sorted(self.pipeline.labels)}")
        kwargs = self._common_call(request)
        for name in ("height", "width", "negative_prompt"):
            kwargs.pop(name, None)
        kwargs["class_labels"] = self.pipeline.get_label_ids(labels)
        return kwargs
