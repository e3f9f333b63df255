"""What a method may know about an architecture, and nothing more.

Methods never import model classes. They ask an adapter where the transformer blocks are and how
their inputs and outputs are laid out, which tokens of a call are text, image, reference image or
video frames, how attention is called, and how classifier-free guidance batches the call. Adding
a model family means one adapter file (see ``flux.py`` for the pattern) and a tiny-config test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

Stream = Literal["joint", "single", "image"]
AttentionKind = Literal["joint", "self", "cross"]
Task = Literal["t2i", "edit", "inpaint", "control", "t2v", "class"]


@dataclass(frozen=True)
class BlockIO:
    """Where a block takes its image / text streams and where it returns them.

    ``*_out`` is an index into the block's tuple output, or ``None`` when the block returns the
    image stream as a bare tensor (and has no text stream output).
    """

    hidden_arg: str = "hidden_states"
    encoder_arg: str | None = "encoder_hidden_states"
    hidden_out: int | None = None
    encoder_out: int | None = None
    hidden_pos: int = 0
    encoder_pos: int = 1

    def split_input(
        self, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image stream, text stream or None) of a block's input."""
        hidden = Adapter.argument(self.hidden_arg, self.hidden_pos, args, kwargs)
        if self.encoder_arg is None:
            return hidden, None
        return hidden, Adapter.argument(self.encoder_arg, self.encoder_pos, args, kwargs)

    def split_output(self, output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image stream, text stream or None) of a block's output."""
        if self.hidden_out is None:
            return output, None
        encoder = output[self.encoder_out] if self.encoder_out is not None else None
        return output[self.hidden_out], encoder

    def join_output(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """Build an output in the block's own format from the two streams."""
        if self.hidden_out is None:
            return hidden
        size = 1 + max(self.hidden_out, self.encoder_out if self.encoder_out is not None else -1)
        out: list[Any] = [None] * size
        out[self.hidden_out] = hidden
        if self.encoder_out is not None:
            out[self.encoder_out] = encoder
        return tuple(out)


@dataclass(frozen=True)
class BlockGroup:
    """One ordered list of transformer blocks sharing a call convention.

    ``stream``: ``joint`` blocks keep text and image streams apart and attend jointly (FLUX
    double-stream, SD3, Qwen-Image); ``single`` blocks see one concatenated sequence passed as two
    streams (FLUX single-stream); ``image`` blocks carry only image tokens, text enters through
    cross-attention (PixArt, Wan, DiT).
    """

    name: str
    blocks: nn.ModuleList
    io: BlockIO
    stream: Stream

    def __len__(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class AttentionSite:
    """An attention module inside a block and what its query / key sequence holds.

    ``text_first`` says, for joint attention, whether text tokens precede image tokens in the
    concatenated sequence (FLUX, Qwen-Image) or follow them (SD3).
    """

    name: str
    module: nn.Module
    kind: AttentionKind
    block: str
    text_first: bool | None = None


@dataclass(frozen=True)
class TokenLayout:
    """Token counts of one denoiser call.

    ``image`` are the generated tokens (for video: frames x rows x cols); ``reference`` are
    reference-image tokens appended after them in the image stream (Kontext, Qwen-Image-Edit);
    ``text`` are the text tokens; ``text_in_sequence`` says whether text shares the attention
    sequence (joint attention) or only enters by cross-attention. ``grid`` is the
    (frames, rows, cols) token grid of the generated image, ``reference_grid`` the (rows, cols)
    grid of a single reference image (None without one, or with several).
    """

    image: int
    reference: int = 0
    text: int = 0
    text_in_sequence: bool = False
    grid: tuple[int, int, int] = (1, 0, 0)
    reference_grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        frames, rows, cols = self.grid
        if frames * rows * cols != self.image:
            raise ValueError(f"token grid {self.grid} does not hold {self.image} image tokens")
        if (
            self.reference_grid is not None
            and self.reference_grid[0] * self.reference_grid[1] != self.reference
        ):
            raise ValueError(f"reference grid {self.reference_grid} does not hold {self.reference} tokens")

    @property
    def image_stream(self) -> int:
        """Length of the image stream: generated plus reference tokens."""
        return self.image + self.reference

    @property
    def joint_text(self) -> int:
        """Text tokens in the attention sequence (0 where text enters by cross-attention)."""
        return self.text if self.text_in_sequence else 0


@dataclass(frozen=True)
class CFGMode:
    """How classifier-free guidance reaches the denoiser in one pipeline call.

    ``batched``: names of the batch halves, in order, when cond and uncond share one forward
    (e.g. ``("uncond", "cond")``); empty when they do not. ``separate``: cond and uncond are two
    forwards per step (FLUX ``true_cfg_scale``, Qwen-Image, Wan), in that order.
    """

    batched: tuple[str, ...] = ()
    separate: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.batched) or self.separate


@dataclass
class GenerationRequest:
    """A model-independent request: what the CLI and the bench ask of any pipeline."""

    prompt: str = ""
    image: Any = None
    mask: Any = None
    steps: int | None = None
    seed: int = 0
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    output_type: str = "pil"
    extra: dict[str, Any] = field(default_factory=dict)


def call_default(pipeline: Any, name: str, kwargs: dict[str, Any]) -> Any:
    """The value a pipeline call will use for argument ``name``: given, or the signature default."""
    if name in kwargs:
        return kwargs[name]
    param = inspect.signature(type(pipeline).__call__).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


class Adapter:
    """Architecture knowledge for one family of diffusers pipelines.

    Subclasses set ``family``, ``tasks`` (pipeline class name -> task) and implement the
    abstract methods. An adapter instance is bound to one pipeline.
    """

    family: ClassVar[str]
    tasks: ClassVar[dict[str, Task]]
    timestep_arg: ClassVar[str] = "timestep"
    # text tokens ``without_text`` leaves in the call (the first ones): transformers whose forward
    # cannot take an empty text sequence keep one
    text_rows_kept: ClassVar[int] = 0

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    # --- where things are -------------------------------------------------------------------
    @property
    def task(self) -> Task:
        for klass in type(self.pipeline).__mro__:
            if klass.__name__ in self.tasks:
                return self.tasks[klass.__name__]
        raise TypeError(f"{type(self.pipeline).__name__} is not a {self.family} pipeline")

    def denoisers(self) -> list[nn.Module]:
        """The transformer(s) that are called once per step and branch."""
        return [self.pipeline.transformer]

    def step_modules(self) -> list[nn.Module]:
        """Every network the loop runs per step: the denoisers and a ControlNet (whose cost the
        methods do not reduce). What FLOPs ratios are counted on."""
        controlnet = getattr(self.pipeline, "controlnet", None)
        return self.denoisers() + ([controlnet] if isinstance(controlnet, nn.Module) else [])

    def block_groups(self, denoiser: nn.Module) -> list[BlockGroup]:
        raise NotImplementedError

    def attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        raise NotImplementedError

    def image_subset_support(self, denoiser: nn.Module) -> str | None:
        """Why ``denoiser`` cannot be called on a subset of its image tokens (None: it can)."""
        return f"{self.family} does not support computing a subset of the image tokens"

    @contextmanager
    def image_subset(
        self, denoiser: nn.Module, args: Sequence[Any], kwargs: dict[str, Any], index: torch.Tensor
    ) -> Iterator[tuple[Sequence[Any], dict[str, Any]]]:
        """The denoiser call restricted to the image-stream tokens at ``index``, each keeping its
        position (RoPE), for methods that compute only part of the image (region editing); valid
        inside the ``with`` block."""
        raise NotImplementedError(self.image_subset_support(denoiser))
        yield args, kwargs  # pragma: no cover

    def block_rows_support(self, denoiser: nn.Module) -> str | None:
        """Why ``denoiser``'s blocks cannot run on a subset of the image stream (None: they can)."""
        return f"{self.family} blocks cannot run on a subset of the image tokens"

    def block_rows(
        self,
        denoiser: nn.Module,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        index: torch.Tensor,
        text: int,
        first: bool,
    ) -> tuple[Sequence[Any], dict[str, Any]]:
        """A *block* call restricted to the image-stream rows at ``index`` (of the call's whole image
        stream; ``text``: the call's text tokens), for methods that drop tokens part-way through the
        network (context pruning). ``first``: the first block to run on the subset, whose image
        stream is cut to ``index``; later blocks get the cut stream from their predecessor. The
        position embeddings a block is given always follow ``index``."""
        raise NotImplementedError(self.block_rows_support(denoiser))

    def attention_cut_support(self, denoiser: nn.Module, block: nn.Module) -> str | None:
        """Why ``block`` cannot run its attention over the whole image stream and the rest of the
        block on a subset of it (None: it can)."""
        return f"{self.family} blocks cannot drop rows between their attention and their MLP"

    def block_cut_after_attention(
        self,
        denoiser: nn.Module,
        block: nn.Module,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        rows: Callable[[], torch.Tensor],
    ) -> Any:
        """``block``'s output with its attention over every row of its image stream and everything
        after the attention (output residual, MLP) on the rows ``rows()`` returns, asked once the
        attention has run (so that a method can choose them from that attention). Everything after
        a block's attention is row-wise, so the kept rows are what the whole block gives them."""
        raise NotImplementedError(self.attention_cut_support(denoiser, block))

    def text_subset_support(self, denoiser: nn.Module) -> str | None:
        """Why ``denoiser`` cannot be called without its text tokens (None: it can)."""
        return f"{self.family} transformers cannot be called without their text tokens"

    @contextmanager
    def without_text(
        self, denoiser: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Iterator[tuple[Sequence[Any], dict[str, Any]]]:
        """The denoiser call with no text tokens in its sequence but the first ``text_rows_kept``
        (the image stream and its positions unchanged), for methods that serve the text's attention
        from a cache; valid inside the ``with`` block."""
        raise NotImplementedError(self.text_subset_support(denoiser))
        yield args, kwargs  # pragma: no cover

    def block_additions(
        self, denoiser: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> dict[int, torch.Tensor] | None:
        """What the denoiser's own loop adds to the image stream after each block in this call,
        by block index in execution order (ControlNet residuals), or None when it adds nothing.
        A cache that stands in for a block range must leave these out of what it stores: the
        loop adds the current ones again after every block, skipped or not."""
        return None

    def noisy_latents(self, denoiser: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        """(B, image tokens, C): the latents being denoised, as this forward was given them."""
        layout = self.token_layout(denoiser, args, kwargs)
        return self.argument("hidden_states", 0, args, kwargs)[:, : layout.image]

    def source_latents(self, denoiser: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor | None:  # fmt: skip
        """(B, image tokens, C): the source image's latents on the generated image's token grid,
        as the denoiser sees them: here the single reference image of an edit, resampled when its
        grid differs (adapters of inpainting pipelines give their masked image); None without one."""
        layout = self.token_layout(denoiser, args, kwargs)
        if layout.reference_grid is None or layout.grid[0] != 1:
            return None
        hidden = self.argument("hidden_states", 0, args, kwargs)
        return self.on_grid(hidden[:, layout.image :], layout.reference_grid, layout.grid[1:])

    @staticmethod
    def on_grid(tokens: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
        """(B, rows*cols, C) tokens of a ``grid`` image resampled to the ``target`` grid."""
        if tuple(grid) == tuple(target):
            return tokens
        planes = tokens.unflatten(1, tuple(grid)).permute(0, 3, 1, 2).float()
        resized = torch.nn.functional.interpolate(planes, size=tuple(target), mode="bilinear", antialias=True)
        return resized.flatten(2).transpose(1, 2).to(tokens.dtype)

    def sequence_attention_sites(self, denoiser: nn.Module) -> list[AttentionSite]:
        """The self- and joint-attention layers (queries and keys are the same tokens), in order."""
        return [site for site in self.attention_sites(denoiser) if site.kind in ("joint", "self")]

    # --- what a call holds --------------------------------------------------------------------
    def token_layout(self, denoiser: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> TokenLayout:
        raise NotImplementedError

    def cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        raise NotImplementedError

    def build_call(self, request: GenerationRequest) -> dict[str, Any]:
        """Keyword arguments of the pipeline call that carries out ``request``."""
        raise NotImplementedError

    # --- helpers shared by the families ---------------------------------------------------------
    def blocks(self, denoiser: nn.Module) -> list[tuple[str, nn.Module]]:
        """Every block of every group, in execution order, with a stable name."""
        return [
            (f"{group.name}.{i}", block)
            for group in self.block_groups(denoiser)
            for i, block in enumerate(group.blocks)
        ]

    def timestep(self, denoiser: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        """The timestep tensor a denoiser forward was given."""
        names = list(inspect.signature(type(denoiser).forward).parameters)[1:]
        return self.argument(self.timestep_arg, names.index(self.timestep_arg), args, kwargs)

    def true_cfg_mode(self, call_kwargs: dict[str, Any]) -> CFGMode:
        """CFG of pipelines with ``true_cfg_scale``: separate forwards once a negative prompt is given."""
        scale = call_default(self.pipeline, "true_cfg_scale", call_kwargs)
        has_negative = any(
            call_kwargs.get(k) is not None for k in ("negative_prompt", "negative_prompt_embeds")
        )
        return CFGMode(separate=bool(scale is not None and scale > 1 and has_negative))

    def batched_cfg_mode(self, call_kwargs: dict[str, Any], halves: tuple[str, str]) -> CFGMode:
        """CFG of pipelines that batch both halves when ``guidance_scale > 1``."""
        return CFGMode(
            batched=halves if call_default(self.pipeline, "guidance_scale", call_kwargs) > 1 else ()
        )

    @staticmethod
    def patch_grid(hidden: torch.Tensor, patch: int) -> tuple[int, int, int]:
        """(frames, rows, cols) token grid of a (B, C, H, W) latent cut into patch x patch tokens."""
        return 1, hidden.shape[-2] // patch, hidden.shape[-1] // patch

    @staticmethod
    def argument(name: str, position: int, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """A forward argument given by keyword or at ``position``."""
        if name in kwargs:
            return kwargs[name]
        return args[position] if position < len(args) else None

    def _common_call(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"output_type": request.output_type, **request.extra}
        generator_device = "cpu"
        kwargs["generator"] = torch.Generator(generator_device).manual_seed(request.seed)
        if request.steps is not None:
            kwargs["num_inference_steps"] = request.steps
        for name in ("height", "width", "guidance_scale", "negative_prompt"):
            value = getattr(request, name)
            if value is not None:
                kwargs[name] = value
        if self.task == "control":  # ControlNet pipelines: the request's image steers the generation
            if request.image is None:
                raise ValueError(f"{type(self.pipeline).__name__} follows a control image: pass --image")
            kwargs["control_image"] = request.image
        return kwargs
