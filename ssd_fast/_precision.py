"""The arithmetic of an importance pass: `importance(..., precision=...)`.

- "exact" (default): fp32 everywhere. Autocast is off, and the device's fp32 matmuls and
  convolutions are told to be IEEE fp32 for the pass, so that neither an ambient
  `torch.autocast` nor a global TF32 setting (PyTorch lets cuDNN convolutions use TF32
  by default) loosens the result: it stays within float rounding of the fp64
  batch-size-1 loop (an isolated entry can differ more where a pre-activation within
  rounding of 0 takes the other sign, so a ReLU passes the other gradient; see README).
- "tf32": on CUDA, cuBLAS matmuls and cuDNN convolutions and RNNs may use TF32 tensor cores
  (10-bit mantissa inputs, fp32 accumulation). A CPU has no TF32 arithmetic here, so on
  the CPU "tf32" runs exactly as "exact" does, and the result records "exact".
- "bf16": the forward and backward passes run under `torch.autocast(device, bfloat16)`.
  Activations and output gradients are bf16; the importance sums stay fp32, and each
  sample's gradient is still formed from that sample alone (the per-sample rules read
  the bf16 tensors and accumulate in fp32).
Every global flag touched is restored afterwards, also when the pass raises.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

PRECISIONS = ("exact", "tf32", "bf16")


def check_precision(precision: object) -> str:
    """`precision`, or a ValueError naming the allowed values."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def effective_precision(precision: str, device_type: str) -> str:
    """What a pass on `device_type` really computes with: "tf32" is "exact" off CUDA."""
    check_precision(precision)
    return "exact" if precision == "tf32" and device_type != "cuda" else precision


# torch's per-backend fp32 precision switches (torch >= 2.9), under torch.backends.
_SWITCHES = {
    "cuda": ("cuda.matmul", "cudnn.conv", "cudnn.rnn"),
    "cpu": ("mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn"),
}


def _fp32_switches(device_type: str) -> list[tuple[object, str]]:
    """(module, "fp32_precision") for each switch of `device_type` this torch has."""
    pairs = []
    for path in _SWITCHES.get(device_type, ()):
        module = _resolve(path)
        if module is not None and _has(module, "fp32_precision"):
            pairs.append((module, "fp32_precision"))
    return pairs


def _resolve(path: str) -> object | None:
    module: object = torch.backends
    for part in path.split("."):
        try:
            module = getattr(module, part)
        except (AttributeError, RuntimeError):
            return None
    return module


def _has(module: object, attr: str) -> bool:
    try:
        return isinstance(getattr(module, attr), str)
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def _switched(pairs: list[tuple[object, str]], value: object) -> Iterator[None]:
    saved = [getattr(m, a) for m, a in pairs]
    try:
        for m, a in pairs:
            setattr(m, a, value)
        yield
    finally:
        for (m, a), old in zip(pairs, saved):
            setattr(m, a, old)


def _read(getter, default):
    """A legacy flag's value, or `default` where torch refuses to read it (see `_cuda_tf32`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getter()
    except RuntimeError:
        return default


def _set_legacy(matmul_precision: str, cudnn_tf32: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy setters are deprecated from torch 2.9 on
        torch.set_float32_matmul_precision(matmul_precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


@contextlib.contextmanager
def _cuda_tf32(allow: bool) -> Iterator[None]:
    """cuBLAS and cuDNN TF32 on or off for the block, through torch's legacy setters.

    Why not the per-op `fp32_precision` switches, as on the CPU: torch keeps a legacy flag
    beside each of them and raises at the next cuBLAS matmul or cuDNN call when the two
    disagree ("a mix of the legacy and new APIs"). Setting only the new switch makes them
    disagree with torch's defaults (the legacy cuDNN flag is True). Each legacy setter
    writes both, so the state stays consistent. Afterwards the legacy flags and then every
    new switch are put back as they were, which restores the caller's state exactly. A
    caller whose flags already disagree cannot have them read: torch's defaults stand in.
    """
    new_switches = _fp32_switches("cuda") + _fp32_switches("cpu")  # the matmul setter writes both
    saved_new = [getattr(m, a) for m, a in new_switches]
    saved_matmul = _read(torch.get_float32_matmul_precision, "highest")
    saved_cudnn = _read(lambda: torch.backends.cudnn.allow_tf32, True)
    _set_legacy("high" if allow else "highest", allow)
    try:
        yield
    finally:
        _set_legacy(saved_matmul, saved_cudnn)
        for (m, a), old in zip(new_switches, saved_new):
            setattr(m, a, old)


def _fp32_mode(device_type: str, allow_tf32: bool) -> contextlib.AbstractContextManager:
    """IEEE fp32 (or TF32, on CUDA, when allowed) for the device's matmuls and convolutions."""
    if device_type == "cuda":
        return _cuda_tf32(allow_tf32)
    pairs = _fp32_switches(device_type)
    return _switched(pairs, "ieee") if pairs else contextlib.nullcontext()


@contextlib.contextmanager
def precision_scope(precision: str, device_type: str) -> Iterator[None]:
    """Run the block with the arithmetic `precision` asks for on `device_type`.

    The forward and the backward pass of the importance pass both run inside it.
    """
    effective = effective_precision(precision, device_type)
    if effective == "bf16":
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
        return
    with torch.autocast(device_type, enabled=False), _fp32_mode(device_type, allow_tf32=effective == "tf32"):
        yield
