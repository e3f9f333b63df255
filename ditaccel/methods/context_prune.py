"""``context-prune``: in-context token pruning (ToPi-style) for reference-image editing.

Kontext and Qwen-Image-Edit append the reference image to the image stream, doubling the sequence,
yet most reference tokens matter little to most of the output. A calibration profile made on the
editing pipeline (``ditaccel calibrate --task edit``) says which attention layers rely on the
reference most: the *pivotal* layers. On *scoring* steps (the first, then every ``refresh``-th)
each reference token's influence is the attention mass that a few sampled generated-image queries
put on it at the pivotal layers (the probe: ``probe`` query rows per head, so the attention itself
stays one fused call). From the deepest pivotal layer's output on, only the ``keep`` share of
reference tokens with the highest influence stays in the image stream; the others' rows are not
computed at all, and the position embeddings follow the kept rows. Where the adapter can cut a block
between its attention and its MLP (FLUX's and Qwen-Image's double-stream blocks), the pivotal
block's attention already has only the kept rows as queries (every key still attends) and its MLP
runs on those rows, while no other hook (an offload hook) holds that block; otherwise the next block
cuts. Steps between scorings prune the same tokens; with ``reuse`` they run every block on the kept
rows, the attention layers up to the pivotal ones taking the pruned tokens' keys and values from the
last scoring. The pipelines keep only the generated tokens' output, so the pruned rows come back as
zeros. ``keep=1`` prunes nothing: the plain pipeline, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.hooks import ModelHook

from ..attention import sdpa_route
from ..calibration.context_sensitivity import reference_keys
from ..calibration.profile import Profile, fingerprint, shipped_profile
from ..hooks.block_range import flat_blocks
from ..hooks.context import DenoiseContext
from ..hooks.install import register_hook, remove_hook
from ..hooks.rows import full_length
from ..pipelines import Adapter, TokenLayout
from .base import Method, MethodConfig
from .registry import register_method

_HOOK = "ditaccel.context_prune"
_KEY = "context-prune"


@dataclasses.dataclass(frozen=True)
class ContextPruneConfig(MethodConfig):
    """``keep``: share of the reference tokens that stay after the pivotal layers (1: all, the
    plain pipeline). ``refresh``: steps from one scoring to the next (the first step scores).
    ``profile``: a calibration profile of the editing pipeline with context sensitivity (default:
    the one shipped with the model). ``pivotal``: how many of the most context-sensitive attention
    layers score the tokens (pruning starts after the deepest of them). ``probe``: generated-token
    query rows sampled per head to score with. ``merge`` (ToMe-style): each pruned token is averaged
    into the kept token whose key at the pivotal layer is most similar, and the later attention
    layers weight a kept token's key by the size of its group (proportional attention), so the
    reference keeps its share of the attention. ``reuse``: between scorings the pruned tokens' keys
    and values at the attention layers up to the pivotal ones are those of the last scoring step, so
    their rows are computed on scoring steps only and every block runs on the kept rows in between
    (block-external's reuse, for the pruned tokens alone)."""

    method = "context-prune"
    keep: float = 0.5
    refresh: int = 4
    profile: Path | None = None
    pivotal: int = 1
    probe: int = 64
    merge: bool = False
    reuse: bool = False

    def __post_init__(self) -> None:
        if not (0.0 < self.keep <= 1.0):
            raise ValueError(f"context-prune: keep must be in (0, 1], got {self.keep}")
        if self.merge and self.reuse:
            raise ValueError(
                "context-prune: merge and reuse exclude each other (with reuse the pruned tokens' rows are "
                "not computed between scorings, so there is nothing to merge)"
            )
        self.check_range("refresh", 1)
        self.check_range("pivotal", 1)
        self.check_range("probe", 1)
        if self.profile is not None and not Path(self.profile).is_file():
            raise ValueError(f"context-prune: profile {self.profile} does not exist")


def influence(q: torch.Tensor, k: torch.Tensor, scale: float | None, queries: torch.Tensor, context: slice) -> torch.Tensor:  # fmt: skip
    """(context tokens,): the attention mass the sampled ``queries`` put on each key in
    ``context``, averaged over the batch, heads and sampled rows. ``queries``: (heads, rows)
    sequence indices, each head its own rows. Only the sampled rows' scores are formed
    (B x H x rows x keys)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    heads = torch.arange(q.shape[1], device=q.device)[:, None]
    scores = torch.matmul(q[:, heads, queries].float(), k.float().transpose(-1, -2)) * scale
    return scores.softmax(-1)[..., context].mean(dim=(0, 1, 2))


def probe_rows(generated: int, probe: int, heads: int, device: torch.device) -> torch.Tensor:
    """(heads, rows): ``probe`` generated-token rows for each head, drawn without replacement
    from one fixed permutation so that the heads together cover ``heads * probe`` distinct tokens
    spread over the whole image (attention near the input is mostly local: evenly spaced rows would
    favour the reference tokens next to them). All rows when there are fewer."""
    if probe >= generated:
        return torch.arange(generated, device=device).expand(heads, -1)
    order = torch.randperm(generated, generator=torch.Generator().manual_seed(0))
    order = order.repeat((heads * probe + generated - 1) // generated)[: heads * probe]
    return order.reshape(heads, probe).to(device)


@dataclass
class _State:
    """One CFG branch's kept set."""

    kept: torch.Tensor | None = None  # indices of the kept reference tokens (0 .. reference-1)
    rows: torch.Tensor | None = None  # image-stream rows the pruned blocks compute
    scores: list[torch.Tensor] = field(default_factory=list)  # of this scoring step, per pivotal layer
    keys: list[torch.Tensor] = field(default_factory=list)  # reference keys there (merge), (R, D)
    groups: torch.Tensor | None = None  # merge: kept token (0 .. kept-1) each pruned token joins
    sizes: torch.Tensor | None = None  # merge: tokens in each kept token's group
    pruned: torch.Tensor | None = None  # merge, reuse: indices of the pruned reference tokens
    # reuse: the reference tokens' K/V by attention layer until the kept set is chosen, then the pruned ones'
    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    pruned_kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    scored_at: int = -1
    pending: bool = False  # a scoring forward whose kept set is not chosen yet


class _TransformerHook(ModelHook):
    def __init__(self, method: ContextPrune, context: DenoiseContext) -> None:
        super().__init__()
        self.method, self.context = method, context

    def new_forward(self, module, *args, **kwargs):
        method, context = self.method, self.context
        info = context.current
        method.active = None
        if info is None or info.layout.reference == 0 or context.rows or context.pinned:
            # (no reference in this call, or an outer method runs it on a subset of the tokens /
            # keeps every row's K/V this forward)
            return self.fn_ref.original_forward(*args, **kwargs)
        state = context.state(_KEY, _State)
        scoring = state.kept is None or info.step - state.scored_at >= method.config.refresh
        if scoring:
            state.scores, state.keys, state.scored_at, state.pending = [], [], info.step, True
            state.kv, state.pruned_kv = {}, {}
        method.active = (state, info.layout, scoring)
        try:
            output = self.fn_ref.original_forward(*args, **kwargs)
        finally:
            method.active = None
        return full_length(output, info.layout.image_stream)


class _BlockHook(ModelHook):
    """On a block after the pivotal layers: run it on the kept rows only. On a block up to them
    (``up_to_pivotal``, with ``reuse``): the same between scorings."""

    def __init__(self, method: ContextPrune, denoiser, block, up_to_pivotal: bool = False) -> None:
        super().__init__()
        self.method, self.denoiser, self.up_to_pivotal = method, denoiser, up_to_pivotal
        self.name, self.io = block.name, block.io

    def new_forward(self, module, *args, **kwargs):
        method = self.method
        if method.active is None or (self.up_to_pivotal and not method.reusing):
            return self.fn_ref.original_forward(*args, **kwargs)
        state, layout, _ = method.active
        rows = method.kept_rows(state, layout, self.name)
        hidden, _ = self.io.split_input(args, kwargs)
        first = hidden.shape[1] != rows.numel()  # the stream still has every row (no cut before)
        if first and state.groups is not None:
            args, kwargs = method.merged(self.io, args, kwargs, state, layout)
        sub_args, sub_kwargs = method.context.adapter.block_rows(
            self.denoiser, args, kwargs, rows, layout.joint_text, first
        )
        return self.fn_ref.original_forward(*sub_args, **sub_kwargs)


class _CutHook(_BlockHook):
    """On the block of the deepest pivotal layer: its attention sees every row, the rest of the
    block (output residual, MLP) only the kept ones, chosen from that attention's probe. Only
    while nothing else hooks the block's forward (an offload hook beneath would be skipped):
    otherwise the block runs whole and the next one cuts. With ``reuse``, between scorings, the
    whole block runs on the kept rows (as the blocks before it)."""

    def __init__(self, method: ContextPrune, denoiser, block) -> None:
        super().__init__(method, denoiser, block, up_to_pivotal=True)

    def new_forward(self, module, *args, **kwargs):
        method = self.method
        if method.reusing:
            return super().new_forward(module, *args, **kwargs)
        registry = getattr(module, "_diffusers_hook", None)
        alone = registry is not None and list(registry.hooks) == [_HOOK] and not hasattr(module, "_hf_hook")
        if method.active is None or not alone or args:  # (positional: the next block cuts; with
            # reuse, between scorings, block_rows refuses a positional call as for the later blocks)
            return self.fn_ref.original_forward(*args, **kwargs)
        state, layout, _ = method.active
        method.cutting = True  # (its attention computes the kept rows' queries only)
        try:
            return method.context.adapter.block_cut_after_attention(
                self.denoiser, module, args, kwargs, lambda: method.kept_rows(state, layout, self.name)
            )
        finally:
            method.cutting = False


@register_method("context-prune")
class ContextPrune(Method):
    config_class = ContextPruneConfig
    tasks = frozenset({"edit"})
    inner = True  # inside region-edit's hook: it sees whether region-edit already subsets the call
    combinable = frozenset({"region-edit"})
    combination_note = (
        "its blocks after the pivotal layers see fewer rows than the blocks before them, which the "
        "step caches' residuals, block-external's per-layer external parts and sparse-attention's "
        "masks assume equal (only region-edit composes: its region steps carry no reference and its "
        "K/V stores run unpruned)"
    )

    def __init__(self, config: ContextPruneConfig) -> None:
        super().__init__(config)
        self.active: tuple[_State, TokenLayout, bool] | None = None  # of the current forward
        self.profile: Profile | None = None
        self.pivotal: list[str] = []  # attention layers that score, most sensitive first
        self.pruned_from: str = ""  # first block run wholly on the kept rows (the one before may cut)
        self.kept_mask: torch.Tensor | None = None  # reference tokens kept at the last scoring (grid)
        self.kept_history: list[tuple[int, int, torch.Tensor]] = []  # this call's (step, branch, kept)
        self.cutting = False  # inside the cut block of a forward that cuts it
        self._modules: list[torch.nn.Module] = []

    # --- construction ---------------------------------------------------------------------------
    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        for denoiser in adapter.denoisers():
            if (reason := adapter.block_rows_support(denoiser)) is not None:
                raise ValueError(f"context-prune: {reason}")
        if self.config.keep >= 1.0:
            return  # nothing to prune: no profile needed
        path = self.config.profile or shipped_profile(adapter.pipeline, task="edit")
        command = (
            "`ditaccel calibrate --model MODEL --task edit --out PROFILE.json`, then profile=PROFILE.json"
        )
        if path is None:
            raise ValueError(f"context-prune needs a calibration profile of the editing pipeline: {command}")
        profile = Profile.load(path)
        for denoiser in adapter.denoisers():
            profile.check_model(
                [b.name for b in flat_blocks(adapter, denoiser)], fingerprint(denoiser.config)
            )
        if not profile.context_layers:
            raise ValueError(
                f"context-prune: the profile {path} has no context sensitivity (made on "
                f"{profile.pipeline}, without reference tokens): {command}"
            )
        sites = {site.name: site for d in adapter.denoisers() for site in adapter.sequence_attention_sites(d)}
        ranked = sorted(
            (name for name in profile.context_layers if name in sites),
            key=lambda name: -profile.context_sensitivity[profile.context_layers.index(name)],
        )
        self.pivotal = ranked[: self.config.pivotal]
        blocks = [b.name for d in adapter.denoisers() for b in flat_blocks(adapter, d)]
        last = max(blocks.index(sites[name].block) for name in self.pivotal)
        if last + 1 >= len(blocks):
            raise ValueError(
                f"context-prune: the pivotal layer {sites[self.pivotal[0]].name} is in the last block; "
                "pruning after it saves nothing (lower pivotal=)"
            )
        self.pruned_from = blocks[last + 1]
        self.profile = profile

    @property
    def reusing(self) -> bool:
        """Whether this forward runs every block on the kept rows (``reuse``, between scorings)."""
        return self.config.reuse and self.active is not None and not self.active[2]

    # --- scoring ------------------------------------------------------------------------------------
    def _probe(self, site):
        def handler(q, k, v, scale):
            if self.active is None or not self.active[2]:
                return None
            state, layout, _ = self.active
            context = reference_keys(k.shape[2], layout, site.text_first)
            if context is None:
                return None  # (not the call's whole sequence)
            image_at = context.start - layout.image
            queries = image_at + probe_rows(layout.image, self.config.probe, q.shape[1], q.device)
            state.scores.append(influence(q, k, scale, queries, context))
            if self.config.merge:
                state.keys.append(k[:, :, context].float().mean(dim=(0, 1)))
            return None  # the attention itself runs as usual

        return handler

    def _early_attention(self, site, probe, cut: bool):
        """An attention layer up to the pivotal ones. On a scoring step: the probe (at a pivotal
        layer) scores; with ``reuse`` the reference tokens' keys and values are kept; at the cut
        block's attention only the rows that stay in the image stream after it (text, generated and
        kept reference tokens) need their output, so only their queries attend (every key still
        does; the pruned rows' output is left zero, the cut drops it), the kept set chosen here once
        every pivotal layer has scored. Between scorings with ``reuse``: the kept rows attend to
        themselves and to the pruned tokens' keys and values of the last scoring."""

        def handler(q, k, v, scale):
            state, layout, _ = self.active
            if self.reusing:
                return self._with_pruned_kv(site, state, layout, q, k, v, scale)
            if probe is not None:
                probe(q, k, v, scale)
            if self.config.reuse:
                self._keep_kv(site, state, layout, k, v)
            if not (cut and self.cutting):
                return None
            context = reference_keys(k.shape[2], layout, site.text_first)
            if context is None or (state.pending and len(state.scores) < len(self.pivotal)):
                return None  # (not the whole sequence / a pivotal layer after this one has yet to score)
            if state.pending:
                self.choose(state, layout)
            index = torch.arange(k.shape[2], device=q.device)
            kept = context.start + state.kept.to(q.device)
            index = torch.cat([index[: context.start], kept, index[context.stop :]])
            rows = torch.nn.functional.scaled_dot_product_attention(q[:, :, index], k, v, scale=scale)
            out = rows.new_zeros(*q.shape[:-1], v.shape[-1])  # (rows' dtype: under autocast not q's)
            out[:, :, index] = rows
            return out

        return handler

    def _keep_kv(self, site, state: _State, layout: TokenLayout, k, v) -> None:
        """On a scoring step with ``reuse``: keep this layer's reference keys and values (only the
        pruned tokens' once the kept set is chosen), unless no step will reuse them."""
        info = self.context.current
        where = reference_keys(k.shape[2], layout, site.text_first)
        if where is None or self.config.refresh == 1 or info.step + 1 >= info.total:
            return
        if state.pending:  # (copies: slices of the projections would keep the whole K and V alive)
            state.kv[site.name] = (k[:, :, where].clone(), v[:, :, where].clone())
        else:
            state.pruned_kv[site.name] = self.pruned_of(state, k[:, :, where], v[:, :, where])

    @staticmethod
    def pruned_of(
        state: _State, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pruned tokens' rows of the reference tokens' ``keys`` and ``values``."""
        index = state.pruned.to(keys.device)
        return keys[:, :, index], values[:, :, index]

    @staticmethod
    def kept_length(state: _State, layout: TokenLayout) -> int:
        """Keys of an attention over the kept rows: text in the sequence, generated, kept reference."""
        return layout.joint_text + layout.image + state.kept.numel()

    def _with_pruned_kv(self, site, state: _State, layout: TokenLayout, q, k, v, scale):
        if k.shape[2] != self.kept_length(state, layout):
            return None  # (another attention inside the layer, e.g. an IP-adapter's)
        if site.name not in state.pruned_kv:
            raise RuntimeError(f"context-prune: {site.name} kept no reference keys at the last scoring step")
        keys, values = state.pruned_kv[site.name]
        return torch.nn.functional.scaled_dot_product_attention(
            q, torch.cat([k, keys], 2), torch.cat([v, values], 2), scale=scale
        )

    def kept_rows(self, state: _State, layout: TokenLayout, block: str) -> torch.Tensor:
        """The image-stream rows ``block`` computes this forward (the kept set chosen first if this
        scoring step has not chosen it yet), recorded in the stats."""
        if state.pending:
            self.choose(state, layout)
        self.record(block, int(state.kept.numel()))
        return state.rows

    def choose(self, state: _State, layout: TokenLayout) -> None:
        """The kept reference tokens from this scoring step's probes."""
        if not state.scores:
            raise RuntimeError(
                f"context-prune: no pivotal layer ({', '.join(self.pivotal)}) scored the reference "
                "tokens this step (its attention is not plain SDPA over the call's tokens?)"
            )
        score = torch.stack(state.scores).mean(0)
        count = max(1, round(self.config.keep * layout.reference))
        state.kept = score.topk(count).indices.sort().values
        state.rows = torch.cat([torch.arange(layout.image, device=score.device), layout.image + state.kept])
        pruned = torch.ones(layout.reference, dtype=torch.bool, device=score.device)
        pruned[state.kept] = False
        state.pruned = pruned.nonzero().flatten()
        if self.config.merge:
            keys = torch.nn.functional.normalize(torch.stack(state.keys).mean(0), dim=-1)
            state.groups = (keys[pruned.to(keys.device)] @ keys[state.kept.to(keys.device)].T).argmax(-1)
            state.sizes = torch.bincount(state.groups, minlength=count) + 1
        for name, (keys, values) in state.kv.items():  # reuse: only the pruned tokens' from now on
            state.pruned_kv[name] = self.pruned_of(state, keys, values)
        state.kv = {}
        state.scores, state.keys, state.pending = [], [], False
        mask = torch.zeros(layout.reference, dtype=torch.bool)
        mask[state.kept.cpu()] = True
        info = self.context.current
        self.kept_history.append((info.step, info.branch, mask))
        if layout.reference_grid is not None:
            self.kept_mask = mask.reshape(layout.reference_grid)
        extra = self.context.stats.extra
        extra["context_scorings"] = extra.get("context_scorings", 0) + 1

    def prepare_call(self, context: DenoiseContext, arguments, call) -> None:
        self.kept_mask, self.kept_history = None, []

    @staticmethod
    def merged(io, args, kwargs, state: _State, layout: TokenLayout):
        """The first pruned block's call with each kept reference token replaced by the mean of
        its group (itself and the pruned tokens that joined it)."""
        hidden, _ = io.split_input(args, kwargs)
        reference = hidden[:, layout.image :]
        total = reference[:, state.kept].float()
        total = total.index_add(1, state.groups, reference[:, state.pruned].float())
        merged = hidden.clone()
        merged[:, layout.image + state.kept] = (total / state.sizes[None, :, None]).to(hidden.dtype)
        if io.hidden_arg in kwargs:
            return args, {**kwargs, io.hidden_arg: merged}
        args = list(args)
        args[io.hidden_pos] = merged
        return tuple(args), kwargs

    def _proportional(self, site):
        """After the pivotal layers, with merge: attention whose kept reference keys count for
        their group (log of its size added to their logits)."""

        def handler(q, k, v, scale):
            if self.active is None:
                return None
            state, layout, _ = self.active
            if state.sizes is None:
                return None
            if k.shape[2] != self.kept_length(state, layout):
                return None  # (not the pruned sequence)
            image_at = layout.joint_text if site.text_first is not False else 0
            bias = torch.zeros(k.shape[2], dtype=q.dtype, device=q.device)
            start = image_at + layout.image
            bias[start : start + state.kept.numel()] = state.sizes.to(q.dtype).log()
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=bias[None, None, None], scale=scale
            )

        return handler

    def record(self, block: str, kept: int) -> None:
        step = self.context.current.step
        tokens = self.context.stats.extra.setdefault("context_tokens", {}).setdefault(block, [])
        tokens.append([step, kept])

    # --- lifecycle ----------------------------------------------------------------------------------
    def apply(self, context: DenoiseContext) -> None:
        self.context = context
        if self.config.keep >= 1.0:
            return
        adapter = context.adapter
        for denoiser in adapter.denoisers():
            register_hook(denoiser, _TransformerHook(self, context), _HOOK)
            self._modules.append(denoiser)
            blocks = flat_blocks(adapter, denoiser)
            first = [b.name for b in blocks].index(self.pruned_from)
            cut = blocks[first - 1] if first > 0 else None  # the block of the deepest pivotal layer
            if (
                cut is not None
                and not self.config.merge
                and adapter.attention_cut_support(denoiser, cut.module) is None
            ):
                register_hook(cut.module, _CutHook(self, denoiser, cut), _HOOK)
                self._modules.append(cut.module)
            else:
                cut = None
            if self.config.reuse:
                for block in blocks[:first]:
                    if cut is None or block.name != cut.name:
                        hook = _BlockHook(self, denoiser, block, up_to_pivotal=True)
                        register_hook(block.module, hook, _HOOK)
                        self._modules.append(block.module)
            for block in blocks[first:]:
                register_hook(block.module, _BlockHook(self, denoiser, block), _HOOK)
                self._modules.append(block.module)
            early = {b.name for b in blocks[:first]}
            for site in adapter.sequence_attention_sites(denoiser):
                if self.config.merge and site.block not in early:
                    sdpa_route.attach(
                        site.module, _HOOK, self._proportional(site), active=lambda: self.active is not None
                    )
                    self._modules.append(site.module)
                at_cut = cut is not None and site.block == cut.name
                if site.name in self.pivotal or at_cut or (self.config.reuse and site.block in early):
                    probe = self._probe(site) if site.name in self.pivotal else None
                    sdpa_route.attach(
                        site.module,
                        _HOOK,
                        self._early_attention(site, probe, at_cut),
                        active=lambda: (
                            self.active is not None and (self.active[2] or self.cutting or self.config.reuse)
                        ),
                    )
                    self._modules.append(site.module)

    def remove(self, context: DenoiseContext) -> None:
        for module in self._modules:
            remove_hook(module, _HOOK)
        self._modules.clear()
