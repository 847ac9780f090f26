"""The paper's three unlearning scenarios, each turned into forget / retain / test splits.

- "class": forget every training sample of one class (Chundawat et al. 2023b).
- "subclass": train on superclass labels, forget one subclass (e.g. Sneaker out of
  footwear), like the paper's CIFAR-20 "rocket out of vehicles" (Golatkar et al. 2020).
- "random": forget a random set of training samples, 100 by default (Golatkar et al. 2021).

Evaluation follows the published SSD code: for "class" and "subclass" the forget and
retain accuracies are measured on the *test* images of the forgotten and the other
(sub)classes; for "random" there is no held-out counterpart of the forget set, so forget
accuracy is measured on the forgotten training samples themselves and retain accuracy
on the whole test set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset

from .datasets import ImageData

SCENARIOS = ("class", "subclass", "random")

# Superclasses for the subclass scenario, by name -> member labels.
FASHION_GROUPS: dict[str, tuple[int, ...]] = {
    "tops": (0, 2, 4, 6),  # T-shirt/top, Pullover, Coat, Shirt
    "trouser": (1,),
    "dress": (3,),
    "footwear": (5, 7, 9),  # Sandal, Sneaker, Ankle boot
    "bag": (8,),
}
DIGIT_GROUPS: dict[str, tuple[int, ...]] = {
    "loops": (0, 6, 8, 9),
    "one": (1,),
    "two": (2,),
    "three": (3,),
    "strokes": (4, 7),
    "five": (5,),
}


@dataclass(frozen=True)
class Splits:
    """What one unlearning scenario hands to a method and to the metrics.

    Attributes:
        scenario: "class", "subclass" or "random".
        forget_name: human-readable description of what is forgotten ("Sneaker", ...).
        classes: names of the labels the model is trained on (superclasses for "subclass").
        train: the whole training set used (forget + retain), with training labels.
        forget, retain: the training samples to forget and to keep; disjoint, and their
            union is `train`.
        test: the whole test set, with training labels.
        test_forget, test_retain: where forget and retain accuracy are measured (see the
            module docstring).
        forget_indices: positions of the forget samples in `train`.
        forget_class: the training label that is forgotten whole ("class" scenario), else None.
        test_forget_mask: boolean mask over `test` selecting `test_forget` (the rest is
            `test_retain`); None for "random", whose test_forget is not part of `test`.
    """

    scenario: str
    forget_name: str
    classes: tuple[str, ...]
    train: TensorDataset
    forget: TensorDataset
    retain: TensorDataset
    test: TensorDataset
    test_forget: TensorDataset
    test_retain: TensorDataset
    forget_indices: torch.Tensor
    forget_class: int | None
    test_forget_mask: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_class(forget: int | str, classes: Sequence[str]) -> int:
    """The label index for a class given as an index, a digit string or a name.

    Names match case-insensitively, ignoring punctuation and spaces, and a unique prefix
    is enough: "sneaker", "Ankle boot", "ankle_boot", "t-shirt" all work.
    """
    if isinstance(forget, bool):
        raise TypeError(f"forget must be a class index or name, got {forget!r}")
    if isinstance(forget, int) or (isinstance(forget, str) and forget.strip().isdigit()):
        index = int(forget)
        if not 0 <= index < len(classes):
            raise ValueError(
                f"class index {index} is out of range: there are {len(classes)} classes (0-{len(classes) - 1})"
            )
        return index
    if not isinstance(forget, str):
        raise TypeError(f"forget must be a class index or name, got {type(forget).__name__}")
    wanted = _key(forget)
    keys = [_key(c) for c in classes]
    exact = [i for i, k in enumerate(keys) if k == wanted]
    matches = exact or [i for i, k in enumerate(keys) if wanted and k.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{i}={c}" for i, c in enumerate(classes))
    what = "is ambiguous" if matches else "is not a known class"
    raise ValueError(f"{forget!r} {what}; choose one of: {listing}")


def _subset(x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of the training set (all of it when size is None)."""
    if size is None or size >= len(y):
        return x, y
    if size <= 0:
        raise ValueError(f"train_subset must be positive, got {size}")
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return x[keep], y[keep]


def _split(x: torch.Tensor, y: torch.Tensor, forget_mask: torch.Tensor) -> tuple[TensorDataset, TensorDataset]:
    return TensorDataset(x[forget_mask], y[forget_mask]), TensorDataset(x[~forget_mask], y[~forget_mask])


def class_scenario(data: ImageData, forget: int | str, *, train_subset: int | None = None, seed: int = 0) -> Splits:
    """Forget one whole class. `train_subset` samples the training set first (seeded)."""
    label = resolve_class(forget, data.classes)
    x, y = _subset(data.train_x, data.train_y, train_subset, seed)
    mask = y == label
    forget_ds, retain_ds = _split(x, y, mask)
    test_forget, test_retain = _split(data.test_x, data.test_y, data.test_y == label)
    return Splits(
        scenario="class",
        forget_name=data.classes[label],
        classes=data.classes,
        train=TensorDataset(x, y),
        forget=forget_ds,
        retain=retain_ds,
        test=TensorDataset(data.test_x, data.test_y),
        test_forget=test_forget,
        test_retain=test_retain,
        forget_indices=mask.nonzero().flatten(),
        forget_class=label,
        test_forget_mask=data.test_y == label,
    )


def default_groups(data: ImageData) -> dict[str, tuple[int, ...]]:
    """The superclass grouping used for `data` when none is given."""
    return dict(FASHION_GROUPS if data.name == "fashion-mnist" else DIGIT_GROUPS)


def _superclass_map(groups: Mapping[str, Sequence[int]], num_classes: int) -> torch.Tensor:
    """label -> superclass index, checking the groups cover every class exactly once."""
    mapping = torch.full((num_classes,), -1, dtype=torch.int64)
    for g, members in enumerate(groups.values()):
        for m in members:
            if not 0 <= m < num_classes:
                raise ValueError(f"group member {m} is not a class index (0-{num_classes - 1})")
            if mapping[m] >= 0:
                raise ValueError(f"class {m} is in more than one group")
            mapping[m] = g
    if (mapping < 0).any():
        raise ValueError(f"classes {(mapping < 0).nonzero().flatten().tolist()} are in no group")
    return mapping


def subclass_scenario(
    data: ImageData,
    forget: int | str,
    *,
    groups: Mapping[str, Sequence[int]] | None = None,
    train_subset: int | None = None,
    seed: int = 0,
) -> Splits:
    """Train on superclass labels and forget one subclass (an original class).

    Args:
        groups: superclass name -> member class indices; every class in exactly one group.
            Defaults to `default_groups(data)` (for Fashion-MNIST: tops, trouser, dress,
            footwear, bag).
    """
    groups = dict(groups) if groups is not None else default_groups(data)
    to_super = _superclass_map(groups, data.num_classes)
    label = resolve_class(forget, data.classes)
    x, fine = _subset(data.train_x, data.train_y, train_subset, seed)
    y = to_super[fine]
    mask = fine == label
    forget_ds, retain_ds = _split(x, y, mask)
    test_y = to_super[data.test_y]
    test_forget, test_retain = _split(data.test_x, test_y, data.test_y == label)
    return Splits(
        scenario="subclass",
        forget_name=data.classes[label],
        classes=tuple(groups),
        train=TensorDataset(x, y),
        forget=forget_ds,
        retain=retain_ds,
        test=TensorDataset(data.test_x, test_y),
        test_forget=test_forget,
        test_retain=test_retain,
        forget_indices=mask.nonzero().flatten(),
        forget_class=None,
        test_forget_mask=data.test_y == label,
    )


def random_scenario(data: ImageData, n_forget: int = 100, *, train_subset: int | None = None, seed: int = 0) -> Splits:
    """Forget `n_forget` training samples drawn at random (seeded) without replacement."""
    x, y = _subset(data.train_x, data.train_y, train_subset, seed)
    if not 0 < n_forget < len(y):
        raise ValueError(f"n_forget must be between 1 and {len(y) - 1} (the training set size - 1), got {n_forget}")
    # A different stream from the subset's, so that changing n_forget does not move the subset.
    chosen = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 1_000_003))[:n_forget]
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[chosen] = True
    forget_ds, retain_ds = _split(x, y, mask)
    test = TensorDataset(data.test_x, data.test_y)
    return Splits(
        scenario="random",
        forget_name=f"{n_forget} random samples",
        classes=data.classes,
        train=TensorDataset(x, y),
        forget=forget_ds,
        retain=retain_ds,
        test=test,
        test_forget=forget_ds,
        test_retain=test,
        forget_indices=mask.nonzero().flatten(),
        forget_class=None,
    )


def make_scenario(
    data: ImageData,
    scenario: str,
    forget: int | str | None = None,
    *,
    n_forget: int = 100,
    train_subset: int | None = None,
    seed: int = 0,
) -> Splits:
    """One entry point for all scenarios: `forget` is the class (ignored for "random")."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if scenario == "random":
        return random_scenario(data, n_forget, train_subset=train_subset, seed=seed)
    if forget is None:
        raise ValueError(f"scenario {scenario!r} needs a class to forget (a name or an index)")
    build = class_scenario if scenario == "class" else subclass_scenario
    return build(data, forget, train_subset=train_subset, seed=seed)


def pin_for(device: torch.device | str | None) -> bool:
    """Whether loaders feeding `device` should pin their batches: on CUDA only (pinning is
    pointless for the CPU, and DataLoader warns when no accelerator is present)."""
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()


def make_loader(
    dataset: TensorDataset,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over an in-memory dataset; shuffling is seeded so runs repeat exactly.

    `pin_memory=True` (see `pin_for`) collates each batch into page-locked memory, so the
    consumers' `.to(device, non_blocking=True)` copies are asynchronous and the host can queue
    the next batch's kernels while the GPU computes. The batches are the same either way.
    """
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, pin_memory=pin_memory)
