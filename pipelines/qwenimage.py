"""Qwen-Image and Qwen-Image-Edit: joint-attention MMDiT blocks, text tokens first.

The image stream holds the generated latents followed by the reference image's latents (edit);
``img_shapes`` gives each image's (frames, rows, cols) grid, the generated one first. True CFG
runs cond and uncond as separate forwards.
"""

from __future__ import annotations

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
        references = [tuple(int(v) for v in shape) for shape in shapes[0][1:]]
        single = len(references) == 1 and references[0][0] == 1
        return TokenLayout(
            image=image,
            reference=hidden.shape[1] - image,
            text=text.shape[1],
            text_in_sequence=True,
            grid=(frames, rows, cols),
            reference_grid=references[0][1:] if single else None,
        )

    def image_subset_support(self, denoiser):
        if getattr(denoiser.config, "zero_cond_t", False):
            return "Qwen-Image transformers with zero_cond_t modulate by token position; no token subsets"
        return None

    @contextmanager
    def image_subset(self, denoiser, args, kwargs, index):
        """The image rotary embedding is computed inside the forward from ``img_shapes``: a hook on
        this transformer's ``pos_embed`` keeps the rows of the chosen tokens while the call runs."""
        if args:
            raise ValueError(
                "Qwen-Image transformer called positionally; region methods need keyword arguments"
            )
        if (reason := self.image_subset_support(denoiser)) is not None:
            raise ValueError(reason)

        def gather(_module, _inputs, output):
            image_freqs, text_freqs = output
            return image_freqs[index.to(image_freqs.device)], text_freqs

        handle = denoiser.pos_embed.register_forward_hook(gather)
        try:
            yield args, {**kwargs, "hidden_states": kwargs["hidden_states"][:, index]}
        finally:
            handle.remove()

    def block_rows_support(self, denoiser):
        return self.image_subset_support(denoiser)

    def block_rows(self, denoiser, args, kwargs, index, text, first):
        """Blocks take the image stream as ``hidden_states`` and ``image_rotary_emb`` as (image
        frequencies, text frequencies)."""
        if args:
            raise ValueError("Qwen-Image block called positionally; token methods need keyword arguments")
        if (reason := self.block_rows_support(denoiser)) is not None:
            raise ValueError(reason)
        hidden = kwargs["hidden_states"]
        image_freqs, text_freqs = kwargs["image_rotary_emb"]
        if first:
            hidden = hidden[:, index]
        rotary = (image_freqs[index.to(image_freqs.device)], text_freqs)
        return args, {**kwargs, "hidden_states": hidden, "image_rotary_emb": rotary}

    def attention_cut_support(self, denoiser, block):
        from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformerBlock

        if type(block) is not QwenImageTransformerBlock:
            return "not a Qwen-Image double-stream block"
        return self.block_rows_support(denoiser)  # (per-token modulation: zero_cond_t)

    def block_cut_after_attention(self, denoiser, block, args, kwargs, rows):
        """``QwenImageTransformerBlock.forward`` (diffusers 0.42, one modulation per sample) with the
        image stream cut to ``rows()`` between the attention and the output residual."""
        if args:
            raise ValueError("Qwen-Image block called positionally; token methods need keyword arguments")
        if kwargs.get("modulate_index") is not None:
            raise ValueError(
                "Qwen-Image per-token modulation (zero_cond_t) cannot be cut after the attention"
            )
        hidden, text, temb = kwargs["hidden_states"], kwargs["encoder_hidden_states"], kwargs["temb"]
        img_mod1, img_mod2 = block.img_mod(temb).chunk(2, dim=-1)
        txt_mod1, txt_mod2 = block.txt_mod(temb).chunk(2, dim=-1)
        img_modulated, img_gate1 = block._modulate(block.img_norm1(hidden), img_mod1)
        txt_modulated, txt_gate1 = block._modulate(block.txt_norm1(text), txt_mod1)
        img_attn_output, txt_attn_output = block.attn(
            hidden_states=img_modulated,
            encoder_hidden_states=txt_modulated,
            encoder_hidden_states_mask=kwargs.get("encoder_hidden_states_mask"),
            image_rotary_emb=kwargs.get("image_rotary_emb"),
            **(kwargs.get("joint_attention_kwargs") or {}),
        )
        index = rows()
        hidden = hidden[:, index] + img_gate1 * img_attn_output[:, index]
        text = text + txt_gate1 * txt_attn_output
        img_modulated2, img_gate2 = block._modulate(block.img_norm2(hidden), img_mod2)
        hidden = hidden + img_gate2 * block.img_mlp(img_modulated2)
        txt_modulated2, txt_gate2 = block._modulate(block.txt_norm2(text), txt_mod2)
        text = text + txt_gate2 * block.txt_mlp(txt_modulated2)
        if text.dtype == torch.float16:
            text = text.clip(-65504, 65504)
        if hidden.dtype == torch.float16:
            hidden = hidden.clip(-65504, 65504)
        return text, hidden

    text_rows_kept = 1  # its rotary embedding cannot be applied to an empty text sequence

    def text_subset_support(self, denoiser):
        return None

    @contextmanager
    def without_text(self, denoiser, args, kwargs):
        if args:
            raise ValueError(
                "Qwen-Image transformer called positionally; token methods need keyword arguments"
            )
        kept = {"encoder_hidden_states": kwargs["encoder_hidden_states"][:, : self.text_rows_kept]}
        if kwargs.get("encoder_hidden_states_mask") is not None:
            kept["encoder_hidden_states_mask"] = kwargs["encoder_hidden_states_mask"][
                :, : self.text_rows_kept
            ]
        yield args, {**kwargs, **kept}

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
