"""Which path serves a layer's per-sample weight sums: the fused op or the torch path.

The fused ops (`ssd_fast::per_sample_sq_conv2d_`, `ssd_fast::per_sample_sq_tokens_`) add
sum_b g_b**2 for a layer without ever forming the per-sample gradients g_b. The rules keep
their pure-PyTorch path (unfold + bmm in chunks) as the tested reference, and fall back to
it when the library has no kernel for the device.

On CUDA the choice is made by measurement, never by a fixed rule:
- without a calibration for this GPU, CUDA takes the torch path while `CUDA_VERIFIED` is
  False (the kernels have not yet passed `benchmarks/gpu_check.sh` on a GPU);
- `bash benchmarks/gpu_check.sh` checks the fused ops against the torch path on the device,
  then times both per layer shape and writes a calibration file (JSON; path below). When it
  holds this GPU's name, a cost model fitted to those timings (time = overhead + flops /
  rate, plus the per-sample gradients' memory traffic for the torch path) picks, per layer
  shape and precision, whichever path it predicts to be faster.
The fused op's precision follows the pass's (see `ssd_fast._precision`): bf16 operands
(autocast) use the bf16 tensor-core kernel, a pass that allows TF32 the TF32 one, and
"exact" fp32 FMAs. Each choice is recorded (`recording()`), and `importance()` stores the
record in `Importances.per_sample_paths`, so that a result says how it was computed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import _ops

# Set to False to make every rule take its pure-PyTorch path (tests and benchmarks compare
# the two this way).
enabled = True

# The CUDA kernels compile, but have never run on a GPU: they stay off until
# `bash benchmarks/gpu_check.sh` (tests/per_sample/test_fused.py against the torch path,
# then the benchmark) has passed on an H100/H200. Until then CUDA uses the torch path,
# unless a calibration written by gpu_check.sh on this very GPU model says otherwise.
CUDA_VERIFIED = False

# Where gpu_check.sh writes the calibration, and where it is read from.
CALIBRATION_ENV = "SSD_FAST_PER_SAMPLE_CALIBRATION"
CALIBRATION_VERSION = 1


def calibration_path() -> Path:
    """$SSD_FAST_PER_SAMPLE_CALIBRATION, else ~/.cache/ssd_fast/per_sample_calibration.json."""
    env = os.environ.get(CALIBRATION_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ssd_fast" / "per_sample_calibration.json"


def use_fused(out: torch.Tensor) -> bool:
    """True when the fused op can add into the sums tensor `out` and is allowed on its device."""
    if not enabled or out.dtype != torch.float32 or not out.is_contiguous():
        return False
    if out.device.type == "cuda" and not CUDA_VERIFIED and _calibration_for(out.device) is None:
        return False
    return _ops.has_per_sample_kernel(out.device.type)


def pass_precision(dy: torch.Tensor, x: torch.Tensor) -> str:
    """The fused op's precision for this pass: "bf16" for bf16 operands, "tf32" where the
    pass lets fp32 matmuls use TF32, else "exact"."""
    if dy.dtype == torch.bfloat16 or x.dtype == torch.bfloat16:
        return "bf16"
    if dy.dtype == torch.float32 and x.dtype == torch.float32 and _tf32_allowed():
        return "tf32"
    return "exact"


def _tf32_allowed() -> bool:
    matmul = torch.backends.cuda.matmul
    mode = getattr(matmul, "fp32_precision", None)
    return mode == "tf32" if mode not in (None, "none") else bool(matmul.allow_tf32)


def choose(
    kind: str, out: torch.Tensor, dy: torch.Tensor, x: torch.Tensor, shape: tuple[int, int, int, int]
) -> str | None:
    """The precision to call the fused op with for this layer, or None for the torch path.

    kind: "conv2d" or "tokens"; shape: (batch, outputs, inputs per group, positions).
    The choice is recorded for `recording()`."""
    precision = None
    if use_fused(out):
        precision = pass_precision(dy, x) if out.device.type == "cuda" else "exact"
        calibration = _calibration_for(out.device) if out.device.type == "cuda" else None
        if calibration is not None and not calibration.fused_is_faster(kind, precision, shape):
            precision = None
    _record(kind, shape, "torch" if precision is None else f"fused/{precision}")
    return precision


# ---- the record of choices ------------------------------------------------------------
_records: list[dict[str, str]] = []


@contextlib.contextmanager
def recording() -> Iterator[dict[str, str]]:
    """Collect the choices made inside the block: {"<kind> O.. K.. L..": "fused/<precision>" | "torch"}
    (paths joined by "+" when a layer shape took more than one)."""
    record: dict[str, str] = {}
    _records.append(record)
    try:
        yield record
    finally:
        _records.remove(record)


def _record(kind: str, shape: tuple[int, int, int, int], path: str) -> None:
    if not _records:
        return
    _, o, k, length = shape
    key = f"{kind} O{o} K{k} L{length}"
    for record in _records:
        seen = set(record[key].split("+")) if key in record else set()
        record[key] = "+".join(sorted(seen | {path}))


# ---- the calibration's cost model -------------------------------------------------------
class Calibration:
    """Per (kind, precision): time = a + flops / rate for the fused op, and
    time = a + flops / rate + bytes / bandwidth for the torch path, fitted to gpu_check's timings."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.device = str(data["device"])
        self._fits: dict[str, tuple[list[float], list[float]]] = {}
        for key, rows in data["timings"].items():
            self._fits[key] = (_fit(rows, "fused_s", torch_path=False), _fit(rows, "torch_s", torch_path=True))

    def fused_is_faster(self, kind: str, precision: str, shape: tuple[int, int, int, int]) -> bool:
        fits = self._fits.get(f"{kind}/{precision}")
        if fits is None:
            return False  # not measured on this device: the tested torch path
        features = _features(shape)
        fused = sum(c * f for c, f in zip(fits[0], features, strict=False))
        torch_path = sum(c * f for c, f in zip(fits[1], features, strict=False))
        return fused < torch_path


def _features(shape: tuple[int, int, int, int]) -> list[float]:
    """1, the per-sample products' flops, the torch path's per-sample gradient bytes."""
    batch, o, k, length = shape
    return [1.0, 2.0 * batch * o * k * length, 4.0 * 3 * batch * o * k]


def _fit(rows: list[dict[str, Any]], target: str, *, torch_path: bool) -> list[float]:
    """Non-negative least squares over the features (the torch path uses all three)."""
    n = 3 if torch_path else 2
    a = torch.tensor([_features(tuple(r["shape"]))[:n] for r in rows], dtype=torch.float64)
    b = torch.tensor([float(r[target]) for r in rows], dtype=torch.float64)
    scale = a.abs().amax(0).clamp_min(1e-30)
    coef = torch.linalg.lstsq(a / scale, b.unsqueeze(1)).solution.squeeze(1).clamp_min(0) / scale
    return coef.tolist()


def load_calibration(path: Path) -> Calibration | None:
    """The calibration at `path`, or None when there is none or it is unreadable (with a warning)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        import warnings

        warnings.warn(f"ssd_fast: ignoring the per-sample calibration {path}: {e}", stacklevel=2)
        return None
    try:
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {CALIBRATION_VERSION}")
        return Calibration(data)
    except (KeyError, TypeError, ValueError) as e:
        import warnings

        warnings.warn(f"ssd_fast: ignoring the per-sample calibration {path}: {e}", stacklevel=2)
        return None


@functools.lru_cache(maxsize=8)
def _calibration_cached(path: str, mtime: float) -> Calibration | None:
    return load_calibration(Path(path))


def _calibration_for(device: torch.device) -> Calibration | None:
    """The calibration, if one exists and was measured on this device's GPU model."""
    path = calibration_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    calibration = _calibration_cached(str(path), mtime)
    if calibration is None or calibration.device != torch.cuda.get_device_name(device):
        return None
    return calibration
