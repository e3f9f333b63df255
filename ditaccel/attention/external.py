"""Which tokens of an attention sequence are *external*: conditioning tokens a call does not
generate (the reference image's tokens, the text tokens of joint attention). Shared by
``block-external`` and the profiler, which measures how fast their attention part drifts."""

from __future__ import annotations

import torch

from ..pipelines import TokenLayout

EXTERNAL_KINDS = ("reference", "text")


def sequence_indices(
    layout: TokenLayout, length: int, text_first: bool, kinds: frozenset[str], text_kept: int = 0
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(internal, external) token indices of an attention sequence of ``length`` tokens under
    ``layout``: the image stream, with the text before (``text_first``) or after it when the
    sequence holds the text (its first ``text_kept`` tokens stay internal). None when the sequence
    is neither (e.g. cross-attention)."""
    stream = layout.image_stream
    if length == stream + layout.text and layout.text_in_sequence:
        text_at = 0 if text_first else stream
        image_at = layout.text if text_first else 0
    elif length == stream:
        text_at, image_at = None, 0
    else:
        return None
    external = torch.zeros(length, dtype=torch.bool)
    if "reference" in kinds:
        start = image_at + layout.image
        external[start : start + layout.reference] = True
    if "text" in kinds and text_at is not None:
        external[text_at + text_kept : text_at + layout.text] = True
    return (~external).nonzero().flatten(), external.nonzero().flatten()
