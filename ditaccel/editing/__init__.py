"""Region-aware editing: which tokens an edit changes, from the model's own one-step estimate
(instruction edits) or from a user mask plus the source's high-frequency detail; the velocity
cache of region steps; a drawing of the partition."""

from .masks import high_frequency_tokens, mask_tokens
from .overlay import overlay
from .regions import clean_token_mask, edited_tokens, one_step_estimate
from .velocity import VelocityCache

__all__ = [
    "VelocityCache",
    "clean_token_mask",
    "edited_tokens",
    "high_frequency_tokens",
    "mask_tokens",
    "one_step_estimate",
    "overlay",
]
