"""Attention kernels, shipped as ``ditaccel.kernels``.

Each Triton kernel lives beside a plain PyTorch reference with the same signature; Triton is
imported lazily so the package works without it (CPU users get the reference path).

The kernel modules live in the checkout's top-level ``kernels/`` folder, which setuptools maps to
``ditaccel/kernels/`` in a wheel. That folder has no ``__init__.py`` on purpose: ``kernels`` is also
a package on PyPI (transformers imports it), and Python takes the first *regular* package named
``kernels`` it meets on ``sys.path``, whose first entry is the current folder for ``python -m``,
``python -c`` and notebook kernels. Without an ``__init__.py`` the folder is only a namespace
portion there, so an installed ``kernels`` always wins. This module is what makes it a package of
ditaccel: it names the folder as its ``__path__`` (a namespace package nested in a regular one is
not found by setuptools' editable finder) and re-exports the kernels' public names.
"""

from pathlib import Path


def _kernel_folder() -> str:
    here = Path(__file__).resolve().parent
    installed = here / "kernels"  # a wheel: setuptools copied kernels/ in beside this file
    checkout = here.parent / "kernels"  # an editable install or a source tree: the top-level folder
    if installed.is_dir():
        return str(installed)
    if (here.parent / "pyproject.toml").is_file() and (checkout / "attention.py").is_file():
        return str(checkout)
    raise ImportError(f"ditaccel.kernels: no kernel folder beside {here} (a broken install?)")


# From here on this module is a package: submodules are found in __path__, relative imports resolve
# inside it.
__path__ = [_kernel_folder()]
__spec__.submodule_search_locations = __path__
__package__ = __name__

from .attention import (  # noqa: E402  (needs __path__)
    attention_with_lse,
    attention_with_lse_reference,
    block_sparse_attention,
    block_sparse_attention_reference,
    merge_attention,
    merge_attention_reference,
    triton_available,
    use_triton,
)
from .block_mask import BlockMask  # noqa: E402

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
