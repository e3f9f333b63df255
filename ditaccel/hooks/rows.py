"""Outputs of a denoiser call that computed only some rows of its image stream."""

from __future__ import annotations

import torch


def full_length(output, length: int):
    """The output padded back to ``length`` rows of the image stream: reference rows the call did
    not compute (left out, or pruned part-way) are zeros; the pipelines keep only the generated
    tokens' rows."""
    sample = output[0] if isinstance(output, tuple) else output.sample
    if sample.dim() != 3 or sample.shape[1] >= length:
        return output
    padded = torch.cat(
        [sample, sample.new_zeros(sample.shape[0], length - sample.shape[1], sample.shape[2])], 1
    )
    return (padded, *output[1:]) if isinstance(output, tuple) else type(output)(sample=padded)
