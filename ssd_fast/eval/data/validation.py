"""A held-out slice of the training data, for choosing hyper-parameters without the test set.

`ssd_fast.tune` scores each trial on small evaluation subsets. Taken from images the
model trained on, they mislead it: memorised retain images lose accuracy under
dampening faster than unseen ones (Shirt on the 5-epoch small CNN: 3.4 points on
trained-on images where the test set lost 0.8), so tune rejects settings that are fine.
Holding a few images per class out of training, and scoring on those, avoids that.

    trained_on, held_out = split_validation(data, per_class=600, seed=0)
    # train on trained_on.train_x / train_y; tune on subsets of held_out
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.utils.data import TensorDataset

from .datasets import ImageData


def split_validation(data: ImageData, per_class: int, seed: int = 0) -> tuple[ImageData, TensorDataset]:
    """Move `per_class` seeded random training images of every class into a validation set.

    Returns:
        (data with the remaining training images, the held-out images as a TensorDataset).
        The test set is unchanged; per_class=0 holds nothing out.

    Raises:
        ValueError: if per_class is negative or leaves some class with no training image.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 0:
        raise ValueError(f"per_class must be a non-negative int, got {per_class!r}")
    held = torch.zeros(len(data.train_y), dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    for cls in range(data.num_classes):
        members = torch.nonzero(data.train_y == cls).flatten()
        if per_class >= len(members):
            raise ValueError(
                f"per_class={per_class} would hold out every training image of class {cls} "
                f"({data.classes[cls]!r}: {len(members)} images)"
            )
        held[members[torch.randperm(len(members), generator=generator)[:per_class]]] = True
    kept = replace(data, train_x=data.train_x[~held], train_y=data.train_y[~held])
    return kept, TensorDataset(data.train_x[held], data.train_y[held])
