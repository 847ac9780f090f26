"""`prepare` -> `Dampener`: validate and pair once, then dampen as often as asked; `dampen` is one shot.

Everything that depends only on the model and the two importances (types, names,
shapes, devices, the backend for each device, contiguous tensor lists) is checked and
built once, in `prepare`. `Dampener.apply` then checks its two numbers and launches one
fused kernel per device, so a search over alpha and lambda pays the Python around the
kernel once, not per trial.

Order keeps the guarantee that a failed call loses nothing: every check runs before the
first parameter is written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import nn

from . import _checks, _ops, _parallel, reference
from ._checkpoint import check_probes
from ._pairing import named_parameters, pair_with_model
from ._plain_dicts import check_zero_patterns, is_plain, warn_missing_checks
from .auto_alpha import resolve_auto_alpha
from .importance import importance
from .importances import Importances
from .report import CountGroup, DampenReport, LayerSelection, read_counts

BACKENDS = ("auto", "cuda", "cpu", "reference")
AUTO = "auto"
ImportanceSource = Importances | Mapping[str, torch.Tensor] | Iterable


def check_hyper(alpha: float | str, lam: float) -> tuple[float | str, float]:
    """Validated (alpha, lam); alpha="auto" passes through, resolved later from the importances."""
    if isinstance(alpha, str):
        if alpha != AUTO:
            raise ValueError(f"alpha must be a number or 'auto', got {alpha!r}")
    else:
        alpha = _checks.finite_number(alpha, "alpha")
        if alpha <= 0:
            raise ValueError(
                f"alpha must be > 0, got {alpha!r}: with alpha <= 0 every parameter with any forget importance is selected"
            )
    lam = _checks.finite_number(lam, "lam")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}: a negative lambda would flip signs")
    return alpha, lam


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _as_importances(model: nn.Module, source: ImportanceSource, what: str) -> Importances:
    if isinstance(source, Importances):
        return source
    if isinstance(source, Mapping):
        try:
            return Importances(source)
        except (TypeError, ValueError) as e:  # say which of the two it was
            raise type(e)(f"{what} {e}") from None
    if not _checks.is_batches(source):
        raise TypeError(
            f"{what} must be Importances, a dict of tensors, or data to compute them from; got {type(source).__name__}"
        )
    return importance(model, source)


def _check_compatible(forget: Importances, full: Importances) -> None:
    if forget.label_free != full.label_free:
        raise ValueError(
            "forget and full importances were computed with different objectives "
            f"(label_free={forget.label_free} vs {full.label_free}); compute both the same way"
        )
    if forget.mode != full.mode:
        raise ValueError(
            f"forget importances are {forget.mode!r} mode but full importances are {full.mode!r}; "
            "their scales differ, so compute both in the same mode"
        )


def _check_not_swapped(forget: Importances, full: Importances) -> None:
    """Df is part of D, so a forget set larger than the full set means the two were swapped."""
    if forget.n_samples is not None and full.n_samples is not None and forget.n_samples > full.n_samples:
        raise ValueError(
            f"the forget importances come from {forget.n_samples} samples but the full ones from only "
            f"{full.n_samples}; the forget set is part of the full training set, so forget and full look "
            "swapped: call with (model, forget, full). If the full importances really come from a subsample "
            "smaller than the forget set, build them with n_samples=None to skip this check"
        )


def _choose_backends(device_types: Sequence[str], backend: str) -> dict[str, str]:
    """The backend for each device type in use, or an error before anything runs."""
    chosen: dict[str, str] = {}
    for device_type in sorted(set(device_types)):
        if backend == "reference":
            chosen[device_type] = "reference"
        elif backend == "auto":
            if _ops.has_kernel(device_type):
                chosen[device_type] = device_type
            else:
                _ops.warn_reference_once(device_type)
                chosen[device_type] = "reference"
        elif backend != device_type:
            raise ValueError(f"backend={backend!r} was asked for but some parameters are on {device_type}")
        elif not _ops.has_kernel(device_type):
            why = _ops.LOAD_ERROR or f"the extension was built without {device_type} kernels"
            raise RuntimeError(f"backend={backend!r} is not available: {why}")
        else:
            chosen[device_type] = backend
    return chosen


@dataclass(frozen=True)
class _Group:
    """One device's share, as the kernel takes it: the parameters themselves (not `.data`,
    which is a new object per access) and contiguous importances, in pairing order."""

    device: torch.device
    backend: str  # "cpu" or "cuda" (the compiled kernel), or "reference"
    positions: tuple[int, ...]  # where each entry sits in the Dampener's name order
    params: list[nn.Parameter]
    forget: list[torch.Tensor]
    full: list[torch.Tensor]
    strided: tuple[int, ...]  # entries whose parameter is not contiguous: dampened through a copy

    def run(self, alpha: float, lam: float) -> torch.Tensor | list[int]:
        if self.backend == "reference":
            return [reference.dampen_tensor_(p, f, d, alpha=alpha, lam=lam) for p, f, d in self.params_forget_full()]
        selected = torch.zeros(len(self.params), dtype=torch.int64, device=self.device)
        work = self.params
        if self.strided:
            work = list(work)
            for k in self.strided:
                work[k] = work[k].contiguous()
        torch.ops.ssd_fast.select_dampen_.default(work, self.forget, self.full, alpha, lam, selected)
        for k in self.strided:
            self.params[k].copy_(work[k])
        return selected

    def params_forget_full(self):
        return zip(self.params, self.forget, self.full)

    def subset(self, keep: set[int]) -> _Group | None:
        """This group restricted to the Dampener positions in `keep`, or None when empty."""
        picks = [k for k, pos in enumerate(self.positions) if pos in keep]
        if not picks:
            return None
        strided = tuple(picks.index(k) for k in self.strided if k in picks)
        return _Group(
            self.device,
            self.backend,
            tuple(self.positions[k] for k in picks),
            [self.params[k] for k in picks],
            [self.forget[k] for k in picks],
            [self.full[k] for k in picks],
            strided,
        )


class _Snapshot:
    """Copies of the parameters a Dampener may change, taken before any apply."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        with torch.no_grad():
            self.saved = [(p, p.detach().clone()) for p in params]

    @property
    def nbytes(self) -> int:
        return sum(copy.numel() * copy.element_size() for _, copy in self.saved)

    @torch.no_grad()
    def restore(self) -> None:
        for p, copy in self.saved:
            p.copy_(copy)


class Dampener:
    """SSD for one model and one pair of importances, validated and paired once.

    Build it with `ssd_fast.prepare`. `apply(alpha, lam)` dampens in place with one
    kernel launch per device; `restore()` writes back the parameters saved at `prepare`
    (when a snapshot was asked for). It holds the model's parameter objects and the
    importance tensors as they were at `prepare`: after moving the model to another
    device or replacing parameters, prepare again (the kernel refuses a device mismatch
    before writing anything).
    """

    def __init__(
        self,
        names: tuple[str, ...],
        numels: tuple[int, ...],
        groups: tuple[_Group, ...],
        forget: Importances,
        full: Importances,
        snapshot: _Snapshot | None,
        sharded: tuple[nn.Parameter, ...] | None = None,
    ) -> None:
        self._names, self._numels, self._groups = names, numels, groups
        self.forget, self.full = forget, full  # the importances paired, as given (read-only)
        self._snapshot = snapshot
        self._sharded = sharded  # DTensor parameters by name order: counts are summed over ranks
        self._root = self  # views made by only_from share their root's snapshot
        self._auto_alpha: float | None = None
        self.backend = "+".join(sorted({g.backend for g in groups})) or "none"

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters this Dampener may change, in `named_parameters()` order."""
        return self._names

    @property
    def snapshot_bytes(self) -> int:
        """Memory held by the snapshot (0 without one)."""
        snapshot = self._root._snapshot
        return 0 if snapshot is None else snapshot.nbytes

    def take_snapshot(self, alpha_min: float | None = None) -> None:
        """Copy now the parameters `apply` may change, for `restore()`; call it before the first apply.

        With `alpha_min`, only tensors where some element has f > alpha_min * d are copied:
        no apply with alpha >= alpha_min writes the others. Memory: one copy of the
        copied parameters, in their dtype and on their device.
        """
        root = self._root
        if alpha_min is not None:
            alpha_min = _checks.finite_number(alpha_min, "alpha_min")
        params = []
        for g in root._groups:
            for p, f, d in g.params_forget_full():
                if alpha_min is None or bool((f > alpha_min * d).any()):
                    params.append(p)
        root._snapshot = _Snapshot(params)

    def importance_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(forget, full) tensors of every parameter this Dampener dampens, as given (whole, or
        DTensors sharded like a sharded model's parameters)."""
        return [(self.forget[self._names[i]], self.full[self._names[i]]) for g in self._groups for i in g.positions]

    def apply(self, alpha: float | Literal["auto"] = 10.0, lam: float = 1.0) -> DampenReport:
        """Dampen in place: every element with f > alpha * d is multiplied by min(lam * d / f, 1).

        Checks alpha and lam, then launches one fused kernel per device; it does not wait
        for the GPU. The report reads the selected counts when first asked for them.
        alpha="auto" is ASSD's rule (see `ssd_fast.dampen`), resolved on first use and kept.
        """
        alpha, lam = check_hyper(alpha, lam)
        if alpha == AUTO:
            alpha = self._resolve_auto()
        start = time.perf_counter()
        with torch.no_grad():
            found: list[CountGroup] = [(g.positions, g.run(alpha, lam)) for g in self._groups]
        seconds = time.perf_counter() - start
        if self._sharded is not None:  # a collective: now, on every rank, never when one rank reads the report
            counts = _parallel.global_selected(list(self._sharded), read_counts(len(self._names), found))
            found = [(tuple(range(len(self._names))), counts)]
        return DampenReport(alpha, lam, self.backend, seconds, partial(self._layers, found))

    def restore(self) -> None:
        """Put every parameter this Dampener may change back to its value at `prepare`, bit for bit."""
        snapshot = self._root._snapshot
        if snapshot is None:
            raise RuntimeError(
                "this Dampener was prepared without a snapshot; use ssd_fast.prepare(..., snapshot=True)"
            )
        snapshot.restore()

    def only_from(self, first: str) -> Dampener:
        """A Dampener sharing this one's tensors and snapshot that dampens only `first` and
        the parameters after it (in `named_parameters()` order); the others are never selected,
        as with zero forget importance. Its reports still list every name."""
        if first not in self._names:
            raise ValueError(f"{first!r} is not a parameter with an importance")
        keep = set(range(self._names.index(first), len(self._names)))
        groups = tuple(g for g in (g.subset(keep) for g in self._groups) if g is not None)
        view = Dampener(self._names, self._numels, groups, self.forget, self.full, None, self._sharded)
        view.backend, view._root = self.backend, self._root
        return view

    def _resolve_auto(self) -> float:
        if self._auto_alpha is None:
            self._auto_alpha = resolve_auto_alpha(self.forget, self.full, self.importance_pairs())
        return self._auto_alpha

    def _layers(self, found: Sequence[CountGroup]) -> tuple[LayerSelection, ...]:
        counts = read_counts(len(self._names), found)
        return tuple(LayerSelection(n, c, k) for n, c, k in zip(self._names, counts, self._numels))


def _pairs(params: dict[str, nn.Parameter], forget: Importances, full: Importances):
    f_pairs = pair_with_model(params, forget, "forget", check_device=True)
    d_pairs = pair_with_model(params, full, "full", check_device=True)
    return [(name, p, f, d) for (name, p, f), (_, _, d) in zip(f_pairs, d_pairs)]


def _groups(pairs, devices: list[torch.device], backends: dict[str, str]) -> tuple[_Group, ...]:
    """The pairs split by device (`devices[i]` is pair i's), each as the kernel takes them."""
    by_device: dict[torch.device, list[int]] = {}
    for i, device in enumerate(devices):
        by_device.setdefault(device, []).append(i)
    groups = []
    for device in sorted(by_device, key=str):
        picks = [pairs[i] for i in by_device[device]]
        groups.append(
            _Group(
                device=device,
                backend=backends[device.type],
                positions=tuple(by_device[device]),
                params=[p for _, p, _, _ in picks],
                forget=[f.contiguous() for _, _, f, _ in picks],
                full=[d.contiguous() for _, _, _, d in picks],
                strided=tuple(k for k, (_, p, _, _) in enumerate(picks) if not p.is_contiguous()),
            )
        )
    return tuple(groups)


def prepare(
    model: nn.Module,
    forget: ImportanceSource,
    full: ImportanceSource,
    *,
    backend: str = "auto",
    snapshot: bool = False,
) -> Dampener:
    """Validate and pair the importances with `model` once, for any number of `apply` calls.

        dampener = ssd_fast.prepare(model, forget_imp, full_imp, snapshot=True)
        report = dampener.apply(alpha=10.0, lam=1.0)   # one kernel launch per device
        dampener.restore()                              # the model as it was at prepare

    Args:
        model: the model to modify in place.
        forget, full: importances on the forget set and the full training set, as for
            `ssd_fast.dampen` (Importances, dicts, or data to compute them from).
        backend: "auto", "cpu", "cuda" or "reference", as for `ssd_fast.dampen`.
        snapshot: keep a copy of every parameter the Dampener may change, so that
            `restore()` can put them back. It costs one copy of those parameters in
            their own dtype and on their own device (e.g. 45 MB for an fp32 ResNet18);
            leave it False for a one-shot dampening.

    Raises:
        TypeError, ValueError, RuntimeError: on any bad input; the model is not touched.
    """
    return _prepare(model, forget, full, backend=backend, snapshot=snapshot)


def _prepare(
    model: nn.Module, forget: ImportanceSource, full: ImportanceSource, *, backend: str, snapshot: bool
) -> Dampener:
    """`prepare`, called by it and by `dampen`, so that a warning points at the user's line in both."""
    _checks.module(model)
    _check_backend(backend)
    _checks.flag(snapshot, "snapshot")
    forget_imp = _as_importances(model, forget, "forget")
    full_imp = _as_importances(model, full, "full")
    if isinstance(forget, Importances) and isinstance(full, Importances):
        _check_compatible(forget_imp, full_imp)
    _check_not_swapped(forget_imp, full_imp)
    params = named_parameters(model)  # one walk of the module tree, keyed as the unwrapped model names them
    pairs = _pairs(params, forget_imp, full_imp)
    if (is_plain(forget) or is_plain(full)) and not _parallel.any_dtensor(p for _, p, _, _ in pairs):
        check_zero_patterns([(f, d) for _, _, f, d in pairs])  # no sample counts: the values' zeros still tell
    check_probes(params, {"forget": forget_imp.checkpoint_probe, "full": full_imp.checkpoint_probe})
    local = _parallel.local_pairs(pairs)  # a sharded model: each rank's own shards, no gather
    devices = [p.device for _, p, _, _ in local]
    backends = _choose_backends([d.type for d in set(devices)], backend)
    dampener = Dampener(
        names=tuple(name for name, _, _, _ in pairs),
        numels=tuple(p.numel() for _, p, _, _ in pairs),
        groups=_groups(local, devices, backends),
        forget=forget_imp,
        full=full_imp,
        snapshot=None,
        sharded=tuple(p for _, p, _, _ in pairs) if _parallel.any_dtensor(p for _, p, _, _ in pairs) else None,
    )
    if snapshot:
        dampener.take_snapshot()
    warn_missing_checks(forget, full, stacklevel=4)  # last: a call refused above gets its error alone
    return dampener


def dampen(
    model: nn.Module,
    forget: ImportanceSource,
    full: ImportanceSource,
    *,
    alpha: float | Literal["auto"] = 10.0,
    lam: float = 1.0,
    backend: str = "auto",
) -> DampenReport:
    """Forget by Selective Synaptic Dampening, in place: `prepare(...).apply(alpha, lam)`.

    Every trainable parameter element with forget importance f greater than alpha times
    its full-data importance d is multiplied by min(lam * d / f, 1); all others are left
    bit-for-bit unchanged. Frozen parameters (requires_grad=False) are never touched.
    To dampen the same model several times (a search over alpha), call `prepare` once
    and `apply` per setting.

    Args:
        model: the model to modify in place.
        forget: importances on the forget set Df: `Importances`, a dict of tensors keyed
            by parameter name, or data (then computed with `ssd_fast.importance`).
        full: importances on the full training set D, in the same forms.
        alpha: selection threshold (> 0). The paper uses 10 for ResNet18. "auto" uses
            ASSD's rule (Schoepf, Foster and Brintrup, 2024): the
            (100 - ln(1 + 100 |Df| / |D|))-th percentile of f/d over finite ratios, with
            |Df| and |D| read from the importances' `n_samples` (so both must be
            Importances that carry it). The resolved number is in the report.
        lam: dampening strength (>= 0). The paper uses 1.
        backend: "auto" (compiled kernel for the parameters' device, else the reference
            with a warning), "cpu", "cuda", or "reference".

    Returns:
        A DampenReport with the selected count per parameter, the time and the backend.

    Raises:
        TypeError, ValueError, RuntimeError: on any bad input, before the model changes.
    """
    _checks.module(model)
    check_hyper(alpha, lam)  # before any importance is computed from data
    _check_backend(backend)
    return _prepare(model, forget, full, backend=backend, snapshot=False).apply(alpha, lam)
