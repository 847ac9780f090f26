"""Checksums that let `Importances.load` tell a damaged file from a good one.

safetensors checks the file's layout (header, offsets, sizes), not its values: a flipped
bit in a tensor's bytes loads as a slightly different number. So `save` records a
SHA-256 of every tensor (its dtype, shape and bytes) and of the metadata text in the
file's header, and `load` recomputes them.
"""

from __future__ import annotations

import hashlib

import torch


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (as the file stores them, on the CPU)."""
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)};".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def text_digest(text: str) -> str:
    """SHA-256 of a header string."""
    return hashlib.sha256(text.encode()).hexdigest()
