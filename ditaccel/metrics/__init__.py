"""Quality metrics (PSNR, SSIM) and executed-FLOP counting."""

from .flops import FlopCount, attention_flops, count_flops, report_flops
from .image import as_float_images, psnr, ssim

__all__ = ["FlopCount", "as_float_images", "attention_flops", "count_flops", "psnr", "report_flops", "ssim"]
