"""Test settings: offline, quiet, one torch thread per process (tiny models lose to thread
overhead, and pytest-xdist already runs one process per core)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
if not torch.cuda.is_available():  # Triton kernels run on CPU tensors in its interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

# where make_pipe puts the tiny pipelines: benchmarks/gpu_check.sh sets cuda
DEVICE = os.environ.get("DITACCEL_TEST_DEVICE", "cpu")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_connect = socket.socket.connect


def _loopback_only(sock, address):
    """Nothing in the suite may reach the network (notebook kernels talk over loopback)."""
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and host not in _LOOPBACK:
        raise RuntimeError(f"a test tried to reach the network: {address}")
    return _connect(sock, address)


socket.socket.connect = _loopback_only

from ditaccel.media import output_images  # noqa: E402
from ditaccel.testing import example_call, tiny_pipeline  # noqa: E402


def run(pipe, name: str, **overrides) -> np.ndarray:
    """Call a (possibly accelerated) tiny pipeline with its example inputs; images as array. The
    global torch RNG is seeded too: SD3's ControlNet pipeline samples its control latents from it."""
    torch.manual_seed(0)
    return np.asarray(output_images(pipe(**example_call(name, **overrides))))


def context_profile(pipe, tmp_path, pivotal: str | None = None, steps: int | None = None, **fields) -> str:
    """The path of a synthetic profile of ``pipe`` whose context sensitivity makes ``pivotal``
    (default: the first attention layer) the most sensitive layer, for ``context-prune``."""
    from ditaccel import AcceleratedPipeline
    from ditaccel.testing import synthetic_profile

    acc = AcceleratedPipeline.from_pipe(pipe, [])
    sites = [site.name for site in acc.adapter.sequence_attention_sites(pipe.transformer)]
    acc.remove()
    pivotal = pivotal or sites[0]
    values = {"context_layers": sites, "context_sensitivity": [0.9 if s == pivotal else 0.1 for s in sites]}
    if steps is not None:
        values["steps"] = steps
    path = tmp_path / "profile.json"
    synthetic_profile(pipe, **{**values, **fields}).save(path)
    return str(path)


def with_profile(spec: str, pipe, tmp_path, steps: int) -> str:
    """``spec`` with a synthetic profile of ``pipe`` (``steps`` steps) given to ``calibrated-cache``
    or ``context-prune``; other specs unchanged."""
    if spec.startswith("context-prune"):
        path = context_profile(pipe, tmp_path, steps=steps)
        return spec.replace("context-prune:", f"context-prune:profile={path},")
    if not spec.startswith("calibrated-cache"):
        return spec
    from ditaccel.testing import synthetic_profile

    path = synthetic_profile(pipe, steps=steps).save(tmp_path / "profile.json")
    return spec.replace("calibrated-cache:", f"calibrated-cache:profile={path},")


def velocities(pipe, name: str, **call) -> list[torch.Tensor]:
    """The generated tokens' velocity of every transformer call of one pipeline call (the rows
    the loop keeps), for tests of what a method serves."""
    from ditaccel import AcceleratedPipeline
    from ditaccel.pipelines import adapter_for

    adapter = adapter_for(pipe.pipeline if isinstance(pipe, AcceleratedPipeline) else pipe)
    seen: list[torch.Tensor] = []

    def keep(module, args, kwargs, out):
        seen.append(out[0][:, : adapter.token_layout(module, args, kwargs).image].clone())

    hook = pipe.transformer.register_forward_hook(keep, with_kwargs=True)
    try:
        run(pipe, name, **call)
    finally:
        hook.remove()
    return seen


@pytest.fixture
def make_pipe():
    """Fresh tiny pipeline with progress bars off."""

    def make(name: str):
        pipe = tiny_pipeline(name).to(DEVICE)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make


def module_files() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, with its file (``kernels/`` and
    ``pipelines/`` mapped in as ``ditaccel.kernels`` / ``ditaccel.pipelines``)."""
    root = Path(__file__).resolve().parents[1]
    folders = {
        "ditaccel": root / "ditaccel",
        "ditaccel.kernels": root / "kernels",
        "ditaccel.pipelines": root / "pipelines",
    }
    files = {}
    for package, folder in folders.items():
        for path in folder.rglob("*.py"):
            name = ".".join((package, *path.relative_to(folder).with_suffix("").parts))
            files[name.removesuffix(".__init__")] = path
    return files
