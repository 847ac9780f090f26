"""Computing importances: the diagonal Fisher estimate SSD compares between D and Df.

The loop is the same for every mode: eval mode, unpack each batch, move it to the
device, let an accumulator add that batch's contribution, then normalise. The modes
differ only in the accumulator and the divisor:
- "batch" (published): squared gradient of each batch's mean loss, averaged over batches;
- "per_sample": squared per-sample gradients, averaged over samples (ssd_fast.per_sample).
Gradients come from `torch.autograd.grad`, so the caller's `.grad` fields are untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import nn

from . import _checks, _ops, _parallel
from ._batches import Unpack, count_samples, eval_mode, model_device, to_device, unpack_batch, with_progress
from ._checkpoint import ProbeRead
from ._hf import task_of
from ._loss import LossFn, check_loss_options, model_batch_loss
from ._pairing import model_fingerprint
from ._precision import check_precision, effective_precision, precision_scope
from .importances import MODES, Importances, register_compute
from .per_sample import PerClass, PerSampleAccumulator, Weighted
from .per_sample._fused import recording as record_per_sample_paths


class Accumulator(Protocol):
    """Adds one batch's contribution to the running importance sums, in place."""

    def __call__(self, inputs: object, targets: object, sums: dict[str, torch.Tensor]) -> None: ...


def accumulate_squares_(sums: list[torch.Tensor], grads: list[torch.Tensor], *, absolute: bool) -> None:
    """sums[i] += grads[i]**2 (or |grads[i]|), with the fused kernel where one is built."""
    by_device: dict[torch.device, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for s, g in zip(sums, grads):
        group = by_device.setdefault(s.device, ([], []))
        group[0].append(s)
        group[1].append(g if g.is_contiguous() else g.contiguous())
    for device, (s_list, g_list) in by_device.items():
        if _ops.has_kernel(device.type):
            _ops.sq_accumulate_(s_list, g_list, 1.0, absolute)
        else:
            _ops.warn_reference_once(device.type)
            for s, g in zip(s_list, g_list):
                s.add_(g.float().abs() if absolute else g.float().square())


class _NonFiniteWatch:
    """Finds the first batch whose loss was NaN or inf, without a device sync per batch.

    A non-finite loss makes every gradient it reaches non-finite, and the sums stay so, so
    watching the smallest trainable tensor's sum after each batch finds the batch: two
    tiny kernels per batch, one read at the end.
    """

    def __init__(self, sums: dict[str, torch.Tensor], trainable: dict[str, nn.Parameter]) -> None:
        self.watched = sums[min(trainable, key=lambda n: trainable[n].numel())]
        self.first = torch.full((), -1, dtype=torch.int64, device=self.watched.device)

    def after_batch(self, k: int) -> None:
        bad = ~torch.isfinite(self.watched).all()
        self.first = torch.where(bad & (self.first < 0), k, self.first)

    def check(self) -> None:
        k = int(self.first)
        if k >= 0:
            raise ValueError(
                f"the loss was not finite (NaN or inf) at batch {k} of the data (counting from 0), so the "
                "importances would be NaN: check that batch's inputs and targets for NaN or inf values, "
                "or the model for an overflow"
            )


class BatchGradientAccumulator:
    """Published SSD: the squared gradient of the batch's mean loss."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], *, label_free: bool, loss_fn: LossFn | None):
        self.model = model
        self.names = list(params)
        self.params = list(params.values())
        self.label_free = label_free
        self.loss_fn = loss_fn
        self.task = task_of(model)

    def __call__(self, inputs: object, targets: object, sums: dict[str, torch.Tensor]) -> None:
        if isinstance(targets, (Weighted, PerClass)):
            raise ValueError(
                f"{type(targets).__name__} targets weight per-sample gradients, which batch mode does not form; "
                "pass mode='per_sample'"
            )
        loss = model_batch_loss(
            self.model, inputs, targets, label_free=self.label_free, loss_fn=self.loss_fn, task=self.task
        )
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        used = [(sums[n], g) for n, g in zip(self.names, grads) if g is not None]
        if used:
            accumulate_squares_([s for s, _ in used], [g for _, g in used], absolute=self.label_free)


def _make_accumulator(
    mode: str, model: nn.Module, params: dict[str, nn.Parameter], label_free: bool, loss_fn: LossFn | None
):
    if _parallel.any_dtensor(params.values()):  # a sharded (FSDP2) model: see ssd_fast.distributed
        return _parallel.sharded_accumulator(mode, model, params, label_free=label_free, loss_fn=loss_fn)
    if mode == "batch":
        return BatchGradientAccumulator(model, params, label_free=label_free, loss_fn=loss_fn)
    return PerSampleAccumulator(model, params, label_free=label_free, loss_fn=loss_fn)


def _check_arguments(
    model: nn.Module,
    data: Iterable,
    mode: str,
    label_free: bool,
    loss_fn: LossFn | None,
    unpack: Unpack | None,
    precision: str,
) -> None:
    _checks.module(model)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_precision(precision)
    _checks.flag(label_free, "label_free")
    check_loss_options(label_free, loss_fn)
    if unpack is not None and not callable(unpack):
        raise TypeError(f"unpack must be callable, got {type(unpack).__name__}")
    _checks.batches(data, "data")


def importance(
    model: nn.Module,
    data: Iterable,
    *,
    mode: str = "batch",
    label_free: bool = False,
    loss_fn: LossFn | None = None,
    unpack: Unpack | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    precision: str = "exact",
) -> Importances:
    """Estimate each parameter's importance (diagonal Fisher) on `data`.

    Args:
        model: the trained model. It runs in eval mode here (BatchNorm uses running
            statistics, dropout is off); each module's own mode is restored afterwards,
            and `.grad` fields are left as they were.
        data: a DataLoader or any iterable of batches. `(x, y)` batches work as they
            are, and so do dict batches of keyword arguments with their targets under
            `labels` (transformers' convention); anything else needs `unpack`. The model
            may return a transformers ModelOutput: batch mode then uses the model's own
            loss (`.loss`, given the labels), and per_sample mode scores each sample alone
            the same way (a causal LM's token-mean cross-entropy of its shifted labels,
            -100 ignored; a classifier's loss of its label); otherwise `.logits` is used.
        mode: "batch" (the published estimate, which depends on the batch size) or
            "per_sample" (the empirical Fisher (1/N) sum_i (grad loss_i)^2, the same up to
            float rounding for any batch size and data order; see ssd_fast.per_sample).
            Per-sample gradients need samples that do not interact, which is why
            BatchNorm must use running statistics (eval mode, as here).
        label_free: LFSSD: use mean ||f(x)||^2 as the objective and accumulate |g|
            (per_sample: |grad ||f(x_i)||^2| per sample).
        loss_fn: `loss_fn(outputs, targets) -> scalar`; cross-entropy by default. In
            per_sample mode it must return a [B] tensor of per-sample losses instead
            (e.g. reduction="none").
        unpack: maps a batch to `(inputs, targets)`. Inputs may be a tensor, a tuple
            (passed as positional arguments) or a dict (keyword arguments). In
            per_sample mode the targets may be `ssd_fast.per_sample.Weighted(targets,
            weight)` (per-sample weights) or `PerClass(weight)` (an expectation over
            classes; `PerClass()` gives the true Fisher of the model's own predictions).
        device: where to compute; defaults to the device of the model's parameters.
        progress: show a tqdm progress bar.
        precision: the arithmetic of the forward and backward passes (see
            ssd_fast._precision). "exact" (default): fp32, with autocast and TF32 off for
            the pass, within float rounding of an fp64 batch-size-1 loop. "tf32": on CUDA,
            matmuls and convolutions may use TF32 tensor cores (on the CPU it is "exact").
            "bf16": both passes under `torch.autocast(device, torch.bfloat16)`; the sums
            stay fp32. The README lists the measured error of each. Global flags are
            restored afterwards.

    Returns:
        Importances with one fp32 tensor per named parameter (zeros for frozen ones),
        on the parameters' devices, with the mode, sample and batch counts, batch size,
        precision actually used and model fingerprint recorded.
    """
    _check_arguments(model, data, mode, label_free, loss_fn, unpack, precision)
    # Keyed by the wrapped module's names; run on it directly, so DDP's gradient all-reduce never runs.
    model = _parallel.unwrap(model)
    device = torch.device(device) if device is not None else model_device(model)
    all_params = dict(model.named_parameters())
    trainable = {n: p for n, p in all_params.items() if p.requires_grad}
    if not trainable:
        raise ValueError("the model has no parameters with requires_grad=True, so nothing has an importance")
    sums = _parallel.importance_sums(all_params)
    accumulate = _make_accumulator(mode, model, trainable, label_free, loss_fn)
    watch = _NonFiniteWatch(sums, trainable)

    n_samples = n_batches = 0
    batch_size = None
    try:
        with (
            eval_mode(model),
            torch.enable_grad(),
            precision_scope(precision, device.type),
            record_per_sample_paths() as per_sample_paths,
        ):
            for batch in with_progress(data, progress and _parallel.is_main(), desc=f"importance ({mode})"):
                inputs, targets = unpack_batch(batch, unpack, label_free=label_free)
                inputs, targets = to_device(inputs, device), to_device(targets, device)
                size = count_samples(inputs)
                batch_size = size if batch_size is None else batch_size
                accumulate(inputs, targets, sums)
                watch.after_batch(n_batches)
                n_samples += size
                n_batches += 1
    finally:
        close = getattr(accumulate, "close", None)  # accumulators that install hooks remove them
        if close is not None:
            close()
    probe = ProbeRead(model)  # the parameters are as they were: importance changes none of them
    n_samples, n_batches, batch_size = _parallel.reduce_importance(
        sums,
        _parallel.Counts(n_samples, n_batches, batch_size),
        global_batches=getattr(accumulate, "global_batches", False),
        extra=probe.parts,
    )
    if n_batches == 0 or n_samples == 0:
        raise ValueError("data yielded no samples, so there is nothing to estimate importance from")
    watch.check()

    divisor = n_batches if mode == "batch" else n_samples
    torch._foreach_div_([_parallel.local(s) for s in sums.values()], float(divisor))
    return Importances(
        sums,
        mode=mode,
        label_free=label_free,
        n_samples=n_samples,
        n_batches=n_batches,
        batch_size=batch_size,
        precision=effective_precision(precision, device.type),
        fingerprint=model_fingerprint(model),
        checkpoint_probe=probe.values(),
        per_sample_paths=per_sample_paths if mode == "per_sample" else None,
    )


register_compute(importance)  # for Importances.update, without an import cycle
