"""Attention-level machinery shared by methods: block-mask prediction and routing a module's
attention calls to the kernels of ``ditaccel.kernels``."""

from .mask_prediction import MaskRule, predict_block_mask, token_blocks
from .sdpa_route import SDPARoute

__all__ = ["MaskRule", "SDPARoute", "predict_block_mask", "token_blocks"]
