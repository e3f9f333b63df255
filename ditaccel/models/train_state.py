"""Resumable training state of shapes-flux's denoiser stage, saved as plain files.

A run that is stopped (a session ends, a machine is handed back) continues from its last state as
if it had never stopped: the live weights, their moving average, the optimiser's moments, the step
and the random streams are all kept. Layout of a state folder::

    pipeline/          the EMA pipeline at that step (loads with FluxPipeline.from_pretrained;
                       this is the checkpoint that gets evaluated and shipped)
    live.safetensors   the raw weights of the trained modules and the auxiliary head
    optimizer.pt       AdamW's state (tensors and numbers only: loaded with weights_only=True)
    progress.json      step, loss curve, evaluations, the config and the numpy stream's state
    rng.safetensors    the torch generator's state

Nothing is unpickled on load beyond tensors and numbers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@dataclass
class Progress:
    """What a run has done so far."""

    step: int = 0
    seconds: float = 0.0  # training seconds spent (evaluations included), over every resumed leg
    losses: list[float] = field(default_factory=list)  # mean loss per log interval
    evals: list[dict] = field(default_factory=list)
    legs: list[dict] = field(default_factory=list)  # one entry per start or resume: step, device
    stages: dict = field(default_factory=dict)  # training.json records of the stages before this one

    def record(self) -> dict:
        """The denoiser stage's entry in ``training.json``."""
        return {
            "steps": self.step,
            "seconds": self.seconds,
            "loss_curve": self.losses,
            "eval": self.evals,
            "legs": self.legs,
        }


def _flat(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().float().cpu().clone()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }


def _unflat(modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor]) -> None:
    for name, module in modules.items():
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(own)


def save(
    folder: Path,
    pipeline,
    live: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    rng: np.random.Generator,
    generator: torch.Generator,
    config: dict,
) -> None:
    """Write the state to ``folder`` (replaced whole: a crash mid-save leaves the old one)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pipeline.save_pretrained(tmp / "pipeline", safe_serialization=True)
    save_file(_flat(live), tmp / "live.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file({"torch": generator.get_state()}, tmp / "rng.safetensors")
    record = {"progress": progress.__dict__, "numpy_rng": rng.bit_generator.state, "config": config}
    (tmp / "progress.json").write_text(json.dumps(record, indent=1))
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)


def load(
    folder: Path,
    live: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[Progress, dict]:
    """Restore ``live``, the optimiser and both random streams from ``folder``; returns the progress
    and the config the state was saved with. The EMA weights are the ones in ``folder/pipeline``."""
    folder = Path(folder)
    _unflat(live, load_file(folder / "live.safetensors"))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    generator.set_state(load_file(folder / "rng.safetensors")["torch"])
    record = json.loads((folder / "progress.json").read_text())
    rng.bit_generator.state = record["numpy_rng"]
    return Progress(**record["progress"]), record["config"]


def export(folder: Path, out: Path) -> Path:
    """Write the state's EMA pipeline to ``out`` as a finished model folder, with the
    ``training.json`` the trainer writes at the end of a run (the config with ``stop_after`` at the
    state's step, the denoiser's record, ``continues``: the record of the model it started from).
    How a checkpoint of a run still in progress is shipped: the run itself continues from ``folder``."""
    folder, out = Path(folder), Path(out)
    record = json.loads((folder / "progress.json").read_text())
    progress = Progress(**record["progress"])
    config = {**record["config"], "stop_after": progress.step}
    log: dict = {"config": config, **progress.stages}
    init = config.get("init")
    if init is not None and (Path(init) / "training.json").is_file():
        previous = json.loads((Path(init) / "training.json").read_text())
        # an earlier checkpoint of this run, exported over the model it started from: that model's record
        log["continues"] = previous["continues"] if "exported_from" in previous else previous
    log["denoiser"] = progress.record()
    log["total_seconds"] = progress.seconds
    log["exported_from"] = {"state": str(folder), "step": progress.step}
    out.mkdir(parents=True, exist_ok=True)
    for part in (folder / "pipeline").iterdir():
        target = out / part.name
        if target.is_dir():
            shutil.rmtree(target)
        (shutil.copytree if part.is_dir() else shutil.copy2)(part, target)
    for config_file in out.glob("*/config.json"):  # where the state's copy was loaded from: not the model's
        component = json.loads(config_file.read_text())
        if component.pop("_name_or_path", None) is not None:
            config_file.write_text(json.dumps(component, indent=2, sort_keys=True) + "\n")
    (out / "training.json").write_text(json.dumps(log, indent=1))
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Export a training state's EMA pipeline as a model folder.")
    parser.add_argument("state", type=Path, help="a state folder (--state of the trainer)")
    parser.add_argument("out", type=Path, help="the model folder to write (e.g. ditaccel/models/shapes-flux)")
    args = parser.parse_args()
    print(
        f"exported step {json.loads((args.state / 'progress.json').read_text())['progress']['step']} "
        f"to {export(args.state, args.out)}"
    )


if __name__ == "__main__":
    main()
