"""Assigning every trainable parameter to one way of getting its per-sample gradients.

- a layer rule, when its module has one (Linear, Conv, norms, Embedding);
- a bare parameter, when a module without a rule owns a parameter whose leading dim is
  1 (a ViT cls token, a position embedding): it is replaced, for the forward pass, by a
  [B, ...] per-sample copy whose gradient is exactly the per-sample gradient;
- vmap for everything else, and for whatever the run-time checks reject
  (shared parameters, layers called twice, parameters used outside their layer).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from torch import nn

from .rules import Rule, rule_for


@dataclass(eq=False)
class Layer:
    """One module whose parameters a rule covers; `params` maps local to full names."""

    name: str
    module: nn.Module
    rule: Rule
    params: dict[str, str]


@dataclass
class Plan:
    layers: list[Layer] = field(default_factory=list)
    bare: dict[str, nn.Parameter] = field(default_factory=dict)
    vmap: dict[str, nn.Parameter] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # full parameter name -> "module (Class)"


def _is_bare_candidate(p: nn.Parameter) -> bool:
    """Leading dim 1: broadcast over the batch, so a [B, ...] copy can stand in for it."""
    return p.dim() >= 2 and p.shape[0] == 1


def make_plan(model: nn.Module, params: dict[str, nn.Parameter], forced: set[str]) -> Plan:
    """The plan for `params` (trainable, by full name); `forced` names go to vmap."""
    name_of = {id(p): n for n, p in params.items()}
    owners = Counter(id(p) for m in model.modules() for p in m._parameters.values() if p is not None)
    plan = Plan()
    for mod_name, module in model.named_modules():
        direct = {
            local: name_of[id(p)]
            for local, p in module._parameters.items()
            if p is not None and id(p) in name_of and name_of[id(p)] not in plan.owner
        }
        if not direct:
            continue
        for full in direct.values():
            plan.owner[full] = f"{mod_name or '<model>'} ({type(module).__name__})"
        shared = {full for full in direct.values() if owners[id(params[full])] > 1}
        own = {local: full for local, full in direct.items() if full not in forced and full not in shared}
        for full in set(direct.values()) - set(own.values()):
            plan.vmap[full] = params[full]
        rule = rule_for(module)
        if rule is not None:
            if own:
                plan.layers.append(Layer(mod_name, module, rule, own))
            continue
        for full in own.values():
            target = plan.bare if _is_bare_candidate(params[full]) else plan.vmap
            target[full] = params[full]
    return plan
