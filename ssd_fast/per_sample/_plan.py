"""Assigning every trainable parameter to one way of getting its per-sample gradients.

- a layer rule, when its module has one (Linear, Conv, norms, Embedding, transformers'
  Conv1D and RMSNorm classes, user-registered rules). A layer whose parameter is used
  more than once (tied across modules, or the layer called twice) is `deferred`: its
  per-sample gradients from every use are summed before squaring (see _deferred);
- a bare parameter, when a module without a rule owns a parameter whose leading dim is
  1 (a ViT cls token, a position embedding): it is replaced, for the forward pass, by a
  [B, ...] per-sample copy whose gradient is exactly the per-sample gradient;
- a scale, when a module without a rule owns a parameter with at most one dim larger
  than 1 (ConvNeXt's gamma, LayerScale, a temperature): its uses as x * p or x + p are
  seen and tapped as they run (see _scales); any other use sends it to a unit;
- a unit, for everything else: torch.func vmap over one module alone, on that module's
  own inputs and output gradients (see _vmap). Never the whole model, unless the whole
  model is the smallest module that holds every use of a parameter.

`placement` carries what the run-time checks found: a full parameter name mapped to
DEFER, or to the name of the module whose unit must take it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ._coverage import common_module
from ._scales import is_candidate as is_scale_candidate
from .rules import RuleEntry, rule_for

DEFER = "<defer>"


@dataclass(eq=False)
class Layer:
    """One module whose parameters a rule covers; `params` maps local to full names."""

    name: str
    module: nn.Module
    entry: RuleEntry
    params: dict[str, str]
    deferred: bool = False

    @property
    def rule(self):
        return self.entry.rule


@dataclass(eq=False)
class Unit:
    """One module run alone under vmap; `params` maps its own parameter paths to full names."""

    name: str
    module: nn.Module
    params: dict[str, str]
    call_rule: Callable | None = None  # an exact rule for the whole call, instead of vmap


@dataclass
class Plan:
    layers: list[Layer] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    bare: dict = field(default_factory=dict)
    scales: dict = field(default_factory=dict)  # full name -> parameter, see _scales
    owner: dict[str, str] = field(default_factory=dict)  # full parameter name -> "module (Class)"

    @property
    def fallbacks(self) -> list[Unit]:
        """The units that run under vmap (no exact rule covers them)."""
        return [unit for unit in self.units if unit.call_rule is None]


def _is_bare_candidate(p: nn.Parameter) -> bool:
    """Leading dim 1: broadcast over the batch, so a [B, ...] copy can stand in for it."""
    return p.dim() >= 2 and p.shape[0] == 1


def describe(name: str, module: nn.Module) -> str:
    return f"{name or '<model>'} ({type(module).__name__})"


def make_plan(model: nn.Module, params: dict[str, nn.Parameter], placement: dict[str, str]) -> Plan:
    """The plan for `params` (trainable, by full name), given the placements checks asked for."""
    name_of = {id(p): n for n, p in params.items()}
    modules = dict(model.named_modules())
    owners: dict[str, list[str]] = {}  # full name -> the modules holding it directly, in module order
    for mod_name, module in modules.items():
        for p in module._parameters.values():
            if p is not None and id(p) in name_of and mod_name not in owners.get(name_of[id(p)], []):
                owners.setdefault(name_of[id(p)], []).append(mod_name)
    entries = {mod_name: rule_for(modules[mod_name]) for mod_name in {m for ms in owners.values() for m in ms}}
    plan = Plan(owner={full: describe(ms[0], modules[ms[0]]) for full, ms in owners.items()})
    unit_params: dict[str, set[str]] = {}
    for full, where in placement.items():
        if where != DEFER:
            unit_params.setdefault(where, set()).add(full)
    homes: dict[str, list[str]] = {}  # full name -> the rule modules covering it
    for full, mods in owners.items():
        if full in placement and placement[full] != DEFER:
            continue
        shared = len(mods) > 1 or placement.get(full) == DEFER
        ruled = [m for m in mods if entries[m] is not None]
        if ruled and (not shared or all(_can_share(entries[m]) for m in ruled)):
            homes[full] = ruled  # a tied owner without a rule that never uses it is checked by the trace
        elif not ruled and not shared and _is_bare_candidate(params[full]) and full not in placement:
            plan.bare[full] = params[full]
        elif not ruled and not shared and is_scale_candidate(params[full]) and full not in placement:
            plan.scales[full] = params[full]
        else:
            unit_params.setdefault(common_module(set(mods)), set()).add(full)
    for mod_name, module in modules.items():
        own = {
            local: name_of[id(p)]
            for local, p in module._parameters.items()
            if p is not None and mod_name in homes.get(name_of.get(id(p)), ())
        }
        if own:
            _add_rule_module(plan, mod_name, module, entries[mod_name], own, owners, placement)
    for mod_name, fulls in unit_params.items():
        plan.units.append(Unit(mod_name, modules[mod_name], _paths_in(modules[mod_name], fulls, name_of)))
    return plan


def _can_share(entry: RuleEntry) -> bool:
    """Whether the rule can give each use's per-sample gradients, to be summed before squaring."""
    return entry.grad_sample is not None or entry.call_grad_sample is not None


def _add_rule_module(
    plan: Plan, name: str, module: nn.Module, entry: RuleEntry, own: dict[str, str], owners: dict, placement: dict
) -> None:
    shared = any(len(owners[full]) > 1 or placement.get(full) == DEFER for full in own.values())
    if entry.output_rule is not None and not shared:
        plan.layers.append(Layer(name, module, entry, own))
    elif entry.call_grad_sample is not None:
        plan.units.append(Unit(name, module, own, entry.call_grad_sample))
    else:
        plan.layers.append(Layer(name, module, entry, own, deferred=shared))


def _paths_in(module: nn.Module, fulls: set[str], name_of: dict[int, str]) -> dict[str, str]:
    """Each parameter's path inside `module` (the first, when it is tied under several)."""
    paths: dict[str, str] = {}
    for path, p in module.named_parameters(remove_duplicate=False):
        full = name_of.get(id(p))
        if full in fulls and full not in paths.values():
            paths[path] = full
    missing = fulls - set(paths.values())
    if missing:
        raise RuntimeError(
            f"per-sample importance: {sorted(missing)} are used in {type(module).__name__} but do not belong to it"
        )
    return paths
