"""Hugging Face transformers conventions, recognised by duck typing (transformers is never imported).

- A model may return a `ModelOutput` (a dict-like object with `.logits` and, when labels
  were passed, `.loss`); importance reads `.logits` from it.
- A batch may be a dict of model keyword arguments holding its labels under `labels`
  (or `label`, as `datasets` names it); those are the targets and are not passed on.
- The model's own loss depends on its head, which transformers records as `loss_type`
  (from the class name: `ForCausalLM`, `ForSequenceClassification`, ...). `Task` says
  how that loss scores one sample, so that per-sample mode can score each sample alone
  exactly as the model scores a batch of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

LABEL_KEYS = ("labels", "label")

# loss_type values whose loss is a token-level cross-entropy, and whether labels are shifted.
# ForConditionalGeneration is left out: encoder-decoders (T5, Bart) score unshifted decoder
# labels while vision-language models shift them, so per-sample mode asks for a loss_fn there.
_TOKEN_LOSSES = {"ForCausalLM": True, "ForMaskedLM": False, "ForTokenClassification": False}
_SEQUENCE_LOSSES = {
    "ForSequenceClassification",
    "ForImageClassification",
    "ForVideoClassification",
    "ForAudioClassification",
}


class Task:
    """How a transformers model's own loss scores its labels.

    kind is "tokens" (token-level cross-entropy ignoring -100; `shift` for causal LMs,
    where position t predicts label t+1) or "sequence" (one label per sample:
    cross-entropy, or MSE / BCE as `config.problem_type` says).
    """

    def __init__(self, kind: str, *, shift: bool = False, config: Any = None):
        self.kind = kind
        self.shift = shift
        self.config = config

    def problem_type(self, labels: torch.Tensor) -> str:
        """transformers' own rule for a sequence classifier without an explicit problem_type."""
        config = self.config
        if getattr(config, "problem_type", None):
            return config.problem_type
        num_labels = getattr(config, "num_labels", 2)
        if num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int):
            return "single_label_classification"
        return "multi_label_classification"

    def __repr__(self) -> str:
        return f"Task({self.kind!r}, shift={self.shift})"


def task_of(model: nn.Module) -> Task | None:
    """The model's own loss, if it is a transformers model whose head we can mirror per sample."""
    if not hasattr(model, "config"):
        return None
    loss_type = getattr(model, "loss_type", None)
    name = type(model).__name__
    if loss_type is None and name.endswith("LMHeadModel"):  # GPT2LMHeadModel and kin default to causal LM
        loss_type = "ForCausalLM"
    if loss_type in _TOKEN_LOSSES:
        return Task("tokens", shift=_TOKEN_LOSSES[loss_type], config=model.config)
    if loss_type in _SEQUENCE_LOSSES:
        return Task("sequence", config=model.config)
    if loss_type is not None:
        return Task("other", config=model.config)
    return None


def is_model_output(out: Any) -> bool:
    return not isinstance(out, torch.Tensor) and hasattr(out, "logits") and isinstance(out.logits, torch.Tensor)


def logits_of(out: Any) -> torch.Tensor:
    """The tensor importance works on: the output itself, or a ModelOutput's `.logits`."""
    if isinstance(out, torch.Tensor):
        return out
    if is_model_output(out):
        return out.logits
    extra = ""
    if isinstance(out, Mapping) or hasattr(out, "last_hidden_state"):
        extra = " (a model without a task head returns hidden states: use the model with its head, e.g. ...ForCausalLM)"
    raise TypeError(
        f"the model returned {type(out).__name__}, which holds no logits{extra}; return a tensor "
        "of outputs, or a transformers ModelOutput with .logits"
    )


def split_labels(batch: Mapping) -> tuple[dict, Any] | None:
    """A dict batch as (model keyword arguments, labels); None when it holds no labels."""
    for key in LABEL_KEYS:
        if key in batch:
            return {k: v for k, v in batch.items() if k != key}, batch[key]
    return None


def attention_mask(inputs: Any) -> torch.Tensor | None:
    """The batch's attention mask, when the inputs are keyword arguments holding one."""
    if isinstance(inputs, Mapping):
        mask = inputs.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            return mask
    return None
