"""Attention kernels shipped as ``ditaccel.kernels``.

Each Triton kernel lives beside a plain PyTorch reference with the same signature; Triton is
imported lazily so the package works without it (CPU users get the reference path).
"""
