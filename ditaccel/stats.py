"""What the last pipeline call did, as ``pipe.stats``: printable as a table, serialisable.

Methods record what they reused or skipped; the step tracker records every denoiser forward.
Counts are of block executions: one block run for one forward is one unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .hooks.step_info import StepInfo


@dataclass
class StepRecord:
    """One denoiser forward: which step and branch, how many blocks ran, which were reused."""

    step: int
    branch: int
    blocks_run: int = 0
    blocks_reused: int = 0
    reused: list[str] = field(default_factory=list)


@dataclass
class CallStats:
    """Statistics of one pipeline call.

    ``blocks_total`` counts block executions of a plain call (forwards x blocks);
    ``blocks_reused`` those a method served from a cache instead. ``tokens_kept`` and
    ``attention_density`` are shares in [0, 1], ``None`` where no method changed them.
    ``flops_saved_est`` is the methods' own estimate; the bench counts executed FLOPs instead.
    """

    pipeline: str = ""
    methods: list[str] = field(default_factory=list)
    steps: int = 0
    forwards: int = 0
    blocks_per_forward: int = 0
    records: list[StepRecord] = field(default_factory=list)
    tokens_kept: float | None = None
    attention_density: float | None = None
    flops_saved_est: float | None = None
    wall_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # per method state (its owner key): the most bytes of tensors it held after any forward
    cache_peak_bytes: dict[str, int] = field(default_factory=dict)
    # per attention layer: [blocks visited, blocks of dense attention], summed over its calls;
    # visited counts may be device tensors (no host sync in the loop), read when reported
    attention_blocks: dict[str, list] = field(default_factory=dict)

    # --- recording ----------------------------------------------------------------------------
    def begin_forward(self, info: StepInfo) -> None:
        self.forwards += 1
        self.steps = max(self.steps, info.step + 1)
        self.records.append(StepRecord(info.step, info.branch, blocks_run=self.blocks_per_forward))

    def reuse_blocks(self, count: int, names: list[str] | None = None) -> None:
        """The current forward served ``count`` blocks (named ``names``) from a cache."""
        record = self.records[-1]
        record.blocks_reused += count
        record.blocks_run -= count
        record.reused.extend(names or [])

    def record_attention(self, layer: str, visited: Any, total: int) -> None:
        """An attention call of ``layer`` visited ``visited`` of ``total`` (query, key) blocks."""
        entry = self.attention_blocks.setdefault(layer, [0, 0])
        entry[0] = entry[0] + visited
        entry[1] += total

    # --- summaries ----------------------------------------------------------------------------
    def attention_density_by_layer(self) -> dict[str, float]:
        """Realised attention density per layer (share of query-key blocks computed)."""
        return {
            name: float(visited) / total for name, (visited, total) in self.attention_blocks.items() if total
        }

    def realised_attention_density(self) -> float | None:
        """Share of all query-key blocks computed, or the methods' own value where none recorded."""
        if not self.attention_blocks:
            return self.attention_density
        visited = sum(float(v) for v, _ in self.attention_blocks.values())
        return visited / sum(t for _, t in self.attention_blocks.values())

    @property
    def blocks_total(self) -> int:
        return self.forwards * self.blocks_per_forward

    @property
    def blocks_reused(self) -> int:
        return sum(r.blocks_reused for r in self.records)

    @property
    def steps_computed(self) -> int:
        """Steps on which every forward ran every block."""
        reused = {r.step for r in self.records if r.blocks_reused}
        return self.steps - len(reused)

    @property
    def steps_with_reuse(self) -> list[int]:
        """Steps on which some forward served blocks from a cache."""
        return sorted({r.step for r in self.records if r.blocks_reused})

    def reuse_by_block(self) -> dict[str, int]:
        """How many forwards reused each block (blocks never reused are absent)."""
        counts: dict[str, int] = {}
        for record in self.records:
            for name in record.reused:
                counts[name] = counts.get(name, 0) + 1
        return counts

    def reuse_map(self) -> list[list[int]]:
        """Per forward, ``[step, branch, blocks run, blocks reused]``: where the cache served."""
        return [[r.step, r.branch, r.blocks_run, r.blocks_reused] for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "methods": self.methods,
            "steps": self.steps,
            "steps_computed": self.steps_computed,
            "steps_with_reuse": self.steps - self.steps_computed,
            "forwards": self.forwards,
            "blocks_total": self.blocks_total,
            "blocks_reused": self.blocks_reused,
            "reused_steps": self.steps_with_reuse,
            "reused_blocks": self.reuse_by_block(),
            "tokens_kept": self.tokens_kept,
            "attention_density": self.realised_attention_density(),
            **(
                {"attention_density_by_layer": self.attention_density_by_layer()}
                if self.attention_blocks
                else {}
            ),
            "flops_saved_est": self.flops_saved_est,
            "cache_peak_bytes": sum(self.cache_peak_bytes.values()),
            **({"cache_peak_bytes_by_owner": dict(self.cache_peak_bytes)} if self.cache_peak_bytes else {}),
            "wall_s": self.wall_s,
            **self.extra,
        }

    def table(self):
        """A rich ``Table`` of the summary."""
        from rich.table import Table

        table = Table(title=f"ditaccel: {self.pipeline} [{' + '.join(self.methods) or 'none'}]")
        table.add_column("what")
        table.add_column("value", justify="right")
        for key, value in self.to_dict().items():
            if key in ("pipeline", "methods") or value is None or isinstance(value, dict):
                continue
            table.add_row(key.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
        return table

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=80, record=True, file=_Null())
        console.print(self.table())
        return console.export_text()


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass
