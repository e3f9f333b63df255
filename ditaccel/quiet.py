"""Silences third-party messages a ditaccel user cannot act on.

transformers 5 logs "`CLIPImageProcessor` requires torchvision (not installed); falling back to
`CLIPImageProcessorPil`" (and the same for SigLIP) when diffusers' pipeline modules import those
names at import time, whether or not the pipeline has an image encoder. No pipeline ditaccel
accelerates uses an image processor to denoise, and the PIL fallback is what the user gets anyway,
so that one message is dropped; every other transformers message passes through. Importing
ditaccel installs the filter.
"""

from __future__ import annotations

import logging

_LOGGER = "transformers.utils.import_utils"
_MESSAGE = "requires torchvision (not installed); falling back to"


class _TorchvisionFallbackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _MESSAGE not in record.getMessage()


def install() -> None:
    """Add the filter to transformers' import logger (once; idempotent)."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(f, _TorchvisionFallbackFilter) for f in logger.filters):
        logger.addFilter(_TorchvisionFallbackFilter())


install()
