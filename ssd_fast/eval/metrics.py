"""How well a model forgot: accuracies, the paper's membership-inference score, parameters changed.

The MIA is the one the SSD paper uses (from Chundawat et al. 2023a): a logistic
regression on a single feature, the entropy of the softmax output, trained with the
retain set as members (label 1) and the test set as non-members (label 0), with
balanced class weights. The score is the fraction of the forget set the attack calls
members: high means the model still treats the forget set like training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._batches import call_model, eval_mode, to_device, unpack_batch
from ..tune._mia import entropy  # the attack's feature, shared with tune's MIA aim


def _batches(data: Dataset | Iterable, batch_size: int, device: torch.device) -> Iterable:
    """Datasets are wrapped in an unshuffled loader (pinned for a CUDA model, so the copies
    below are asynchronous); loaders and other iterables pass through."""
    if isinstance(data, Dataset):
        pin = device.type == "cuda" and torch.cuda.is_available()
        return DataLoader(data, batch_size=batch_size, shuffle=False, pin_memory=pin)
    return data


def _device_of(model: nn.Module) -> torch.device:
    """The device of the first parameter or buffer; CPU for a model with neither."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, data: Dataset | Iterable, *, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) over all of `data`, in eval mode, on the CPU as float32 / int64."""
    device = _device_of(model)
    logits, targets = [], []
    with eval_mode(model):
        for batch in _batches(data, batch_size, device):
            # Any batch importance takes: (x, y), tuple inputs, dict batches with labels; ModelOutput logits.
            x, y = unpack_batch(batch, None, label_free=False)
            logits.append(call_model(model, to_device(x, device)).float().cpu())
            targets.append(y.cpu())
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(logits), torch.cat(targets)


def accuracy(model: nn.Module, data: Dataset | Iterable, *, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] on a dataset or loader of (x, y); NaN when it is empty."""
    logits, targets = predict(model, data, batch_size=batch_size)
    if len(targets) == 0:
        return float("nan")
    return (logits.argmax(1) == targets).float().mean().item()


def mia_from_entropies(member: np.ndarray, nonmember: np.ndarray, target: np.ndarray) -> float:
    """Fit the attack on member/non-member entropies; the fraction of `target` called members."""
    from sklearn.linear_model import LogisticRegression

    if len(member) == 0 or len(nonmember) == 0:
        raise ValueError("the MIA needs at least one member (retain) and one non-member (test) sample")
    if len(target) == 0:
        return float("nan")
    features = np.concatenate([member, nonmember]).reshape(-1, 1)
    labels = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    # Two classes, so lbfgs fits the plain binary model; no multi_class argument (removed in sklearn 1.7).
    attack = LogisticRegression(class_weight="balanced", solver="lbfgs")
    attack.fit(features, labels)
    return float(attack.predict(np.asarray(target).reshape(-1, 1)).mean())


def mia(
    model: nn.Module,
    retain: Dataset | Iterable,
    forget: Dataset | Iterable,
    test: Dataset | Iterable,
    *,
    batch_size: int = 512,
) -> float:
    """The paper's membership-inference score in [0, 1] (see the module docstring).

    Args:
        retain: training samples kept (the attack's members).
        forget: the forgotten training samples (the attack's targets).
        test: held-out samples (the attack's non-members).
    """
    member, target, nonmember = (
        entropy(predict(model, d, batch_size=batch_size)[0]).numpy() for d in (retain, forget, test)
    )
    return mia_from_entropies(member, nonmember, target)


def fraction_changed(
    before: Mapping[str, torch.Tensor] | nn.Module, after: Mapping[str, torch.Tensor] | nn.Module
) -> float:
    """Share of parameter elements whose value differs (bitwise, NaN-aware) between two models.

    Takes models (their named parameters are compared) or name -> tensor mappings with
    the same names and shapes; buffers such as BatchNorm statistics are not parameters.
    """
    a, b = _params(before), _params(after)
    if a.keys() != b.keys():
        raise ValueError(f"the two models have different parameter names: {sorted(a.keys() ^ b.keys())[:5]}")
    changed = total = 0
    for name, t in a.items():
        u = b[name]
        if t.shape != u.shape:
            raise ValueError(
                f"parameter {name!r} has shape {tuple(t.shape)} in one model and {tuple(u.shape)} in the other"
            )
        same = (t == u) | (t.isnan() & u.isnan())
        changed += int((~same).sum())
        total += t.numel()
    return changed / total if total else 0.0


def _params(source: Mapping[str, torch.Tensor] | nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return {n: p.detach().cpu() for n, p in source.named_parameters()}
    return {n: t.detach().cpu() for n, t in source.items()}


def _hit(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return (logits.argmax(1) == targets).float().mean().item() if len(targets) else float("nan")


def evaluate(model: nn.Module, splits, *, batch_size: int = 512) -> dict[str, float]:
    """Every score the benchmark reports for `model` on a scenario's `splits`, as fractions.

    One forward pass over each of test, retain and forget (the test logits are split by
    `splits.test_forget_mask` rather than recomputed).

    Returns:
        forget_acc, retain_acc (where the scenario measures them, see
        ssd_fast.eval.data.scenarios), test_acc (whole test set), forget_train_acc,
        retain_train_acc, and mia (forget samples called members; see `mia`).
    """
    test_logits, test_y = predict(model, splits.test, batch_size=batch_size)
    retain_logits, retain_y = predict(model, splits.retain, batch_size=batch_size)
    forget_logits, forget_y = predict(model, splits.forget, batch_size=batch_size)
    mask = splits.test_forget_mask
    if mask is not None:
        forget_acc = _hit(test_logits[mask], test_y[mask])
        retain_acc = _hit(test_logits[~mask], test_y[~mask])
    else:
        forget_acc = _hit(forget_logits, forget_y)
        retain_acc = _hit(test_logits, test_y)
    score = mia_from_entropies(
        entropy(retain_logits).numpy(), entropy(test_logits).numpy(), entropy(forget_logits).numpy()
    )
    return {
        "forget_acc": forget_acc,
        "retain_acc": retain_acc,
        "test_acc": _hit(test_logits, test_y),
        "forget_train_acc": _hit(forget_logits, forget_y),
        "retain_train_acc": _hit(retain_logits, retain_y),
        "mia": score,
    }
