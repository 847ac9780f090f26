"""Which layers have an exact per-sample rule, and which rule.

A rule takes (module, layer input, output gradient, {local name: sum tensor}) and adds
that layer's sum over the batch of squared (or absolute) per-sample parameter gradients.
A rule is used only when the module runs the standard forward of its class: a subclass
that overrides forward may use its parameters differently, so it goes to vmap.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .conv import conv_rule
from .embedding import embedding_rule
from .linear import linear_rule
from .norm import batch_norm_rule, group_norm_rule, layer_norm_rule, rms_norm_rule

Rule = Callable[..., None]

_RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: linear_rule,
    nn.Conv1d: conv_rule,
    nn.Conv2d: conv_rule,
    nn.BatchNorm1d: batch_norm_rule,
    nn.BatchNorm2d: batch_norm_rule,
    nn.BatchNorm3d: batch_norm_rule,
    nn.LayerNorm: layer_norm_rule,
    nn.GroupNorm: group_norm_rule,
    nn.Embedding: embedding_rule,
}
if hasattr(nn, "RMSNorm"):
    _RULES[nn.RMSNorm] = rms_norm_rule


def rule_for(module: nn.Module) -> Rule | None:
    """The exact rule for this module, or None when it needs vmap."""
    for cls, rule in _RULES.items():
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return None if _unsupported_options(module) else rule
    return None


def _unsupported_options(module: nn.Module) -> bool:
    # scale_grad_by_freq scales by counts over the whole batch: it mixes samples.
    if isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
        return True
    return False


def layer_input(module: nn.Module, args: tuple) -> torch.Tensor | None:
    """The tensor a rule needs from the forward call (indices for Embedding)."""
    return args[0] if args and isinstance(args[0], torch.Tensor) else None
