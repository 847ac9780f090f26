"""Label mistakes get a message that says what was found and what to do, before the first backward pass."""

from __future__ import annotations

import os

import pytest
import torch

import ssd_fast
from ssd_fast._labels import check_class_targets

from ..conftest import assert_unchanged, snapshot, tiny_batches

MODES = ["batch", "per_sample"]


def _with(labels_of):
    """tiny_batches (3 classes) with the first batch's labels replaced."""
    batches = tiny_batches(2, 4)
    x, y = batches[0]
    batches[0] = (x, labels_of(y))
    return batches


class _BackwardCount:
    """Counts gradients reaching a parameter: 0 after a refused call means no backward ran."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.fc.weight.register_hook(self._seen)

    def _seen(self, grad):
        self.n += 1


BAD_LABELS = [
    (lambda y: y.float(), ValueError, r"targets are torch.float32 with shape \[4\].*\.long\(\)"),
    (lambda y: y.int(), ValueError, r"targets are torch.int32.*torch.int64.*\.long\(\)"),
    (lambda y: y.bool(), ValueError, r"targets are booleans"),
    (lambda y: torch.full_like(y, 3), ValueError, r"holds the label 3.*\[0, 3\).*at least 4 classes"),
    (lambda y: y - 1 - (y == 1).long(), ValueError, r"holds the label -1.*renumber the classes from 0"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("labels_of, error, match", BAD_LABELS)
def test_bad_labels_are_refused_before_any_backward(tiny_model, mode, labels_of, error, match):
    before = snapshot(tiny_model)
    seen = _BackwardCount(tiny_model)
    with pytest.raises(error, match=match):
        ssd_fast.importance(tiny_model, _with(labels_of), mode=mode, progress=False)
    assert seen.n == 0
    assert_unchanged(tiny_model, before)


def test_dampen_from_data_with_bad_labels_leaves_the_model_unchanged(tiny_model):
    full = ssd_fast.importance(tiny_model, tiny_batches(4, 8), progress=False)
    before = snapshot(tiny_model)
    with pytest.raises(ValueError, match="holds the label 7"):
        ssd_fast.dampen(tiny_model, _with(lambda y: torch.full_like(y, 7)), full)
    assert_unchanged(tiny_model, before)


@pytest.mark.parametrize("mode", MODES)
def test_what_cross_entropy_accepts_still_passes(tiny_model, mode):
    soft = [(x, torch.nn.functional.one_hot(y, 3).float() * 0.9 + 0.1 / 3) for x, y in tiny_batches(2, 4)]
    ssd_fast.importance(tiny_model, soft, mode=mode, progress=False)  # soft labels, shaped like the outputs
    ignored = _with(lambda y: torch.where(torch.arange(4) == 0, -100, y))  # cross-entropy's ignore index
    ssd_fast.importance(tiny_model, ignored, mode=mode, progress=False)
    ssd_fast.importance(tiny_model, _with(lambda y: y.to(torch.uint8)), mode=mode, progress=False)


def test_a_loss_fn_takes_whatever_targets_it_defines(tiny_model):
    regression = [(x, y.float()) for x, y in tiny_batches(2, 4)]
    imp = ssd_fast.importance(
        tiny_model, regression, loss_fn=lambda out, t: (out[:, 0] - t).square().mean(), progress=False
    )
    assert imp.n_samples == 8


def test_the_check_for_scorers_without_an_ignore_index():
    """What tune's scorers call: accuracy has no ignore index, so -100 is an error there too."""
    outputs = torch.zeros(3, 5)
    check_class_targets(outputs, torch.tensor([0, 4, 2]), ignore_index=None)
    with pytest.raises(ValueError, match=r"holds the label -100.*\[0, 5\)") as raised:
        check_class_targets(outputs, torch.tensor([0, -100, 2]), ignore_index=None)
    assert "not scored" not in str(raised.value)
    with pytest.raises(ValueError, match="holds the label 5"):
        check_class_targets(outputs, torch.tensor([5, 0, 0]), ignore_index=None)


class TestTransformersLabels:
    @pytest.fixture
    def lm(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        transformers = pytest.importorskip("transformers")
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
        return transformers.GPT2LMHeadModel(config)

    @staticmethod
    def _batches(labels_of):
        ids = torch.randint(0, 20, (2, 6), generator=torch.Generator().manual_seed(0))
        return [{"input_ids": ids, "labels": labels_of(ids.clone())}]

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(
        "labels_of, match",
        [
            (lambda ids: ids.float(), r"token labels are torch.float32.*\.long\(\)"),
            (lambda ids: torch.where(ids == ids[0, 2], -5, ids), r"token label -5.*-100 marks a position"),
            (lambda ids: torch.where(ids == ids[0, 2], 20, ids), r"label.*(20|out of bounds).*\[0, "),
        ],
        ids=["float", "negative", "past_the_vocabulary"],
    )
    def test_token_label_mistakes(self, lm, mode, labels_of, match):
        before = snapshot(lm)
        with pytest.raises(ValueError, match=match):
            ssd_fast.importance(lm, self._batches(labels_of), mode=mode, progress=False)
        assert_unchanged(lm, before)

    @pytest.mark.parametrize("mode", MODES)
    def test_padding_labels_pass(self, lm, mode):
        ssd_fast.importance(lm, self._batches(lambda ids: torch.where(ids > 15, -100, ids)), mode=mode, progress=False)
