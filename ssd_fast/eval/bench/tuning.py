"""The data `ssd_tune` scores its trials on: held out of training, never the test set.

Before any model is trained, `--val-per-class` images of every class are moved out of
the training set (`split_validation`); every method's model is trained without them, so
they are unseen by all. Per scenario, `tune` then gets:
- "class": forget_eval = held-out images of the class, retain_eval = the other held-out
  images. The forget label never occurs in retain_eval, so tune aims at 0% and accepts at
  most chance.
- "subclass" and "random": forget_eval = the forgotten training samples themselves,
  retain_eval = held-out images outside the forget (sub)class, unseen_eval = held-out
  images of the forget distribution. A model retrained without Df treats Df like unseen
  data of its distribution, so tune aims at the original model's accuracy on those.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch.utils.data import DataLoader, TensorDataset

from ..data import ImageData, make_loader, make_scenario
from ..data.scenarios import Splits

EVAL_BATCH = 500  # scoring batches: large, since tune scores many trials on the same images


@dataclass(frozen=True)
class TuneSets:
    """tune's evaluation data as loaders of (x, y) batches in the training labels."""

    forget_eval: DataLoader
    retain_eval: DataLoader
    unseen_eval: DataLoader | None


def held_out_splits(data: ImageData, held_out: TensorDataset, scenario: str, forget: str | None) -> Splits:
    """The held-out images cut into the scenario's forget / retain parts, with its labels."""
    x, y = held_out.tensors
    held = replace(data, train_x=x, train_y=y)
    return make_scenario(held, scenario, forget, n_forget=1, train_subset=None, seed=0)


def tune_sets(splits: Splits, held: Splits) -> TuneSets:
    """What `ssd_tune` scores on for the run's `splits`, given `held_out_splits(...)` of the same scenario."""

    def loader(ds: TensorDataset) -> DataLoader:
        return make_loader(ds, EVAL_BATCH)

    if splits.scenario == "class":
        return TuneSets(loader(held.forget), loader(held.retain), None)
    if splits.scenario == "subclass":
        return TuneSets(loader(splits.forget), loader(held.retain), loader(held.forget))
    # random: the held-out images are all of the forget distribution (the whole training one).
    return TuneSets(loader(splits.forget), loader(held.train), loader(held.train))
