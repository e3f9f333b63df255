"""Quality metrics (PSNR, SSIM) and executed-FLOP counting."""

from .flops import FlopCount, attention_flops, count_flops, report_flops
from .image import as_float_images, psnr, psnr_from_mse, ssim

__all__ = [
    "FlopCount",
    "as_float_images",
    "attention_flops",
    "count_flops",
    "psnr",
    "psnr_from_mse",
    "report_flops",
    "ssim",
]
