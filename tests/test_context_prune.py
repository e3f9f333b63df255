"""``context-prune``: exact at keep=1, the probe scores what the sampled queries attend to, pruned
reference tokens are absent from the rows the later blocks compute (positions following), the
context-sensitivity proxy, and every refusal before compute."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import context_profile, run, velocities
from torch.overrides import TorchFunctionMode

from ditaccel import AcceleratedPipeline
from ditaccel.attention import sdpa_route
from ditaccel.calibration.context_sensitivity import (
    context_sensitivity,
    context_sensitivity_proxy,
    proxy_steps,
)
from ditaccel.methods.context_prune import influence, probe_rows
from ditaccel.testing import example_call, synthetic_profile

KONTEXT, QWEN_EDIT = "tiny-random-flux-kontext", "tiny-random-qwen-image-edit"


def cut_block(acc, transformer) -> tuple[str, torch.nn.Module]:
    """(name, module) of the block before the first pruned one: the pivotal block the cut is in."""
    blocks = acc.adapter.blocks(transformer)
    return blocks[[n for n, _ in blocks].index(acc.method("context-prune").pruned_from) - 1]


@contextmanager
def attention_run_inside(module, record):
    """``record(query, key)`` for every SDPA call actually run inside ``module``'s forward: seen
    beneath the method's route, so what a route handler computes instead of the plain call."""
    inside = [False]
    handles = [
        module.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)),
        module.register_forward_hook(lambda *_: inside.__setitem__(0, False)),
    ]

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.nn.functional.scaled_dot_product_attention and inside[0]:
                record(args[0] if args else kwargs["query"], args[1] if len(args) > 1 else kwargs["key"])
            return func(*args, **kwargs)

    try:
        with Record():
            yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("name", [KONTEXT, QWEN_EDIT])
def test_keep_all_is_the_plain_pipeline(name, make_pipe, tmp_path):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=4)
    acc = AcceleratedPipeline.from_pipe(pipe, "context-prune:keep=1")
    assert np.array_equal(run(acc, name, steps=4), plain)
    pruned = AcceleratedPipeline.from_pipe(
        acc.remove(), f"context-prune:keep=0.25,profile={context_profile(pipe, tmp_path)}"
    )
    assert not np.array_equal(run(pruned, name, steps=4), plain)  # the pruned steps did run
    assert pruned.stats.extra["context_scorings"] > 0


@pytest.mark.parametrize("name", [KONTEXT, QWEN_EDIT])
@pytest.mark.parametrize("reuse", [False, True])
def test_every_token_kept_through_the_pruning_path_is_the_plain_pipeline(name, reuse, make_pipe, tmp_path):
    """A keep that rounds to every reference token still runs the probe, the row selection of
    every later block (with ``reuse``, of every block between scorings) and the padding of the
    output: the plain pipeline, bit for bit."""
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=3)
    acc = AcceleratedPipeline.from_pipe(
        pipe, f"context-prune:keep=0.9999,refresh=2,reuse={reuse},profile={context_profile(pipe, tmp_path)}"
    )
    assert np.array_equal(run(acc, name, steps=3), plain)
    assert acc.stats.extra["context_scorings"] > 0 and acc.stats.extra["context_tokens"]


def test_influence_ranks_the_keys_the_sampled_queries_attend_to():
    """Planted: each sampled query row points at two of the context keys; those score highest,
    keys outside ``context`` and rows not sampled do not count."""
    torch.manual_seed(0)
    heads, dim, length = 2, 16, 40
    q = torch.randn(1, heads, length, dim) * 0.1
    k = torch.randn(1, heads, length, dim) * 0.1
    context = slice(20, 40)
    sampled = torch.tensor([[3, 7, 11]] * heads)
    planted = [25, 31, 33, 38]
    for i, row in enumerate(sampled[0]):
        for key in planted[i % 2 * 2 : i % 2 * 2 + 2] if i < 2 else planted:
            direction = torch.randn(heads, dim)
            q[0, :, row] += direction
            k[0, :, key] += direction
    q[0, :, 0] += 5 * k[0, :, 21]  # an unsampled row attending to another key: no influence
    scores = influence(q, k, None, sampled, context)
    assert scores.shape == (20,)
    assert set(scores.topk(4).indices.add(20).tolist()) == set(planted)
    assert torch.all(scores >= 0) and float(scores.sum()) <= 1.0


def test_probe_rows_spread_over_the_image():
    assert probe_rows(10, 20, 3, torch.device("cpu")).tolist() == [list(range(10))] * 3
    rows = probe_rows(256, 16, 4, torch.device("cpu"))
    assert rows.shape == (4, 16) and rows.unique().numel() == 64  # each head its own rows
    grid = torch.zeros(256, dtype=torch.bool)
    grid[rows.flatten()] = True
    quadrants = grid.reshape(2, 8, 2, 8).sum(dim=(1, 3))
    assert int(quadrants.min()) >= 8  # spread over the image, not along a line
    assert torch.equal(rows, probe_rows(256, 16, 4, torch.device("cpu")))  # fixed


@pytest.mark.parametrize("name", [KONTEXT, QWEN_EDIT])
def test_kept_tokens_are_the_most_attended_and_the_pruned_ones_are_not_computed(name, make_pipe, tmp_path):
    """The kept set is the top of the sampled queries' full attention at the pivotal layer; the
    blocks after it see the generated tokens plus the kept reference tokens only, each with its
    own rotary row; the blocks before see every token; in a double-stream block holding the pivotal
    layer, the MLP after that attention sees only the kept rows too."""
    pipe = make_pipe(name)
    acc = AcceleratedPipeline.from_pipe(
        pipe, f"context-prune:keep=0.25,refresh=100,profile={context_profile(pipe, tmp_path)}"
    )
    method = acc.method("context-prune")
    adapter = acc.adapter
    site = next(s for s in adapter.sequence_attention_sites(pipe.transformer) if s.name == method.pivotal[0])
    captured: dict = {}

    def capture(q, k, v, scale):
        captured.setdefault("qk", (q.clone(), k.clone(), scale))
        return None

    sdpa_route.attach(site.module, "test.capture", capture)
    seen: dict[str, list] = {}  # what each block's attention computes: image rows, rotary rows
    for attention in adapter.sequence_attention_sites(pipe.transformer):
        attention.module.register_forward_pre_hook(
            lambda _m, _a, kw, n=attention.block: seen.setdefault(n, []).append(
                (kw["hidden_states"].shape[1], kw["image_rotary_emb"])
            ),
            with_kwargs=True,
        )
    full_rotary: list = []
    blocks = adapter.blocks(pipe.transformer)
    cut_name, pivotal_block = cut_block(acc, pipe.transformer)
    cut = adapter.attention_cut_support(pipe.transformer, pivotal_block) is None  # double-stream blocks
    mlp_rows: list[int] = []  # what the pivotal block's MLP computes
    if cut:
        mlp = pivotal_block.ff if name == KONTEXT else pivotal_block.img_mlp
        mlp.register_forward_pre_hook(lambda _m, a: mlp_rows.append(a[0].shape[1]))
    first_block = blocks[0][1]
    first_block.register_forward_pre_hook(
        lambda _m, _a, kw: full_rotary.append(kw["image_rotary_emb"]), with_kwargs=True
    )
    acc(**example_call(name, steps=2))
    kept = method.kept_mask.flatten().nonzero().flatten()
    q, k, scale = captured["qk"]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    names = [n for n, _ in adapter.blocks(pipe.transformer)]
    first_pruned = names.index(method.pruned_from)
    reference = method.kept_mask.numel()
    text = k.shape[2] - seen[names[0]][0][0]  # the first block's attention: the image stream only
    full_rows = k.shape[2] - text
    image = full_rows - reference
    queries = text + probe_rows(image, method.config.probe, q.shape[1], q.device)
    heads = torch.arange(q.shape[1])[:, None]
    probs = torch.softmax((q[:, heads, queries] @ k.transpose(-1, -2)) * scale, -1)[..., text + image :]
    expected = probs.mean(dim=(0, 1, 2)).topk(kept.numel()).indices.sort().values
    assert torch.equal(kept, expected)
    rows = torch.cat([torch.arange(image), image + kept])
    joined = {n: text if n.startswith("single_") else 0 for n in names}  # FLUX single blocks: text + image
    for n in names[:first_pruned]:
        assert all(length == joined[n] + full_rows for length, _ in seen[n])
    for n in names[first_pruned:]:
        for length, rotary in seen[n]:
            assert length == joined[n] + image + kept.numel()
            if name == KONTEXT:  # one (cos, sin) table over text + image stream rows
                index = torch.cat([torch.arange(text), text + rows])
                assert torch.equal(rotary[0], full_rotary[0][0][index])
            else:  # (image frequencies, text frequencies)
                assert torch.equal(rotary[0], full_rotary[0][0][rows])
    if cut:  # the pivotal block's attention saw every row (above), its MLP only the kept ones
        assert mlp_rows and all(length == image + kept.numel() for length in mlp_rows)
    tokens = acc.stats.extra["context_tokens"]
    assert set(tokens) == set(names[first_pruned:]) | ({cut_name} if cut else set())
    assert all(count == kept.numel() for values in tokens.values() for _, count in values)


def test_refresh_rescores(make_pipe, tmp_path):
    pipe = make_pipe(KONTEXT)
    path = context_profile(pipe, tmp_path)
    for refresh, scorings in ((1, 4), (2, 2), (4, 1)):
        acc = AcceleratedPipeline.from_pipe(pipe, f"context-prune:keep=0.5,refresh={refresh},profile={path}")
        run(acc, KONTEXT, steps=4)
        assert acc.stats.extra["context_scorings"] == scorings
        acc.remove()


def test_composes_with_region_edit(make_pipe, tmp_path):
    """Region steps carry no reference and region-edit's K/V stores run unpruned: only its other
    full steps prune. With nothing pruned the pair is region-edit alone."""
    from PIL import Image

    pipe = make_pipe(KONTEXT)
    path = context_profile(pipe, tmp_path)
    size = example_call(KONTEXT)["height"]
    mask = np.zeros((size, size), np.uint8)
    mask[: size // 2, : size // 2] = 255
    call = dict(mask_image=Image.fromarray(mask))
    region = "region-edit:source=mask,velocity_tolerance=0,final=1"
    alone = AcceleratedPipeline.from_pipe(pipe, region)
    expected = run(alone, KONTEXT, steps=10, **call)
    both = AcceleratedPipeline.from_pipe(alone.remove(), f"{region}+context-prune:keep=1")
    assert np.array_equal(run(both, KONTEXT, steps=10, **call), expected)
    both = AcceleratedPipeline.from_pipe(both.remove(), f"{region}+context-prune:keep=0.25,profile={path}")
    run(both, KONTEXT, steps=10, **call)
    pruned_steps = {step for values in both.stats.extra["context_tokens"].values() for step, _ in values}
    warmup, refresh, final = both.method("region-edit").config.full_steps(10)
    assert pruned_steps == set(range(warmup - 1)) | set(range(final, 10))  # not the stores, not regions
    assert both.stats.extra["region_tokens"] > 0


def test_refusals_before_compute(make_pipe, tmp_path):
    pipe = make_pipe(KONTEXT)
    with pytest.raises(ValueError, match="ditaccel calibrate --model MODEL --task edit"):
        AcceleratedPipeline.from_pipe(pipe, "context-prune:keep=0.5")  # the tiny model ships no profile
    no_context = tmp_path / "t2i.json"
    synthetic_profile(pipe).save(no_context)
    with pytest.raises(ValueError, match="no context sensitivity"):
        AcceleratedPipeline.from_pipe(pipe, f"context-prune:profile={no_context}")
    other = tmp_path / "other.json"
    synthetic_profile(
        make_pipe("tiny-random-flux-fill"), context_layers=["x"], context_sensitivity=[1.0]
    ).save(other)
    with pytest.raises(ValueError, match="calibrate"):
        AcceleratedPipeline.from_pipe(pipe, f"context-prune:profile={other}")
    last = context_profile(pipe, tmp_path, pivotal="single_transformer_blocks.1.attn")
    with pytest.raises(ValueError, match="last block"):
        AcceleratedPipeline.from_pipe(pipe, f"context-prune:profile={last}")
    path = context_profile(pipe, tmp_path)
    for spec, match in (
        ("context-prune:keep=0", "keep"),
        ("context-prune:refresh=0", "refresh"),
        (f"context-prune:profile={path}+deepcache", "context-prune"),
        (f"context-prune:profile={path}+block-external", "context-prune"),
        (f"context-prune:profile={path}+sparse-attention", "context-prune"),
        ("context-prune:profile=/nonexistent.json", "does not exist"),
    ):
        with pytest.raises(ValueError, match=match):
            AcceleratedPipeline.from_pipe(pipe, spec)
    with pytest.raises(ValueError, match="edit"):
        AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), f"context-prune:profile={path}")
    plain = make_pipe(KONTEXT)  # nothing was left on the refused pipeline
    assert np.array_equal(run(pipe, KONTEXT, steps=2), run(plain, KONTEXT, steps=2))


def test_sensitivity_proxy_measures_one_forward_per_layer_and_step(make_pipe):
    """The proxy re-runs the sampled steps' forwards with one layer's reference dropped; dropping
    it in every layer moves the output, and a layer the probe cannot see is left out."""
    assert proxy_steps(28, 3) == [0, 14, 27] and proxy_steps(4, 6) == [0, 1, 2, 3]
    pipe = AcceleratedPipeline.from_pipe(make_pipe(KONTEXT), [])
    sites = pipe.adapter.sequence_attention_sites(pipe.transformer)
    call = example_call(KONTEXT, steps=3)
    call.pop("num_inference_steps")
    layers, proxy = context_sensitivity_proxy(pipe, sites, [call], 3, lambda _: None, count=2)
    exact_layers, exact = context_sensitivity(pipe, sites, [call], 3, lambda _: None)
    assert layers == exact_layers == [s.name for s in sites]
    assert all(v > 0 for v in proxy) and all(v > 0 for v in exact)
    before = run(pipe, KONTEXT, steps=3)
    assert np.array_equal(run(pipe, KONTEXT, steps=3), before)  # its hooks are gone


def test_merge_averages_each_group_into_its_kept_token():
    """merge=true: the first pruned block gets each kept reference token replaced by the mean of
    its group; generated tokens and pruned rows are untouched (the cut drops the latter)."""
    from ditaccel.methods.context_prune import ContextPrune, _State
    from ditaccel.pipelines import BlockIO, TokenLayout

    layout = TokenLayout(image=2, reference=4, grid=(1, 1, 2), reference_grid=(2, 2))
    hidden = torch.arange(6 * 3, dtype=torch.float32).reshape(1, 6, 3)
    state = _State(kept=torch.tensor([0, 2]), groups=torch.tensor([1, 1]), sizes=torch.tensor([1, 3]),
                   pruned=torch.tensor([1, 3]))  # fmt: skip
    _, kwargs = ContextPrune.merged(BlockIO(), (), {"hidden_states": hidden}, state, layout)
    merged = kwargs["hidden_states"]
    assert torch.equal(merged[:, :2], hidden[:, :2]) and torch.equal(merged[:, 2], hidden[:, 2])
    assert torch.allclose(merged[:, 4], hidden[:, [3, 4, 5]].mean(1))
    assert torch.equal(merged[:, [3, 5]], hidden[:, [3, 5]])


@pytest.mark.parametrize("name", [KONTEXT, QWEN_EDIT])
def test_merge_with_every_token_kept_is_the_plain_pipeline(name, make_pipe, tmp_path):
    """Groups of one: every proportional-attention weight is log(1) = 0."""
    pipe = make_pipe(name)
    plain = torch.from_numpy(run(pipe, name, steps=3).astype(np.float32))
    spec = f"context-prune:keep=0.9999,merge=true,profile={context_profile(pipe, tmp_path)}"
    acc = AcceleratedPipeline.from_pipe(pipe, spec)
    torch.testing.assert_close(
        torch.from_numpy(run(acc, name, steps=3).astype(np.float32)), plain, atol=1.0, rtol=0
    )


def test_cut_after_attention_is_the_block_on_the_kept_rows(make_pipe):
    """FLUX's double block cut after its attention gives the whole block's output rows: with every
    row kept bit for bit, with some kept the same rows (row-wise after the attention)."""
    pipe = make_pipe(KONTEXT)
    adapter = AcceleratedPipeline.from_pipe(pipe, []).adapter
    block = pipe.transformer.transformer_blocks[0]
    assert adapter.attention_cut_support(pipe.transformer, block) is None
    assert adapter.attention_cut_support(pipe.transformer, pipe.transformer.single_transformer_blocks[0])
    generator = torch.Generator().manual_seed(0)
    width, rows, text = block.norm1.linear.in_features, 24, 5
    head = block.attn.head_dim if hasattr(block.attn, "head_dim") else width // block.attn.heads
    call = dict(
        hidden_states=torch.randn(1, rows, width, generator=generator),
        encoder_hidden_states=torch.randn(1, text, width, generator=generator),
        temb=torch.randn(1, width, generator=generator),
        image_rotary_emb=(
            torch.randn(text + rows, head, generator=generator),
            torch.randn(text + rows, head, generator=generator),
        ),
    )
    with torch.no_grad():
        text_out, hidden_out = block(**call)
        every = torch.arange(rows)
        cut_text, cut_hidden = adapter.block_cut_after_attention(
            pipe.transformer, block, (), call, lambda: every
        )
        assert torch.equal(cut_text, text_out) and torch.equal(cut_hidden, hidden_out)
        some = torch.tensor([0, 3, 4, 10, 23])
        cut_text, cut_hidden = adapter.block_cut_after_attention(
            pipe.transformer, block, (), call, lambda: some
        )
    assert torch.equal(cut_text, text_out)
    torch.testing.assert_close(cut_hidden, hidden_out[:, some])


@pytest.mark.parametrize("name", [KONTEXT, QWEN_EDIT])
def test_the_cut_inside_the_pivotal_block_gives_what_the_cut_at_the_next_block_gives(
    name, make_pipe, tmp_path
):
    """The pivotal block run with its MLP on the kept rows gives the image of the same pruning done
    at the next block (everything after a block's attention is row-wise); with another hook on the
    block's forward (which the cut would skip) the cut steps aside to the next block."""
    from diffusers.hooks import HookRegistry, ModelHook

    pipe = make_pipe(name)
    acc = AcceleratedPipeline.from_pipe(
        pipe, f"context-prune:keep=0.25,profile={context_profile(pipe, tmp_path)}"
    )
    block = cut_block(acc, pipe.transformer)[1]
    rows: list[int] = []
    (block.ff if name == KONTEXT else block.img_mlp).register_forward_pre_hook(
        lambda _m, a: rows.append(a[0].shape[1])
    )
    cut = velocities(acc, name, steps=3)
    cut_rows, rows[:] = sorted(set(rows)), []
    HookRegistry.check_if_exists_or_initialize(block).register_hook(ModelHook(), "test.other")
    whole = velocities(acc, name, steps=3)
    layout_rows = sorted(set(rows))
    assert len(cut_rows) == 1 and len(layout_rows) == 1 and cut_rows[0] < layout_rows[0]
    for served, plain in zip(cut, whole, strict=True):  # the generated tokens' velocity, every call
        torch.testing.assert_close(served, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", [KONTEXT, QWEN_EDIT])
def test_the_cut_blocks_attention_computes_only_the_rows_that_stay(name, make_pipe, tmp_path):
    """In the pivotal block that is cut after its attention, every key attends but only the text,
    generated and kept reference rows are queries: the attention actually run (seen beneath the
    method's route) has that many query rows, on scoring steps and between them."""
    pipe = make_pipe(name)
    acc = AcceleratedPipeline.from_pipe(
        pipe, f"context-prune:keep=0.25,refresh=2,profile={context_profile(pipe, tmp_path)}"
    )
    method = acc.method("context-prune")
    shapes: list[tuple[int, int]] = []
    forwards: list[int] = []
    pipe.transformer.register_forward_pre_hook(lambda *_: forwards.append(1))
    with attention_run_inside(
        cut_block(acc, pipe.transformer)[1], lambda q, k: shapes.append((q.shape[2], k.shape[2]))
    ):
        run(acc, name, steps=4)
    kept = int(method.kept_mask.sum())
    reference = method.kept_mask.numel()
    assert 2 <= acc.stats.extra["context_scorings"] < len(forwards)  # scoring steps and others
    assert len(shapes) == len(forwards)
    for queries, keys in shapes:
        assert keys - queries == reference - kept > 0


FROZEN = [0.7] * 8  # equal sigmas: every step sees the same latents at the same timestep


@pytest.mark.parametrize(("name", "pivotal"), [(KONTEXT, 2), (QWEN_EDIT, 1)])
def test_reuse_serves_the_pruned_tokens_keys_and_values_of_the_scoring_step(
    name, pivotal, make_pipe, tmp_path
):
    """With ``reuse``, between scorings every block runs on the kept rows and the attention layers
    up to the pivotal one take the pruned tokens' keys and values from the last scoring step: on
    frozen inputs those are what the step would compute, so every call gives the velocity of
    pruning without reuse; scoring steps run every row through those layers."""
    pipe = make_pipe(name)
    # (Kontext: blocks 0 and 1 up to the pivotal layers, the second cut; Qwen-Image: the first, cut)
    spec = f"context-prune:keep=0.25,pivotal={pivotal},refresh=4,profile={context_profile(pipe, tmp_path)}"
    pruned = AcceleratedPipeline.from_pipe(pipe, spec)
    expected = velocities(pruned, name, steps=8, sigmas=FROZEN)
    reused = AcceleratedPipeline.from_pipe(pruned.remove(), spec + ",reuse=true")
    method = reused.method("context-prune")
    rows: list[int] = []
    first = reused.adapter.sequence_attention_sites(pipe.transformer)[0].module  # (inside block 0's hook)
    first.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(kw["hidden_states"].shape[1]), with_kwargs=True
    )
    served = velocities(reused, name, steps=8, sigmas=FROZEN)
    assert len(served) == len(expected) == len(rows)
    for ours, theirs in zip(served, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    kept, reference = int(method.kept_mask.sum()), method.kept_mask.numel()
    full = max(rows)
    per_step = len(rows) // 8  # (CFG: one forward per branch)
    for call, seen in enumerate(rows):
        assert seen == (full if (call // per_step) % 4 == 0 else full - reference + kept), call


def test_reuse_with_merge_is_refused():
    from ditaccel.methods.context_prune import ContextPruneConfig

    with pytest.raises(ValueError, match="merge and reuse"):
        ContextPruneConfig(keep=0.5, merge=True, reuse=True)


@pytest.mark.parametrize(("name", "pivotal"), [(KONTEXT, 2), (QWEN_EDIT, 1)])
def test_reuse_takes_the_pruned_keys_and_values_of_the_latest_scoring(name, pivotal, make_pipe, tmp_path):
    """On a moving trajectory, a step after a re-scoring appends to the kept rows' keys exactly the
    keys that scoring step computed for the tokens it pruned (not those of an earlier scoring)."""
    from ditaccel.calibration.context_sensitivity import reference_keys

    pipe = make_pipe(name)
    spec = f"context-prune:keep=0.25,pivotal={pivotal},refresh=3,reuse=true"
    acc = AcceleratedPipeline.from_pipe(pipe, f"{spec},profile={context_profile(pipe, tmp_path)}")
    method = acc.method("context-prune")
    site = acc.adapter.sequence_attention_sites(pipe.transformer)[0]
    forwards, seen = [0], []
    pipe.transformer.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    with attention_run_inside(
        site.module, lambda _q, k: seen.append((forwards[0], k.clone(), method.active[1]))
    ):
        run(acc, name, steps=6)
    per_step = forwards[0] // 6
    keys = {forward: (k, layout) for forward, k, layout in seen}
    pruned = {(step, branch): ~mask for step, branch, mask in method.kept_history}
    for scoring, later in ((0, 1), (3, 4)):
        k, layout = keys[scoring * per_step]
        reference = k[:, :, reference_keys(k.shape[2], layout, site.text_first)]
        served = keys[later * per_step][0][:, :, -int(pruned[scoring, 0].sum()) :]
        assert torch.equal(served, reference[:, :, pruned[scoring, 0]])
    assert not torch.equal(keys[4 * per_step][0][:, :, -4:], keys[1 * per_step][0][:, :, -4:])
