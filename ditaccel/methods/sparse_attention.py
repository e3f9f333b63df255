"""``sparse-attention``: block-sparse self / joint attention with predicted masks (SpargeAttn style).

Each self- or joint-attention call of the transformer is routed (:mod:`..attention.sdpa_route`)
to the block-sparse kernel (Triton on CUDA, the PyTorch reference elsewhere) with a mask predicted
from that call's pooled queries and keys (:mod:`..attention.mask_prediction`). The first steps and
the first layers stay dense, where layouts are still forming; text tokens of joint attention are
always attended and attend to everything, since the whole prompt lives in a few blocks. The
density is ``density`` everywhere, or, given a calibration profile, that budget shared out over
layers and heads by how diffuse each one's attention was measured to be.
Cross-attention is left alone. ``density=1`` visits every block: dense attention through the kernel.

With ``refresh=N`` the masked-out blocks are not dropped but served from a cache (the "residual
reuse" of sparse FlashBlock): every N-th step computes every block, split into the predicted
mask and its complement, and keeps the complement's output and log-sum-exp; the steps in between
compute only the masked blocks and merge the cached complement back in by LSE, which is exact for
the complement's value at the refresh step. Attention far from a query changes slowly across
steps, so this keeps the attention mass that a pure mask would lose.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..attention import sdpa_route
from ..attention.mask_prediction import MaskRule, predict_block_mask, token_blocks
from ..hooks.context import DenoiseContext
from ..kernels import BlockMask, block_sparse_attention, merge_attention
from ..kernels.block_mask import num_blocks
from ..pipelines import Adapter, AttentionSite
from .base import Method, MethodConfig
from .registry import register_method

_HOOK = "ditaccel.sparse_attention"


@dataclasses.dataclass(frozen=True)
class SparseAttentionConfig(MethodConfig):
    """``density``: share of key blocks each query block keeps (``mode=topk``); ``mode=mass``
    keeps instead the fewest blocks holding ``mass`` of the pooled attention. ``block``: tokens
    per block. ``dense_steps`` / ``final_steps`` / ``dense_layers``: the first / last steps and the first
    attention layers run dense.
    ``min_similarity``: blocks whose tokens are less self-similar (mean cosine to their mean) are
    always kept, their pooled estimate being unreliable. ``keep_text``: text tokens of joint
    attention always attend and are attended. ``profile``: a calibration profile of this model; the
    ``density`` budget is then shared out over the sparse layers' heads in proportion to the key
    density each needs to hold the profile's ``mass`` of its attention (``mode=topk`` only)."""

    method = "sparse-attention"
    density: float = 0.5
    mode: Literal["topk", "mass"] = "topk"
    mass: float = 0.95
    block: int = 64
    dense_steps: int = 2
    dense_layers: int = 1
    final_steps: int = 0
    refresh: int = 0
    min_similarity: float = 0.5
    keep_text: bool = True
    profile: Path | None = None

    def __post_init__(self) -> None:
        self.check_range("dense_steps", 0)
        self.check_range("dense_layers", 0)
        self.check_range("final_steps", 0)
        self.check_range("refresh", 0)
        if self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"{self.method}: block must be a power of two >= 16, got {self.block}")
        try:
            self.rule(self.density)
        except ValueError as exc:
            raise ValueError(f"{self.method}: {exc}") from None
        if self.profile is not None and not Path(self.profile).is_file():
            raise ValueError(f"{self.method}: profile {self.profile} does not exist")
        if self.profile is not None and self.mode != "topk":
            raise ValueError(f"{self.method}: profile= shares the density budget, so it needs mode=topk")

    def rule(self, density: float, heads: tuple[float, ...] = ()) -> MaskRule:
        return MaskRule(self.mode, density, self.mass, self.min_similarity, heads)


def head_densities(path: Path, adapter: Adapter, denoiser: torch.nn.Module, budget: float, dense_layers: int = 0) -> list[tuple[float, ...]]:  # fmt: skip
    """Per attention layer, per head: the densities a calibration profile recommends for a mean
    of ``budget`` over the sparse layers (those from ``dense_layers`` on; the dense ones get ``()``),
    checked against this model: its transformer, its attention layers, their head counts."""
    from ..calibration.planner import attention_allocation
    from ..calibration.profile import Profile, fingerprint

    profile = Profile.load(path)
    sites = adapter.sequence_attention_sites(denoiser)
    names = [site.name for site in sites]
    if profile.fingerprint and profile.fingerprint != fingerprint(denoiser.config):
        raise ValueError(
            f"sparse-attention: {path} is a profile of another model ({profile.model}); "
            "profile this one with `ditaccel calibrate`"
        )
    if not profile.attention_by_head:
        raise ValueError(
            f"sparse-attention: {path} has no per-head attention densities; re-run `ditaccel calibrate`"
        )
    if profile.attention_layers != names:
        differ = next(
            (i for i, (a, b) in enumerate(zip(profile.attention_layers, names, strict=False)) if a != b), None
        )
        where = (
            f"layer {differ}: {profile.attention_layers[differ]} vs {names[differ]}"
            if differ is not None
            else ""
        )
        raise ValueError(
            f"sparse-attention: {path} measured {len(profile.attention_layers)} attention layers, this "
            f"pipeline has {len(names)} {where} (a profile of another model?)"
        )
    for site, heads in zip(sites, profile.attention_by_head, strict=True):
        expected = getattr(site.module, "heads", len(heads))
        if len(heads) != expected:
            raise ValueError(
                f"sparse-attention: {path} gives {len(heads)} head densities for {site.name}, which has {expected} heads"
            )
    allocation = attention_allocation(profile, budget, layers=names[dense_layers:])
    return [tuple(allocation.get(name, ())) for name in names]


@dataclass
class _Reuse:
    """A layer's last refresh: its mask and the attention over the blocks the mask leaves out."""

    mask: BlockMask | None = None
    out: torch.Tensor | None = None
    lse: torch.Tensor | None = None
    step: int = -1


class _LayerRoute:
    """The handler of one attention layer: predicts its mask and runs the sparse kernel."""

    def __init__(self, context: DenoiseContext, config: SparseAttentionConfig, site: AttentionSite, layer: int, heads: tuple[float, ...] = ()) -> None:  # fmt: skip
        self.context = context
        self.config = config
        self.site = site
        self.layer = layer
        self.rule = config.rule(config.density, heads)
        self.key = f"sparse-attention.{site.name}"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor | None:  # fmt: skip
        info = self.context.current
        if info is None:
            return None
        c = self.config
        total = q.shape[0] * q.shape[1] * num_blocks(q.shape[2], c.block) * num_blocks(k.shape[2], c.block)
        if (
            info.step < c.dense_steps
            or info.step >= info.total - c.final_steps
            or self.layer < c.dense_layers
        ):
            self.context.stats.record_attention(self.site.name, total, total)
            return None
        if c.refresh:
            reuse = self.context.state(self.key, _Reuse)
            if reuse.mask is not None and info.step - reuse.step < c.refresh:
                out, lse = block_sparse_attention(q, k, v, reuse.mask, scale)
                self.context.stats.record_attention(self.site.name, reuse.mask.count.sum(), total)
                return merge_attention(out, lse, reuse.out, reuse.lse)[0]
        mask = self._predict(q, k, scale)
        if not c.refresh:
            out, _ = block_sparse_attention(q, k, v, mask, scale, return_lse=False)
            self.context.stats.record_attention(self.site.name, mask.count.sum(), total)
            return out
        rest = BlockMask.from_dense(
            ~mask.to_dense(), c.block, c.block, q.shape[2], k.shape[2], trim=not q.is_cuda
        )
        out, lse = block_sparse_attention(q, k, v, mask, scale)
        reuse.out, reuse.lse = block_sparse_attention(q, k, v, rest, scale)
        reuse.mask, reuse.step = mask, info.step
        self.context.stats.record_attention(self.site.name, total, total)
        return merge_attention(out, lse, reuse.out, reuse.lse)[0]

    def _predict(self, q: torch.Tensor, k: torch.Tensor, scale: float | None) -> BlockMask:
        c = self.config
        keep_queries = keep_keys = None
        text = self._text_tokens(q.shape[2], self.context.current.layout)
        if text is not None:
            keep_queries = token_blocks(*text, q.shape[2], c.block, q.device)
            keep_keys = token_blocks(*text, k.shape[2], c.block, q.device)
        return predict_block_mask(
            q, k, self.rule, block_q=c.block, block_k=c.block, scale=scale,
            keep_queries=keep_queries, keep_keys=keep_keys, trim=not q.is_cuda,
        )  # fmt: skip

    def _text_tokens(self, length: int, layout) -> tuple[int, int] | None:
        """Where the text tokens sit in this layer's sequence, if it holds them."""
        if not self.config.keep_text or not layout.text_in_sequence or not layout.text:
            return None
        if length != layout.text + layout.image_stream:
            return None
        if self.site.text_first is False:
            return layout.image_stream, length
        return 0, layout.text


@register_method("sparse-attention")
class SparseAttention(Method):
    config_class = SparseAttentionConfig
    exclusive = "attention"

    def __init__(self, config: SparseAttentionConfig) -> None:
        super().__init__(config)
        self._modules: list[torch.nn.Module] = []
        self._heads: dict[int, list[tuple[float, ...]]] = {}  # per denoiser: each layer's head shares

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        for denoiser in adapter.denoisers():
            sites = adapter.sequence_attention_sites(denoiser)
            if not sites:
                raise ValueError(
                    f"sparse-attention: {type(denoiser).__name__} has no self- or joint-attention layer"
                )
            heads = [()] * len(sites)
            if self.config.profile is not None:
                c = self.config
                heads = head_densities(c.profile, adapter, denoiser, c.density, c.dense_layers)
            for layer_heads in heads:
                self.config.rule(self.config.density, layer_heads)  # bad shares fail here, before any hook
            self._heads[id(denoiser)] = heads

    def apply(self, context: DenoiseContext) -> None:
        c = self.config
        if not self._heads:
            self.check(context.adapter)
        for denoiser in context.adapter.denoisers():
            sites = context.adapter.sequence_attention_sites(denoiser)
            for layer, (site, layer_heads) in enumerate(zip(sites, self._heads[id(denoiser)], strict=True)):
                sdpa_route.attach(site.module, _HOOK, _LayerRoute(context, c, site, layer, layer_heads))
                self._modules.append(site.module)

    def remove(self, context: DenoiseContext) -> None:
        for module in self._modules:
            sdpa_route.detach(module, _HOOK)
        self._modules.clear()
