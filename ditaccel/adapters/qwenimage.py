"""Qwen-Image and Qwen-Image-Edit: joint-attention MMDiT blocks, text tokens first.

The image stream holds the generated latents followed by the reference image's latents (edit);
``img_shapes`` gives each image's (frames, rows, cols) grid, the generated one first. True CFG
runs cond and uncond as separate forwards.
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


class QwenImageAdapter(Adapter):
    family = "qwen-image"
    tasks = {"QwenImagePipeline": "t2i", "QwenImageEditPipeline": "edit"}

    def block_groups(self, denoiser: nn.Module) -> list[BlockGroup]:
        io = BlockIO(hidden_out=1, encoder_out=0)
        return [BlockGroup("transformer_blocks", denoiser.transformer_blocks, io, "joint")]

    def attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        return [
            AttentionSite(
                f"transformer_blocks.{i}.attn", block.attn, "joint", f"transformer_blocks.{i}", True
            )
            for i, block in enumerate(denoiser.transformer_blocks)
        ]

    def token_layout(self, denoiser, args, kwargs) -> TokenLayout:
        hidden = self.argument("hidden_states", 0, args, kwargs)
        text = self.argument("encoder_hidden_states", 1, args, kwargs)
        shapes = self.argument("img_shapes", 4, args, kwargs)
        frames, rows, cols = (int(v) for v in shapes[0][0])
        image = frames * rows * cols
        return TokenLayout(
            image=image,
            reference=hidden.shape[1] - image,
            text=text.shape[1],
            text_in_sequence=True,
            grid=(frames, rows, cols),
        )

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        return self.true_cfg_mode(call_kwargs)

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = self._common_call(request)
        kwargs["prompt"] = request.prompt
        if request.mask is not None:
            raise ValueError(f"{type(self.pipeline).__name__} takes no mask")
        if self.task == "edit":
            if request.image is None:
                raise ValueError("QwenImageEditPipeline edits an image: pass --image")
            kwargs["image"] = request.image
        if "guidance_scale" in kwargs:
            kwargs["true_cfg_scale"] = kwargs.pop("guidance_scale")
        return kwargs
