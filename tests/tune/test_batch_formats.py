"""tune takes every batch format importance takes: dict batches (attention mask kept), tuple
inputs, ModelOutput; transformers classifiers and causal LMs built from tiny configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast.tune._evaluation import EvalSet
from ssd_fast.tune._metric import Scoring

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 40


def _token_batches(n: int, seed: int, *, classes: int | None, batch: int = 16) -> list[dict]:
    """Dict batches of sequences of 3 to 12 tokens, right-padded with random tokens that only
    the attention mask tells apart. With `classes`, the label is a class (the last token's
    remainder); else labels are the tokens, -100 on padding."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        lengths = torch.randint(3, 13, (size,), generator=g)
        ids = torch.randint(1, VOCAB, (size, 12), generator=g)
        mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
        if classes is not None:
            labels = ids.gather(1, (lengths - 1)[:, None]).squeeze(1) % classes
        else:
            labels = ids.masked_fill(mask == 0, -100)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _train(model: nn.Module, batches: list[dict], steps: int = 60) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        loss = model(**batches[step % len(batches)]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def _own_accuracy(model: nn.Module, batches: list[dict], *, masked: bool, causal: bool) -> float:
    """The model's own accuracy, computed here directly: top-1 class, or top-1 next token on
    labelled positions; with `masked` False the attention mask is dropped."""
    hits = units = 0
    for b in batches:
        kwargs = {"input_ids": b["input_ids"]}
        if masked:
            kwargs["attention_mask"] = b["attention_mask"]
        logits = model(**kwargs).logits
        if causal:
            labels = b["labels"][:, 1:]
            pred = logits[:, :-1].argmax(-1)
            hits += int(((pred == labels) & (labels != -100)).sum())
            units += int((labels != -100).sum())
        else:
            hits += int((logits.argmax(-1) == b["labels"]).sum())
            units += len(b["labels"])
    return hits / units


def _split(batches: list[dict], keep) -> list[dict]:
    out = []
    for b in batches:
        rows = keep(b)
        if rows.any():
            out.append({k: v[rows] for k, v in b.items()})
    return out


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = transformers.BertForSequenceClassification(config)
    return _train(model, _token_batches(256, 0, classes=3))


@pytest.fixture(scope="module")
def causal_lm():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return _train(transformers.GPT2LMHeadModel(config), _token_batches(128, 0, classes=None))


def test_a_transformers_classifier_is_tuned_from_dict_batches_with_its_attention_mask(classifier) -> None:
    held = _token_batches(240, 1, classes=3)
    forget_eval = _split(held, lambda b: b["labels"] == 0)
    retain_eval = _split(held, lambda b: b["labels"] != 0)
    masked = _own_accuracy(classifier, retain_eval, masked=True, causal=False)
    unmasked = _own_accuracy(classifier, retain_eval, masked=False, causal=False)
    assert masked != unmasked  # the mask matters for this model, so the comparison below bites
    train = _token_batches(256, 0, classes=3)
    full = ssd_fast.importance(classifier, train, progress=False)
    forget = ssd_fast.importance(classifier, _split(train, lambda b: b["labels"] == 0), progress=False)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    model = __import__("copy").deepcopy(classifier)
    result = ssd_fast.tune(model, forget, full, forget_eval=forget_eval, retain_eval=retain_eval, progress=False)
    size = sum(len(b["labels"]) for b in retain_eval)
    # tune scores in its own batches: allow one sample of rounding between batch shapes.
    assert abs(result.original_retain_acc - masked) <= 1.0 / size + 1e-12
    assert (
        abs(result.original_forget_acc - _own_accuracy(classifier, forget_eval, masked=True, causal=False)) <= 1.0 / 80
    )
    assert result.target.bound == pytest.approx(1 / 3)  # full class: chance of the 3 labels
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    assert len(result.trials) > 1 and result.alpha is not None


def test_a_causal_lm_is_scored_by_token_accuracy_on_labelled_positions(causal_lm) -> None:
    held = _token_batches(160, 2, classes=None)
    forget_eval, retain_eval = held[:3], held[3:]
    masked = _own_accuracy(causal_lm, retain_eval, masked=True, causal=True)
    evalset = EvalSet(retain_eval, "retain_eval", torch.device("cpu"), scoring=Scoring(causal_lm))
    assert abs(evalset.accuracy(causal_lm) - masked) <= 1e-3
    assert not evalset.single_units and evalset.widest == 11  # up to 11 labelled next tokens a sequence
    train = _token_batches(128, 0, classes=None)
    full = ssd_fast.importance(causal_lm, train, progress=False)
    forget = ssd_fast.importance(causal_lm, train[:2], progress=False)
    model = __import__("copy").deepcopy(causal_lm)
    result = ssd_fast.tune(
        model,
        forget,
        full,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        target_forget_acc=0.05,
        lams=(1.0,),
        layer_fallback=False,
        progress=False,
    )
    assert abs(result.original_retain_acc - masked) <= 1e-3
    assert abs(result.original_forget_acc - _own_accuracy(causal_lm, forget_eval, masked=True, causal=True)) <= 1e-3
    assert len(result.trials) > 1


class TwoInputs(nn.Module):
    """model(x1, x2) returning a ModelOutput-like object with .logits."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x1, x2):
        return transformers.modeling_outputs.SequenceClassifierOutput(
            logits=self.head(torch.relu(self.a(x1) + self.b(x2)))
        )


def test_tuple_inputs_and_model_outputs() -> None:
    torch.manual_seed(0)
    model = TwoInputs().eval()
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(120, 6, generator=g), torch.randn(120, 6, generator=g)
    y = (x1[:, 0] > 0).long() + (x2[:, 0] > 0).long()
    batches = [((x1[i : i + 40], x2[i : i + 40]), y[i : i + 40]) for i in range(0, 120, 40)]
    evalset = EvalSet(batches, "retain_eval", torch.device("cpu"), scoring=Scoring(model))
    with torch.no_grad():
        want = float((model(x1, x2).logits.argmax(1) == y).float().mean())
    assert abs(evalset.accuracy(model) - want) <= 1.0 / 120
    assert evalset.single_units and evalset.size == 120


def test_labels_that_are_not_class_indices_are_refused_with_a_clear_message() -> None:
    model = nn.Linear(4, 3)
    evalset = EvalSet([(torch.zeros(5, 4), torch.zeros(5))], "retain_eval", torch.device("cpu"), scoring=Scoring(model))
    with pytest.raises(ValueError, match="class indices"):
        evalset.accuracy(model)
    with pytest.raises(TypeError, match="labels"):
        EvalSet([{"input_ids": torch.zeros(2, 3, dtype=torch.long)}], "forget_eval", torch.device("cpu"))


def test_a_metric_of_your_own_scores_and_is_answered_on_whole_sets_only() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(90, 4), torch.arange(90) % 3

    def top2(logits, labels):  # right when the label is among the two largest outputs
        hits = (logits.topk(2, dim=-1).indices == labels[:, None]).any(-1)
        return hits.double(), torch.ones(len(labels))

    evalset = EvalSet([(x, y)], "retain_eval", torch.device("cpu"), scoring=Scoring(model, top2))
    with torch.no_grad():
        want = float(top2(model(x), y)[0].mean())
    assert abs(evalset.accuracy(model) - want) <= 1.0 / 90
    assert evalset.widest is None and not evalset.single_units  # units unknown before scoring: no early answers
    with pytest.raises(TypeError, match="metric"):
        Scoring(model, "top2")
    bad = EvalSet([(x, y)], "retain_eval", torch.device("cpu"), scoring=Scoring(model, lambda lg, lb: lg))
    with pytest.raises(TypeError, match=r"\(hits, units\)"):
        bad.accuracy(model)
