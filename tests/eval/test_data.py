"""ssd_fast.eval.data: the IDX reader, the loaders and the three unlearning scenarios."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from ssd_fast.eval.data import (
    FASHION_CLASSES,
    ImageData,
    class_scenario,
    fashion_mnist_available,
    load_dataset,
    load_digits_data,
    load_fashion_mnist,
    make_scenario,
    random_scenario,
    read_idx,
    resolve_class,
    split_validation,
    subclass_scenario,
    subsample_test,
)

needs_fashion = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST IDX files not in /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_data()


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist()


def _write_idx(path, array: np.ndarray, code: int, compress: bool) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_uint8_and_int32(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", images, 0x08, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), images)
    ints = np.array([-5, 7, 1 << 20], dtype=np.int32)
    _write_idx(tmp_path / "b", ints, 0x0C, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), ints)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")
    with pytest.raises(ValueError, match="promises 5"):
        read_idx(tmp_path / "short")


@needs_fashion
def test_fashion_mnist_shapes_labels_and_normalisation(fashion):
    assert fashion.name == "fashion-mnist" and fashion.classes == FASHION_CLASSES
    assert fashion.train_x.shape == (60000, 1, 28, 28) and fashion.test_x.shape == (10000, 1, 28, 28)
    assert fashion.train_x.dtype == torch.float32 and fashion.train_y.dtype == torch.int64
    assert fashion.train_y.min() == 0 and fashion.train_y.max() == 9
    assert torch.bincount(fashion.train_y).tolist() == [6000] * 10
    assert torch.bincount(fashion.test_y).tolist() == [1000] * 10
    assert abs(fashion.train_x.mean().item()) < 1e-3 and abs(fashion.train_x.std().item() - 1) < 1e-3


def test_missing_fashion_mnist_falls_back_to_digits_with_a_warning(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    with pytest.warns(UserWarning, match="digits"):
        data = load_dataset(tmp_path)
    assert data.name == "digits" and data.image_shape == (1, 8, 8)
    assert len(data.train_y) + len(data.test_y) == 1797
    assert set(data.train_y.unique().tolist()) == set(range(10))
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path, fallback=False)


def test_resolve_class_accepts_names_indices_and_prefixes():
    assert resolve_class("Sneaker", FASHION_CLASSES) == 7
    assert resolve_class("sneaker", FASHION_CLASSES) == 7
    assert resolve_class("7", FASHION_CLASSES) == 7
    assert resolve_class(7, FASHION_CLASSES) == 7
    assert resolve_class("ankle_boot", FASHION_CLASSES) == 9
    assert resolve_class("t-shirt", FASHION_CLASSES) == 0
    with pytest.raises(ValueError, match="not a known class.*7=Sneaker"):
        resolve_class("boot", FASHION_CLASSES)
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_class("s", FASHION_CLASSES)
    with pytest.raises(ValueError, match="out of range"):
        resolve_class(10, FASHION_CLASSES)


def _assert_partition(splits) -> None:
    """forget and retain are disjoint and together exactly the training set, in order."""
    x, y = splits.train.tensors
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[splits.forget_indices] = True
    assert len(splits.forget) + len(splits.retain) == len(splits.train)
    assert torch.equal(splits.forget.tensors[0], x[mask]) and torch.equal(splits.forget.tensors[1], y[mask])
    assert torch.equal(splits.retain.tensors[0], x[~mask]) and torch.equal(splits.retain.tensors[1], y[~mask])


def test_class_scenario_splits(digits):
    s = class_scenario(digits, 3, train_subset=500, seed=1)
    _assert_partition(s)
    assert len(s.train) == 500 and s.forget_class == 3 and s.forget_name == "3"
    assert (s.forget.tensors[1] == 3).all() and not (s.retain.tensors[1] == 3).any()
    assert (s.test_forget.tensors[1] == 3).all() and not (s.test_retain.tensors[1] == 3).any()
    assert len(s.test_forget) + len(s.test_retain) == len(s.test)
    assert torch.equal(s.test.tensors[1][s.test_forget_mask], s.test_forget.tensors[1])
    again = class_scenario(digits, 3, train_subset=500, seed=1)
    assert torch.equal(again.forget_indices, s.forget_indices)


def test_subclass_scenario_trains_on_superclasses(digits):
    s = subclass_scenario(digits, 6, groups={"loops": (0, 6, 8, 9), "rest": (1, 2, 3, 4, 5, 7)})
    _assert_partition(s)
    assert s.classes == ("loops", "rest") and s.forget_class is None
    assert set(s.train.tensors[1].unique().tolist()) == {0, 1}
    assert (s.forget.tensors[1] == 0).all()  # sixes carry the "loops" superclass label
    assert len(s.forget) == int((digits.train_y == 6).sum())
    assert len(s.test_forget) == int((digits.test_y == 6).sum())
    with pytest.raises(ValueError, match="in no group"):
        subclass_scenario(digits, 6, groups={"a": (0, 6)})


def test_random_scenario_forgets_n_samples(digits):
    s = random_scenario(digits, 100, seed=0)
    _assert_partition(s)
    assert len(s.forget) == 100 and s.forget_class is None and s.test_forget_mask is None
    assert s.test_forget is s.forget and len(s.test_retain) == len(digits.test_y)
    other = random_scenario(digits, 100, seed=1)
    assert not torch.equal(other.forget_indices, s.forget_indices)
    with pytest.raises(ValueError, match="n_forget"):
        random_scenario(digits, 0)


def test_make_scenario_validates(digits):
    with pytest.raises(ValueError, match="scenario must be one of"):
        make_scenario(digits, "rows")
    with pytest.raises(ValueError, match="needs a class"):
        make_scenario(digits, "class")
    assert len(subsample_test(digits, 50).test_y) == 50


@needs_fashion
def test_fashion_scenarios_sizes(fashion):
    s = make_scenario(fashion, "class", "Sneaker")
    assert (len(s.forget), len(s.retain), len(s.test_forget), len(s.test_retain)) == (6000, 54000, 1000, 9000)
    s = make_scenario(fashion, "subclass", "Sneaker", train_subset=10000, seed=0)
    _assert_partition(s)
    assert s.classes == ("tops", "trouser", "dress", "footwear", "bag")
    assert (s.forget.tensors[1] == 3).all() and len(s.test_forget) == 1000
    s = make_scenario(fashion, "random", train_subset=10000)
    assert (len(s.forget), len(s.retain)) == (100, 9900)


def _tiny_image_data(per_class: int = 10, classes: int = 3) -> ImageData:
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    names = tuple(f"c{i}" for i in range(classes))
    return ImageData("tiny", names, images, labels, images[:classes], labels[:classes])


def test_split_validation_holds_out_per_class_disjointly_and_repeatably():
    data = _tiny_image_data()
    kept, held = split_validation(data, per_class=4, seed=3)
    held_x, held_y = held.tensors
    assert torch.bincount(held_y, minlength=3).tolist() == [4, 4, 4]
    assert torch.bincount(kept.train_y, minlength=3).tolist() == [6, 6, 6]
    # Each image's value is its index: the two parts are disjoint and together are everything.
    ids = torch.cat([kept.train_x[:, 0, 0, 0], held_x[:, 0, 0, 0]]).long().sort().values
    assert torch.equal(ids, torch.arange(30))
    assert torch.equal(data.train_y[held_x[:, 0, 0, 0].long()], held_y)  # labels travel with images
    assert kept.test_x is data.test_x
    again = split_validation(data, per_class=4, seed=3)[1].tensors[0]
    other = split_validation(data, per_class=4, seed=4)[1].tensors[0]
    assert torch.equal(again, held_x) and not torch.equal(other, held_x)


def test_split_validation_rejects_bad_sizes():
    data = _tiny_image_data()
    assert len(split_validation(data, 0)[1]) == 0
    with pytest.raises(ValueError, match="every training image of class 0"):
        split_validation(data, 10)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="per_class"):
            split_validation(data, bad)
