"""Attention kernels shipped as ``ditaccel.kernels``.

Each Triton kernel lives beside a plain PyTorch reference with the same signature; Triton is
imported lazily so the package works without it (CPU users get the reference path).
"""

# In a source checkout run from its root, this folder is also importable as a top-level
# ``kernels`` (libraries probe for the hub package of that name, e.g. transformers at import).
# Stay an empty module then: no relative imports outside ``ditaccel``, and no ``__version__``,
# so the probe finds no usable package.
if __name__ == "ditaccel.kernels":
    from .attention import (
        attention_with_lse,
        attention_with_lse_reference,
        block_sparse_attention,
        block_sparse_attention_reference,
        merge_attention,
        merge_attention_reference,
        triton_available,
        use_triton,
    )
    from .block_mask import BlockMask

    __all__ = [
        "BlockMask",
        "attention_with_lse",
        "attention_with_lse_reference",
        "block_sparse_attention",
        "block_sparse_attention_reference",
        "merge_attention",
        "merge_attention_reference",
        "triton_available",
        "use_triton",
    ]
