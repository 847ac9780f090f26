"""transformers models, built from small configs (no download), in both modes, with no wrapper.

Oracle: a batch-size-1 loop of the model's own loss (`model(**one, labels=...).loss`),
in float64, on each padded row with its own attention mask. Every model here must be
covered by exact rules: no module may go to vmap, and nothing is ever vmapped whole.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import ssd_fast
from ssd_fast.per_sample import PerSampleAccumulator

from ..conftest import assert_unchanged, snapshot

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB, N = 40, 7


def gpt2():
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)  # default (sdpa) attention; lm_head tied to wte


def llama():
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(config)


def bert():
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def vit():
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(config)


MODELS = {"gpt2": gpt2, "llama": llama, "bert": bert, "vit": vit}


def _batches(name: str, n: int = N, size: int = 3) -> list[dict]:
    """Dict batches as a transformers collator makes them: padded, masked, labels -100 on padding."""
    g = torch.Generator().manual_seed(5)
    if name == "vit":
        x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
        return [{"pixel_values": x[i : i + size], "labels": y[i : i + size]} for i in range(0, n, size)]
    ids = torch.randint(1, VOCAB, (n, 6), generator=g)
    mask = torch.ones_like(ids)
    lengths = [6, 4, 2, 6, 5, 3, 1][:n]
    for i, length in enumerate(lengths):
        mask[i, length:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.randint(0, 3, (n,), generator=g) if name == "bert" else ids.masked_fill(mask == 0, -100)
    if name != "bert":
        labels[1, 2] = -100  # a scored position in the middle left out
    return [
        {"input_ids": ids[i : i + size], "attention_mask": mask[i : i + size], "labels": labels[i : i + size]}
        for i in range(0, n, size)
    ]


def _rows(batches: list[dict]) -> list[dict]:
    return [{k: v[i : i + 1] for k, v in b.items()} for b in batches for i in range(len(next(iter(b.values()))))]


def _label_free_loss(model, row: dict) -> torch.Tensor:
    """||logits||^2 over the positions the attention mask keeps."""
    inputs = {k: v for k, v in row.items() if k != "labels"}
    logits = model(**inputs).logits
    if "attention_mask" in row and logits.dim() == 3:
        logits = logits * row["attention_mask"].unsqueeze(-1)
    return logits.square().sum()


def loop_oracle(model, batches: list[dict], *, label_free: bool = False) -> dict[str, torch.Tensor]:
    """Batch size 1, the model's own loss (or ||logits||^2), float64."""
    model = model.double().eval()
    params = {n: p for n, p in model.named_parameters()}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    rows = _rows(batches)
    for row in rows:
        row = {k: v.double() if v.is_floating_point() else v for k, v in row.items()}
        loss = _label_free_loss(model, row) if label_free else model(**row).loss
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)):
            if g is not None:
                sums[n] += g.abs() if label_free else g.square()
    model.float()
    return {n: (s / len(rows)).float() for n, s in sums.items()}


def batch_oracle(model, batches: list[dict]) -> dict[str, torch.Tensor]:
    """Published SSD on the model's own mean loss, float64: mean over batches of the squared gradient."""
    model = model.double().eval()
    params = {n: p for n, p in model.named_parameters()}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for b in batches:
        b = {k: v.double() if v.is_floating_point() else v for k, v in b.items()}
        for n, g in zip(params, torch.autograd.grad(model(**b).loss, list(params.values()), allow_unused=True)):
            if g is not None:
                sums[n] += g.square()
    model.float()
    return {n: (s / len(batches)).float() for n, s in sums.items()}


def assert_close(got, want, rtol: float = 2e-5) -> None:
    """As support.assert_close, but a parameter whose gradient is zero in exact arithmetic (the
    key bias of softmax attention) is held to the scale of the whole model, not its own noise."""
    assert set(got) == set(want)
    floor = max(float(v.abs().max()) for v in want.values()) * 1e-5
    for name in want:
        scale = max(float(want[name].abs().max()), floor)
        err = float((got[name] - want[name]).abs().max()) / scale
        assert err <= rtol, f"{name}: relative error {err:.2e}"


def _model(name: str):
    torch.manual_seed(0)
    return MODELS[name]().eval()


@pytest.mark.parametrize("label_free", [False, True], ids=["loss", "label_free"])
@pytest.mark.parametrize("name", list(MODELS))
def test_per_sample_matches_batch_size_one_loop(name: str, label_free: bool) -> None:
    model, batches = _model(name), _batches(name)
    if name in ("gpt2", "llama", "bert"):
        assert model.config._attn_implementation == "sdpa"  # the default, whose mask code vmap cannot run
    names = [n for n, _ in model.named_parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no module may fall back to vmap
        got = ssd_fast.importance(model, batches, mode="per_sample", label_free=label_free, progress=False)
    assert list(got) == names  # the model's own parameter names, no wrapper prefix
    assert got.n_samples == N
    assert_close(got, loop_oracle(model, batches, label_free=label_free), rtol=2e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_mode_uses_the_models_own_loss(name: str) -> None:
    model, batches = _model(name), _batches(name)
    got = ssd_fast.importance(model, batches, progress=False)
    assert_close(got, batch_oracle(model, batches), rtol=2e-5)
    assert_close(got, ssd_fast.reference.importance(model, batches), rtol=2e-5)


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_label_free_batch_mode_at_batch_size_one_equals_per_sample(name: str) -> None:
    model, batches = _model(name), _batches(name, size=1)
    a = ssd_fast.importance(model, batches, mode="batch", label_free=True, progress=False)
    b = ssd_fast.importance(model, batches, mode="per_sample", label_free=True, progress=False)
    assert_close(a, dict(b), rtol=2e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_parameter_has_an_exact_rule(name: str) -> None:
    model = _model(name)
    params = dict(model.named_parameters())
    acc = PerSampleAccumulator(model, params)
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    batch = _batches(name)[0]
    with torch.enable_grad():
        acc({k: v for k, v in batch.items() if k != "labels"}, batch["labels"], sums)
    acc.close()
    assert acc.plan.fallbacks == []  # no module under vmap, let alone the whole model
    covered = {f for layer in acc.plan.layers for f in layer.params.values()} | set(acc.plan.bare)
    covered |= {f for unit in acc.plan.units for f in unit.params.values()}
    assert covered == set(params)
    if name in ("gpt2", "llama"):  # the tied input/output embedding: its uses are summed per sample
        assert sum(layer.deferred for layer in acc.plan.layers) == 2


def test_batch_size_does_not_matter_for_per_sample() -> None:
    model = _model("gpt2")
    results = [
        ssd_fast.importance(model, _batches("gpt2", size=s), mode="per_sample", progress=False) for s in (1, 4, 7)
    ]
    for r in results[1:]:
        assert_close(r, dict(results[0]), rtol=2e-5)


def test_model_state_is_untouched() -> None:
    model = _model("gpt2").train()
    before = snapshot(model)
    ssd_fast.importance(model, _batches("gpt2"), mode="per_sample", progress=False)
    ssd_fast.importance(model, _batches("gpt2"), progress=False)
    assert_unchanged(model, before)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_dict_batch_without_labels_is_refused_clearly() -> None:
    model = _model("gpt2")
    batch = {k: v for k, v in _batches("gpt2")[0].items() if k != "labels"}
    before = snapshot(model)
    with pytest.raises(TypeError, match="no 'labels'"):
        ssd_fast.importance(model, [batch], progress=False)
    assert_unchanged(model, before)


def test_model_without_a_head_is_refused_clearly() -> None:
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2Model(config).eval()
    before = snapshot(model)
    with pytest.raises(TypeError, match="holds no logits"):
        ssd_fast.importance(
            model, [{"input_ids": torch.zeros(2, 3, dtype=torch.long)}], label_free=True, progress=False
        )
    assert_unchanged(model, before)


def _bert_head(head: str, **config_kw):
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
        **config_kw,
    )
    return getattr(transformers, head)(config)


HEADS = {
    "regression": (
        lambda: _bert_head("BertForSequenceClassification", num_labels=1),
        lambda g, n: torch.randn(n, generator=g),
    ),
    "multi_label": (
        lambda: _bert_head("BertForSequenceClassification", num_labels=3),
        lambda g, n: (torch.rand(n, 3, generator=g) > 0.5).float(),
    ),
    "token_classification": (
        lambda: _bert_head("BertForTokenClassification", num_labels=4),
        lambda g, n: torch.randint(0, 4, (n, 6), generator=g).masked_fill(torch.rand(n, 6, generator=g) > 0.6, -100),
    ),
    "masked_lm": (
        lambda: _bert_head("BertForMaskedLM"),
        lambda g, n: torch.randint(0, VOCAB, (n, 6), generator=g).masked_fill(
            torch.rand(n, 6, generator=g) > 0.4, -100
        ),
    ),
}


@pytest.mark.parametrize("head", list(HEADS))
def test_other_heads_score_each_sample_as_the_model_does(head: str) -> None:
    make, labels = HEADS[head]
    torch.manual_seed(0)
    model = make().eval()
    batches = _batches("bert")
    g = torch.Generator().manual_seed(1)
    for b in batches:
        b["labels"] = labels(g, len(b["input_ids"]))
    got = ssd_fast.importance(model, batches, mode="per_sample", progress=False)
    assert_close(got, loop_oracle(model, batches), rtol=2e-5)
    assert_close(ssd_fast.importance(model, batches, progress=False), batch_oracle(model, batches), rtol=2e-5)


def test_a_layer_without_rule_inside_gpt2_is_vmapped_alone() -> None:
    """A PReLU (no rule) in GPT-2's MLP: vmap over it alone works where vmap over the model cannot."""
    model = _model("gpt2")
    torch.manual_seed(1)
    model.transformer.h[0].mlp.act = torch.nn.PReLU(init=0.3)
    batches = _batches("gpt2")
    with pytest.warns(RuntimeWarning, match=r"transformer\.h\.0\.mlp\.act \(PReLU\).*alone"):
        got = ssd_fast.importance(model, batches, mode="per_sample", progress=False)
    assert_close(got, loop_oracle(model, batches), rtol=2e-5)
    acc = PerSampleAccumulator(model, dict(model.named_parameters()))
    # PReLU's one weight looks like a bare scale until the first batch shows prelu() using it.
    with pytest.warns(RuntimeWarning, match=r"it is used in prelu"):
        acc.check(batches[0])
    acc.close()
    assert [u.name for u in acc.plan.fallbacks] == ["transformer.h.0.mlp.act"]  # that module, not the model
