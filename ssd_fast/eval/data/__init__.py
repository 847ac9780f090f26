"""Real data for unlearning experiments: Fashion-MNIST (digits as fallback) and scenarios.

data = load_dataset()                                   # ImageData
splits = make_scenario(data, "class", "Sneaker", train_subset=10_000, seed=0)
loader = make_loader(splits.train, 64, shuffle=True, seed=0)
"""

from .datasets import (
    DEFAULT_DATA_DIR,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    ImageData,
    fashion_mnist_available,
    load_dataset,
    load_digits_data,
    load_fashion_mnist,
    subsample_test,
)
from .idx import read_idx
from .scenarios import (
    DIGIT_GROUPS,
    FASHION_GROUPS,
    SCENARIOS,
    Splits,
    class_scenario,
    default_groups,
    make_loader,
    make_scenario,
    pin_for,
    random_scenario,
    resolve_class,
    subclass_scenario,
)
from .validation import split_validation

__all__ = [
    "DEFAULT_DATA_DIR",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "ImageData",
    "fashion_mnist_available",
    "load_dataset",
    "load_digits_data",
    "load_fashion_mnist",
    "read_idx",
    "subsample_test",
    "DIGIT_GROUPS",
    "FASHION_GROUPS",
    "SCENARIOS",
    "Splits",
    "class_scenario",
    "default_groups",
    "make_loader",
    "make_scenario",
    "pin_for",
    "random_scenario",
    "resolve_class",
    "subclass_scenario",
    "split_validation",
]
