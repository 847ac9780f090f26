"""Cached trained models and full-data importances, as a real deployment keeps them.

SSD's full-data importance is computed once after training and stored with the model;
only the forget importance and the dampening happen per deletion request. So the cache
holds, per key: the trained weights, how long training took, and each full importance
with how long it took. Keys name the data, model, seed and the labels trained on
("class" and "random" train the same model on the same labels, so they share a key).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def cache_root(cache_dir: str | None) -> Path:
    """--cache-dir, else $SSD_FAST_CACHE, else ./.cache/ssd_fast."""
    return Path(cache_dir or os.environ.get("SSD_FAST_CACHE") or Path(".cache") / "ssd_fast")


def checkpoint_key(**parts: Any) -> str:
    """A readable, filesystem-safe key: the parts joined, plus a short hash of all of them."""
    text = json.dumps(parts, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    label = "-".join(str(parts[k]) for k in ("data", "model", "labels", "seed") if k in parts)
    return f"{label}-{digest}"


class Checkpoints:
    """Load-or-compute for one key under the cache root; disabled means always compute."""

    def __init__(self, root: Path, key: str, enabled: bool = True):
        self.dir = root / key
        self.enabled = enabled
        self._cpu: dict[str, float] = {}

    def _meta_path(self) -> Path:
        return self.dir / "meta.json"

    def _meta(self) -> dict:
        path = self._meta_path()
        return json.loads(path.read_text()) if self.enabled and path.is_file() else {}

    def _write_meta(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._meta_path().write_text(json.dumps(meta, indent=1))

    def model(self, model: nn.Module, train: Callable[[nn.Module], None]) -> tuple[nn.Module, float, bool]:
        """Load trained weights into `model`, or train it and store them.

        Returns (model, training seconds as measured when it was trained, loaded-from-cache).
        """
        path = self.dir / "model.pt"
        meta = self._meta()
        if self.enabled and path.is_file() and "train_seconds" in meta:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval(), float(meta["train_seconds"]), True
        start = time.perf_counter()
        train(model)
        seconds = time.perf_counter() - start
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
            self._write_meta({**meta, "train_seconds": seconds})
        return model, seconds, False

    def value(
        self,
        name: str,
        compute: Callable[[], Any],
        save: Callable[[Any, Path], None] | None = None,
        load: Callable[[Path], Any] | None = None,
    ) -> tuple[Any, float, bool]:
        """A cached value (e.g. a full importance) with the seconds it took to compute.

        `save(value, path)` / `load(path)` default to torch.save of a dict of tensors and
        torch.load(weights_only=True). Returns (value, seconds, loaded-from-cache).
        """
        save = save or (lambda v, path: torch.save(dict(v), path))
        load = load or (lambda path: torch.load(path, map_location="cpu", weights_only=True))
        path = self.dir / name
        meta = self._meta()
        seconds_key = f"{name}_seconds"
        if self.enabled and path.is_file() and seconds_key in meta:
            return load(path), float(meta[seconds_key]), True
        start, cpu_start = time.perf_counter(), time.process_time()
        value = compute()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            save(value, path)
            self._write_meta({**self._meta(), seconds_key: seconds, f"{name}_cpu_seconds": cpu})
        self._cpu[name] = cpu
        return value, seconds, False

    def cpu_seconds(self, name: str) -> float | None:
        """The process CPU time `value(name, ...)` took when computed (None if unknown).

        On a shared machine wall time swings with the load (the same importance took
        4.6-12.6 s of wall time in one hour on the 2-core VM) while its CPU time stayed
        within a few %, so comparisons of single-threaded steps read this one."""
        if name in self._cpu:
            return self._cpu[name]
        value = self._meta().get(f"{name}_cpu_seconds")
        return None if value is None else float(value)
