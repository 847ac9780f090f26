"""`Importances`: a validated, read-only map from parameter name to an fp32 importance tensor.

It carries what is needed to use it correctly later: how it was computed (mode,
label-free or not, the batch size, which batch-mode results depend on, and the
arithmetic precision; files written before precision was recorded load as "exact",
the only arithmetic there was), how much data
went in, and a fingerprint of the model it was computed for. It is validated once, at
construction, so that `dampen` can trust it; files are safetensors, so loading one
executes no code.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from . import _checks, _parallel
from ._checkpoint import take_probe
from ._checksums import tensor_digest, text_digest
from ._pairing import model_fingerprint, pair_with_model
from ._precision import check_precision

MODES = ("batch", "per_sample")
# What an Importances records beside its tensors (its metadata(), and the saved file's header).
METADATA = (
    "mode",
    "label_free",
    "n_samples",
    "n_batches",
    "batch_size",
    "precision",
    "fingerprint",
    "checkpoint_probe",
    "per_sample_paths",
)
# How the values were computed: parts that differ here cannot be merged, and update() keeps them.
HOW_COMPUTED = ("mode", "label_free", "precision")

# `ssd_fast.importance`, for `Importances.update`. importance.py builds Importances, so it
# imports this module; it registers itself here (register_compute) instead of this module
# importing it back, which would make an import cycle.
_compute: Callable[..., Importances] | None = None


def register_compute(fn: Callable[..., Importances]) -> None:
    global _compute
    _compute = fn


_FILE_FORMAT = "ssd_fast.importances"
# "2" adds checksums of every tensor and of the metadata; "1" files (none) still load, with a warning.
_FILE_VERSION = "2"
_UNCHECKED_VERSION = "1"


def _check_tensors(tensors: Any) -> dict[str, torch.Tensor]:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"importances must be a mapping from parameter name to tensor, got {type(tensors).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"importance names must be str, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"importance {name!r} is a {type(t).__name__}, not a tensor")
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"importance {name!r} has dtype {t.dtype}; expected a floating tensor")
        out[name] = t.detach().to(torch.float32)
    _check_values(out)
    return out


def _check_values(tensors: dict[str, torch.Tensor]) -> None:
    """Every value finite and non-negative; one device sync for the whole set.

    A sharded (DTensor) importance is checked on this rank's shard, with no communication."""
    if not tensors:
        return
    local = [_parallel.local(t) for t in tensors.values()]
    flags = [torch.stack([torch.isfinite(t).all(), (t >= 0).all()]).cpu() for t in local]
    for name, (finite, nonneg) in zip(tensors, torch.stack(flags).tolist()):
        if not finite:
            raise ValueError(f"importance {name!r} contains NaN or inf")
        if not nonneg:
            raise ValueError(f"importance {name!r} contains negative values; a Fisher diagonal is >= 0")


def _check_probe(probe: Any) -> dict[str, list[float]] | None:
    if probe is None:
        return None
    if not isinstance(probe, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (list, tuple)) and all(_checks.is_number(x) for x in v)
        for k, v in probe.items()
    ):
        raise TypeError("checkpoint_probe must map parameter names to lists of numbers, or be None")
    return {k: [float(x) for x in v] for k, v in probe.items()}


def _sum_or_none(values: Iterator[int | None]) -> int | None:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _check_mergeable(parts: tuple[Importances, ...]) -> None:
    """Refuse to average importances that are not on the same scale or the same model."""
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if not isinstance(part, Importances):
            raise TypeError(f"merge takes Importances, argument {i} is a {type(part).__name__}")
        for key in HOW_COMPUTED:
            if getattr(part, key) != getattr(first, key):
                raise ValueError(
                    f"cannot merge importances with different {key}: {getattr(first, key)!r} vs {getattr(part, key)!r}"
                )
        if (
            first.mode == "batch"
            and None not in (first.batch_size, part.batch_size)
            and first.batch_size != part.batch_size
        ):
            raise ValueError(
                f"cannot merge batch-mode importances of batch size {first.batch_size} and {part.batch_size}: "
                "the batch-mode estimate's scale depends on the batch size"
            )
        if None not in (first.fingerprint, part.fingerprint) and first.fingerprint != part.fingerprint:
            raise ValueError("cannot merge importances computed for different models (fingerprint mismatch)")
        if set(part) != set(first):
            raise ValueError("cannot merge importances over different parameter names")
        for name, t in first.items():
            if part[name].shape != t.shape:
                raise ValueError(f"cannot merge: {name!r} has shape {tuple(t.shape)} vs {tuple(part[name].shape)}")
    key = "n_batches" if first.mode == "batch" else "n_samples"
    for i, part in enumerate(parts):
        count = getattr(part, key)
        if not count:
            raise ValueError(
                f"merging {first.mode}-mode importances weights each part by {key}, but part {i} has "
                f"{key}={count!r}; compute it with ssd_fast.importance() or pass {key}= when building it"
            )


class Importances(Mapping[str, torch.Tensor]):
    """Per-parameter importance (a diagonal Fisher estimate), keyed by parameter name.

    Build one with `ssd_fast.importance(model, data)`, from a dict with
    `Importances(tensors, mode=..., n_samples=..., model=model)`, or with
    `Importances.load(path)`. Values are fp32 and must not be modified in place.

    What is recorded lets `dampen` refuse mistakes before writing anything: `n_samples`
    (forget and full swapped), `mode` and `label_free` (the two computed differently),
    and `model=`, the model as it was when the values were computed, whose parameter
    fingerprint and checkpoint probe are kept (importances of another checkpoint).
    """

    __slots__ = ("_tensors", *METADATA)

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor],
        *,
        mode: str = "batch",
        label_free: bool = False,
        n_samples: int | None = None,
        n_batches: int | None = None,
        batch_size: int | None = None,
        fingerprint: str | None = None,
        checkpoint_probe: Mapping[str, list[float]] | None = None,
        precision: str = "exact",
        per_sample_paths: Mapping[str, str] | None = None,
        model: nn.Module | None = None,
    ) -> None:
        if model is not None:  # record the model's fingerprint and probe, as importance() does
            _checks.module(model)
            if fingerprint is not None or checkpoint_probe is not None:
                raise ValueError("pass model= or fingerprint=/checkpoint_probe=, not both: model= records both")
            fingerprint, checkpoint_probe = model_fingerprint(model), take_probe(model)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        check_precision(precision)
        _checks.flag(label_free, "label_free")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str or None, got {fingerprint!r}")
        self._tensors = _check_tensors(tensors)
        self.mode = mode
        self.label_free = label_free
        self.n_samples = _checks.count(n_samples, "n_samples")
        self.n_batches = _checks.count(n_batches, "n_batches")
        self.batch_size = _checks.count(batch_size, "batch_size")
        self.precision = precision  # the arithmetic importance() used: "exact", "tf32" or "bf16"
        self.fingerprint = fingerprint
        # A few parameter values of the checkpoint these were computed on (see _checkpoint.py).
        self.checkpoint_probe = _check_probe(checkpoint_probe)
        # per_sample mode: which path served each layer shape ("fused/<precision>" or "torch"),
        # as ssd_fast.per_sample._fused chose it; None when not recorded
        self.per_sample_paths = (
            None if per_sample_paths is None else {str(k): str(v) for k, v in per_sample_paths.items()}
        )

    # Mapping protocol: read-only by construction.
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __contains__(self, name: object) -> bool:  # a dict lookup, not Mapping's try/except
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def metadata(self) -> dict[str, Any]:
        """Everything but the tensors: the keyword arguments that rebuild these importances."""
        return {k: getattr(self, k) for k in METADATA}

    def __repr__(self) -> str:
        numel = sum(t.numel() for t in self._tensors.values())
        shown = {k: v for k, v in self.metadata().items() if v is not None and k != "checkpoint_probe"}
        meta = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Importances({len(self)} tensors, {numel:,} values, {meta})"

    def to(self, device: torch.device | str) -> Importances:
        """A copy with every tensor on `device` (dampen needs them beside the parameters)."""
        return Importances({k: v.to(device) for k, v in self._tensors.items()}, **self.metadata())

    def check_model(self, model: nn.Module) -> None:
        """Raise ValueError unless these importances pair by name and shape with `model`."""
        pair_with_model(model, self, "the", check_device=False)

    def matches_fingerprint(self, model: nn.Module) -> bool:
        return self.fingerprint is None or self.fingerprint == model_fingerprint(model)

    def merge(self, *others: Importances) -> Importances:
        """The importance over the union of the data behind `self` and `others`.

        Each result is a mean: over batches in "batch" mode, over samples in "per_sample"
        mode. So the union is the mean weighted by those counts, exactly what one
        `importance()` call over all the data (the batches one after the other) gives:
        batch mode weights by `n_batches`, per_sample mode by `n_samples`. Returns a new
        object; raises ValueError when the parts were computed differently (mode,
        objective, precision, batch size, model) or lack the counts needed to weight them.
        """
        parts = (self, *others)
        _check_mergeable(parts)
        key = "n_batches" if self.mode == "batch" else "n_samples"
        weights = [getattr(part, key) for part in parts]
        total = float(sum(weights))
        merged = {}
        for name, t in self._tensors.items():
            acc = torch.zeros_like(t)
            for part, w in zip(parts, weights):
                acc.add_(part[name].to(t.device), alpha=w / total)
            merged[name] = acc
        meta = self.metadata()
        meta["n_samples"] = _sum_or_none(part.n_samples for part in parts)
        meta["n_batches"] = _sum_or_none(part.n_batches for part in parts)
        return Importances(merged, **meta)

    def update(self, model: nn.Module, data: Any, **kwargs: Any) -> Importances:
        """Add more data to a stored importance: compute it on `data` the same way, then merge.

        `model` must be the model these importances belong to (checked by fingerprint).
        Extra keyword arguments go to `ssd_fast.importance` (unpack, loss_fn, device,
        progress); mode, label_free and precision are taken from these importances.
        """
        if _compute is None:
            raise RuntimeError("Importances.update needs ssd_fast.importance: import ssd_fast first")
        for key in HOW_COMPUTED:
            if key in kwargs:
                raise TypeError(f"update() takes {key} from the stored importances; do not pass {key}=")
        _checks.module(model)
        if not self.matches_fingerprint(model):
            raise ValueError("these importances were computed for a different model (fingerprint mismatch)")
        extra = _compute(model, data, mode=self.mode, label_free=self.label_free, precision=self.precision, **kwargs)
        return self.merge(extra)

    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors file holding the tensors, the metadata, and a checksum of each.

        Inside a process group every rank must call it: rank 0 writes, then all ranks
        wait for the file, so any rank can load it next. Sharded (DTensor) importances go
        to a folder of per-rank safetensors files instead (ssd_fast.distributed.save_sharded).
        """
        from safetensors.torch import save_file

        if _parallel.any_dtensor(self._tensors.values()):
            _parallel.save_sharded(self._tensors, self.metadata(), path)
            return
        if _parallel.is_main():
            tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self._tensors.items()}
            meta = json.dumps(self.metadata())
            header = {
                "format": _FILE_FORMAT,
                "version": _FILE_VERSION,
                "meta": meta,
                "meta_sha256": text_digest(meta),
                "tensor_sha256": json.dumps({k: tensor_digest(v) for k, v in tensors.items()}),
            }
            save_file(tensors, os.fspath(path), metadata=header)
        _parallel.barrier()

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, model: nn.Module | None = None, device: torch.device | str = "cpu"
    ) -> Importances:
        """Read a file written by `save`. Executes no code; checks it against `model` if given.

        Every tensor (every rank's block, for a sharded folder) and the metadata are
        checked against the checksums `save` recorded; a mismatch is a ValueError naming
        the damaged part. Files from before checksums were recorded load with a warning.

        A folder written by `save` from sharded importances loads onto `model`'s own
        sharding (DTensor parameters get DTensor importances, reading only this rank's
        part), whatever sharding it was saved from; without a model it loads whole."""
        from safetensors import safe_open

        path = os.fspath(path)
        if os.path.isdir(path):  # sharded importances: a folder of per-rank files
            tensors, meta = _parallel.load_sharded(path, _parallel.unwrap(model) if model is not None else None, device)
            out = cls(tensors, **meta)
            if model is not None:
                out.check_model(model)
            return out
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no importance file at {path!r}")
        try:
            with safe_open(path, framework="pt", device="cpu") as f:  # on the CPU, where the checksums are computed
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types for a damaged file
            raise ValueError(f"{path!r} is not a readable safetensors file ({e})") from e
        if header.get("format") != _FILE_FORMAT:
            raise ValueError(f"{path!r} is a safetensors file but not one written by ssd_fast.Importances.save")
        version = header.get("version")
        if version == _FILE_VERSION:
            _verify_checksums(path, header, tensors)
        elif version == _UNCHECKED_VERSION:
            warnings.warn(
                f"{path!r} was written by an earlier ssd_fast (importance file version {version}) and carries no "
                "checksums, so damage to its values cannot be detected; save it again to add them",
                UserWarning,
                stacklevel=2,
            )
        else:
            raise ValueError(
                f"{path!r} has importance file version {version!r}; this ssd_fast reads versions "
                f"{_UNCHECKED_VERSION} and {_FILE_VERSION}"
            )
        try:
            meta = json.loads(header["meta"])
            out = cls({k: v.to(device) for k, v in tensors.items()}, **meta)
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path!r} has a damaged metadata header ({e})") from e
        if model is not None:
            out.check_model(model)
        return out


def _verify_checksums(path: str, header: dict[str, str], tensors: dict[str, torch.Tensor]) -> None:
    """ValueError naming the first part of the file whose checksum does not match."""
    if "meta" not in header or header.get("meta_sha256") != text_digest(header["meta"]):
        raise ValueError(
            f"{path!r} is damaged: its metadata does not match the checksum recorded when it was saved; "
            "recompute the importances or use an intact copy"
        )
    try:
        recorded = json.loads(header["tensor_sha256"])
    except (KeyError, json.JSONDecodeError):
        recorded = None
    if not isinstance(recorded, dict) or set(recorded) != set(tensors):
        raise ValueError(
            f"{path!r} is damaged: its list of tensor checksums is missing or does not name the tensors it holds; "
            "recompute the importances or use an intact copy"
        )
    for name, t in tensors.items():
        if tensor_digest(t) != recorded[name]:
            raise ValueError(
                f"{path!r} is damaged: tensor {name!r} does not match the checksum recorded when it was saved "
                "(its bytes changed); recompute the importances or use an intact copy"
            )
