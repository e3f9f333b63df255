"""Figures of a calibration profile, for a person deciding whether and how to trust it.

``change.png``: the step x block heatmap of residual change with its spread across prompts;
``attention.png``: per-layer attention density (and context sensitivity, where measured);
``plan.png``: the stored cache plans drawn on the heatmap (served blocks marked);
``external.png``: how fast the keys of external tokens (reference image, text) move, per layer
and step, which is what ``block-external``'s refresh interval trades against.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .profile import Profile  # noqa: E402

_SHOWN_TARGETS = (0.6, 0.5, 0.4)  # plan panels drawn: the stored plans nearest these FLOPs ratios


def _short(name: str) -> str:
    return name.replace("single_transformer_blocks", "single").replace("transformer_blocks", "blocks")


def _heatmap(ax, profile: Profile, values: np.ndarray, title: str, label: str):
    image = ax.imshow(values.T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    ax.set_xlabel("step")
    ax.set_ylabel("block")
    ticks = np.linspace(0, len(profile.blocks) - 1, min(len(profile.blocks), 12)).round().astype(int)
    ax.set_yticks(ticks, [_short(profile.blocks[i]) for i in ticks], fontsize=7)
    ax.set_title(title, fontsize=10)
    plt.colorbar(image, ax=ax, label=label)


def change_figure(profile: Profile, path: Path) -> Path:
    change = np.asarray(profile.block_change)
    cv = np.asarray(profile.block_change_cv)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    _heatmap(axes[0], profile, change, "residual change vs previous step (mean over prompts)", "relative L1")
    _heatmap(axes[1], profile, cv, f"spread across {profile.prompts} prompts", "coefficient of variation")
    fig.suptitle(f"{profile.model}: where the blocks are redundant")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def attention_figure(profile: Profile, path: Path) -> Path:
    panels = 2 if profile.context_layers else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), constrained_layout=True, squeeze=False)
    ax = axes[0, 0]
    x = np.arange(len(profile.attention_layers))
    ax.bar(x, profile.attention, color="tab:blue", alpha=0.7, label="layer mean")
    for i, heads in enumerate(profile.attention_by_head):
        ax.scatter([i] * len(heads), heads, color="black", s=8, zorder=3, label="heads" if i == 0 else None)
    ax.set_xticks(
        x, [_short(n).removesuffix(".attn") for n in profile.attention_layers], rotation=60, fontsize=7
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"key density holding {profile.mass:.0%} of attention")
    ax.set_title("attention density per layer (lower: sparser)", fontsize=10)
    ax.legend(fontsize=8)
    if profile.context_layers:
        ax = axes[0, 1]
        x = np.arange(len(profile.context_layers))
        ax.bar(x, profile.context_sensitivity, color="tab:orange")
        labels = [_short(n).removesuffix(".attn") for n in profile.context_layers]
        ax.set_xticks(x, labels, rotation=60, fontsize=7)
        ax.set_ylabel("output change (relative L1)")
        ax.set_title("sensitivity to dropping reference tokens", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plan_figure(profile: Profile, path: Path) -> Path | None:
    # the heatmap is on the profile's grid: plans verified at other step counts are not drawn
    plans = [p for p in profile.plans.get("calibrated-cache", []) if p["steps"] == profile.steps]
    if not plans:
        return None
    chosen = []
    for target in _SHOWN_TARGETS:
        best = min(plans, key=lambda p: abs(p["flops_ratio"] - target))
        if best not in chosen:
            chosen.append(best)
    change = np.asarray(profile.block_change)
    fig, axes = plt.subplots(
        1, len(chosen), figsize=(5 * len(chosen), 4), constrained_layout=True, squeeze=False
    )
    for ax, plan in zip(axes[0], chosen, strict=True):
        _heatmap(ax, profile, change, "", "relative L1")
        served = [(t, b) for t, blocks in enumerate(plan["reuse"]) for b in blocks]
        if served:
            steps, blocks = zip(*served, strict=True)
            ax.scatter(steps, blocks, marker="s", s=30, facecolors="none", edgecolors="cyan", linewidths=1.2)
        ax.set_title(
            f"plan flops_ratio={plan['flops_ratio']:.2f} (order {plan['order']}): "
            f"{len(served)} served (cyan)",
            fontsize=9,
        )
    fig.suptitle(f"{profile.model}: calibrated cache plans on the change heatmap")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def external_figure(profile: Profile, path: Path) -> Path | None:
    if not profile.external_drift:
        return None
    kinds = list(profile.external_drift)
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(6 * len(kinds), 3.8), constrained_layout=True, squeeze=False
    )
    for ax, kind in zip(axes[0], kinds, strict=True):
        values = np.asarray(profile.external_drift[kind])
        image = ax.imshow(values.T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
        ax.set_yticks(
            range(len(profile.attention_layers)), [_short(n) for n in profile.attention_layers], fontsize=7
        )
        ax.set_xlabel("step")
        ax.set_title(f"{kind} tokens: key change vs previous step", fontsize=10)
        plt.colorbar(image, ax=ax, label="relative L1")
    fig.suptitle(f"{profile.model}: drift of the external tokens (block-external)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def profile_plots(profile: Profile, folder: str | Path) -> list[Path]:
    """Write the figures into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [change_figure(profile, folder / "change.png")]
    if profile.attention_layers:
        paths.append(attention_figure(profile, folder / "attention.png"))
    plan = plan_figure(profile, folder / "plan.png")
    if plan is not None:
        paths.append(plan)
    external = external_figure(profile, folder / "external.png")
    if external is not None:
        paths.append(external)
    return paths
