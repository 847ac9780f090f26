"""Which layers have an exact per-sample rule, and which rule; `register_rule` adds one.

A rule takes (module, layer input, output gradient, {local name: sum tensor}, *,
absolute, budget) and adds that layer's sum over the batch of squared (or, with
absolute=True, absolute) per-sample parameter gradients. Its optional `grad_sample`
companion takes (module, layer input, output gradient) for a slice of samples and
returns {local name: [samples, *param.shape]}, the per-sample gradients themselves;
the engine needs it when a parameter is used more than once (tied weights, a layer
called twice), because the uses must then be summed before squaring.

Recurrent layers have two rules of their own (see rnn): an `output_rule`, which replaces
the layer's output in the forward pass by an equal one whose internal tensors are tapped,
and a `call_grad_sample`, which takes (module, args, kwargs, {output leaf index:
gradient}, sample slice) after the backward pass and returns that slice's per-sample
gradients, for layers called more than once.

A rule is used only when the module runs the standard forward of its class: a subclass
that overrides forward (or an instance given its own forward) may use its parameters
differently. Such a subclass of a built-in norm class gets a rule only when a probe shows
it computes what the rule assumes (see norm_like: timm's LayerNorm, LayerNorm2d,
BatchNormAct2d); any other goes to vmap. transformers classes are matched by name and
module (transformers is never imported), and RMSNorm classes of any name by what they
compute (see rms_like).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .conv import conv_rule
from .embedding import embedding_rule
from .linear import linear_rule
from .norm import batch_norm_rule, group_norm_rule, layer_norm_rule, rms_norm_rule
from .norm_like import norm_like_entry
from .per_sample_grads import (
    batch_norm_grad_sample,
    conv_grad_sample,
    embedding_grad_sample,
    group_norm_grad_sample,
    layer_norm_grad_sample,
    linear_grad_sample,
    rms_norm_grad_sample,
)
from .rms_like import rms_like_entry
from .rnn import rnn_call_grad_sample, rnn_output_rule
from .transformers_conv1d import conv1d_grad_sample, conv1d_rule

Rule = Callable[..., None]
GradSample = Callable[..., dict[str, torch.Tensor]]


@dataclass(frozen=True)
class RuleEntry:
    """A rule, and its per-sample-gradient companion when it has one; or a call rule alone."""

    rule: Rule | None
    grad_sample: GradSample | None = None
    call_grad_sample: GradSample | None = None
    output_rule: Callable | None = None


_RULES: dict[type[nn.Module], RuleEntry] = {
    nn.Linear: RuleEntry(linear_rule, linear_grad_sample),
    nn.Conv1d: RuleEntry(conv_rule, conv_grad_sample),
    nn.Conv2d: RuleEntry(conv_rule, conv_grad_sample),
    nn.BatchNorm1d: RuleEntry(batch_norm_rule, batch_norm_grad_sample),
    nn.BatchNorm2d: RuleEntry(batch_norm_rule, batch_norm_grad_sample),
    nn.BatchNorm3d: RuleEntry(batch_norm_rule, batch_norm_grad_sample),
    nn.LayerNorm: RuleEntry(layer_norm_rule, layer_norm_grad_sample),
    nn.GroupNorm: RuleEntry(group_norm_rule, group_norm_grad_sample),
    nn.Embedding: RuleEntry(embedding_rule, embedding_grad_sample),
    nn.LSTM: RuleEntry(None, call_grad_sample=rnn_call_grad_sample, output_rule=rnn_output_rule),
    nn.GRU: RuleEntry(None, call_grad_sample=rnn_call_grad_sample, output_rule=rnn_output_rule),
    nn.RNN: RuleEntry(None, call_grad_sample=rnn_call_grad_sample, output_rule=rnn_output_rule),
}
if hasattr(nn, "RMSNorm"):
    _RULES[nn.RMSNorm] = RuleEntry(rms_norm_rule, rms_norm_grad_sample)

# Classes of other libraries, keyed by (module, class name) so that they need not be imported.
_NAMED_RULES: dict[tuple[str, str], RuleEntry] = {
    ("transformers.pytorch_utils", "Conv1D"): RuleEntry(conv1d_rule, conv1d_grad_sample),
}


def register_rule(module_type: type[nn.Module], rule: Rule, *, grad_sample: GradSample | None = None) -> None:
    """Give `module_type` an exact per-sample rule, used instead of the vmap fallback.

    Args:
        module_type: an nn.Module subclass. The rule covers the parameters the module
            owns directly (`module._parameters`), for instances of exactly this class or of
            subclasses that keep its forward.
        rule: `rule(module, x, dy, out, *, absolute, budget)`. `x` is the first positional
            argument of the module's forward, `dy` the gradient of its output (both lead
            with the batch dim), `out` maps the module's own parameter names to fp32 sum
            tensors of the parameters' shapes. Add sum_i g_i**2 over the samples i of the
            batch (or sum_i |g_i| when `absolute`), where g_i is sample i's gradient of
            that parameter; keep temporaries near `budget` elements.
        grad_sample: optional `grad_sample(module, x, dy) -> {name: [B, *param.shape]}`,
            the per-sample gradients themselves, used when the parameter is tied or the
            module is called more than once; without it such uses go to vmap.

    Example, a learned elementwise scale y = x * gain::

        def scale_rule(module, x, dy, out, *, absolute, budget):
            g = (dy * x).flatten(1, -2).sum(1) if x.dim() > 2 else dy * x   # [B, dim]
            out["gain"] += (g.abs() if absolute else g.square()).sum(0)

        ssd_fast.per_sample.register_rule(Scale, scale_rule)
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not callable(rule):
        raise TypeError(f"rule must be callable, got {type(rule).__name__}")
    if grad_sample is not None and not callable(grad_sample):
        raise TypeError(f"grad_sample must be callable, got {type(grad_sample).__name__}")
    _RULES[module_type] = RuleEntry(rule, grad_sample)


def unregister_rule(module_type: type[nn.Module]) -> None:
    """Remove a rule added with register_rule (the built-in rules are removed the same way)."""
    _RULES.pop(module_type, None)


def rule_for(module: nn.Module) -> RuleEntry | None:
    """The exact rule for this module, or None when it needs vmap."""
    for cls in type(module).__mro__:
        entry = _RULES.get(cls) or _NAMED_RULES.get((cls.__module__, cls.__name__))
        if entry is not None:
            if _unsupported_options(module):
                return None
            if type(module).forward is cls.forward and "forward" not in module.__dict__:
                return entry
            return norm_like_entry(module, cls, entry, RuleEntry)  # None unless cls is a norm class
    return rms_like_entry(module, RuleEntry)


def _unsupported_options(module: nn.Module) -> bool:
    # scale_grad_by_freq scales by counts over the whole batch: it mixes samples.
    if isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
        return True
    # An LSTM projection adds a weight the recurrent rule does not model.
    return isinstance(module, nn.LSTM) and module.proj_size > 0


def layer_input(module: nn.Module, args: tuple) -> torch.Tensor | None:
    """The tensor a rule needs from the forward call (indices for Embedding)."""
    return args[0] if args and isinstance(args[0], torch.Tensor) else None
