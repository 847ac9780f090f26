"""The image data the benchmark runs on: Fashion-MNIST from its IDX files, digits as fallback.

Everything is loaded into memory as normalised float tensors of shape (N, 1, H, W):
Fashion-MNIST is 70k images of 28x28 (about 220 MB as fp32), small enough that a
TensorDataset beats any on-the-fly decoding on a 2-core machine.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .idx import read_idx

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageData:
    """A labelled train/test image set, in memory.

    Attributes:
        name: "fashion-mnist" or "digits".
        classes: class names, indexed by label.
        train_x, test_x: float32 tensors (N, 1, H, W), normalised to zero mean, unit std
            (statistics of the training images).
        train_y, test_y: int64 label tensors (N,), values in [0, len(classes)).
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def subsample_test(data: ImageData, size: int | None, seed: int = 0) -> ImageData:
    """`data` with a seeded random `size` of its test images (all of them when size is None).

    Evaluation passes over the test set for every method; a smaller one keeps CPU runs short.
    """
    if size is None or size >= len(data.test_y):
        return data
    if size <= 0:
        raise ValueError(f"test subset size must be positive, got {size}")
    keep = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return replace(data, test_x=data.test_x[keep], test_y=data.test_y[keep])


def _find(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_available(data_dir: str | Path | None = None) -> bool:
    """True when all four Fashion-MNIST IDX files are present in `data_dir`."""
    directory = Path(data_dir or DEFAULT_DATA_DIR)
    return all(_find(directory, stem) is not None for stem in _FILES.values())


def _normalise(train: np.ndarray, test: np.ndarray, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale to [0, 1], then standardise with the training images' own mean and std."""
    tr = torch.from_numpy(train.astype(np.float32) / scale).unsqueeze(1)
    te = torch.from_numpy(test.astype(np.float32) / scale).unsqueeze(1)
    mean, std = tr.mean(), tr.std()
    return (tr - mean) / std, (te - mean) / std


def load_fashion_mnist(data_dir: str | Path | None = None) -> ImageData:
    """Fashion-MNIST (60k train, 10k test, 1x28x28, 10 classes) from its IDX files.

    Args:
        data_dir: folder holding the four IDX files (`.gz` or not); defaults to
            $SSD_FAST_DATA or the Debian package's /usr/share/datasets/fashion-mnist.

    Raises:
        FileNotFoundError: naming the missing files and how to install them.
    """
    directory = Path(data_dir or os.environ.get("SSD_FAST_DATA") or DEFAULT_DATA_DIR)
    paths = {key: _find(directory, stem) for key, stem in _FILES.items()}
    missing = [_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {directory}: missing {', '.join(missing)} (.gz). "
            "Install it with `apt-get install dataset-fashion-mnist` or pass --data-dir."
        )
    arrays = {key: read_idx(path) for key, path in paths.items()}
    train_x, test_x = _normalise(arrays["train_x"], arrays["test_x"], 255.0)
    return ImageData(
        name="fashion-mnist",
        classes=FASHION_CLASSES,
        train_x=train_x,
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=test_x,
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
    )


def load_digits_data(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's bundled digits (1,797 images, 1x8x8, 10 classes), split at random.

    The split is stratified-free but seeded, so it is the same on every call with the
    same `seed`.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images, bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]
    train_x, test_x = _normalise(images[train_idx], images[test_idx], 16.0)
    return ImageData(
        name="digits",
        classes=DIGIT_CLASSES,
        train_x=train_x,
        train_y=torch.from_numpy(labels[train_idx]),
        test_x=test_x,
        test_y=torch.from_numpy(labels[test_idx]),
    )


def load_dataset(data_dir: str | Path | None = None, *, fallback: bool = True) -> ImageData:
    """Fashion-MNIST when its files are there; otherwise digits, with a warning saying so.

    Args:
        data_dir: see `load_fashion_mnist`.
        fallback: when False, a missing Fashion-MNIST raises instead of falling back.
    """
    try:
        return load_fashion_mnist(data_dir)
    except FileNotFoundError as err:
        if not fallback:
            raise
        warnings.warn(
            f"{err} Falling back to scikit-learn's 8x8 digits: results are NOT comparable with Fashion-MNIST figures.",
            stacklevel=2,
        )
        return load_digits_data()
