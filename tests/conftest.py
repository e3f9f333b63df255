"""Test settings: offline, quiet, one torch thread per process (tiny models lose to thread
overhead, and pytest-xdist already runs one process per core)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from ditaccel.media import output_images  # noqa: E402
from ditaccel.testing import example_call, tiny_pipeline  # noqa: E402


def run(pipe, name: str, **overrides) -> np.ndarray:
    """Call a (possibly accelerated) tiny pipeline with its example inputs; images as array."""
    return np.asarray(output_images(pipe(**example_call(name, **overrides))))


@pytest.fixture
def make_pipe():
    """Fresh tiny pipeline with progress bars off."""

    def make(name: str):
        pipe = tiny_pipeline(name)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make
