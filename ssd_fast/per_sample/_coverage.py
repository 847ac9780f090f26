"""Where each parameter is used during one forward pass: which module's forward, how often.

A rule squares one layer call's per-sample gradient. That is exact only when the
parameter reaches the loss through that one call. The first batch's forward runs under
a torch function mode that sees every op: an op that consumes a parameter and gives a
result with a gradient is one use, made inside the innermost module whose forward is
running. From the uses:
- all inside the modules that own the parameter, once: a plain rule;
- all inside modules that own it, more than once (tied weights, a layer called twice):
  the rule's per-sample gradients of every use are summed before squaring;
- anywhere else (nn.MultiheadAttention reads out_proj.weight itself; a model multiplies
  by its embedding matrix): vmap over the smallest module whose forward holds every use.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves


class _UseTrace(TorchFunctionMode):
    def __init__(self, watched: dict[int, str], stack: list[str]):
        super().__init__()
        self.watched = watched
        self.stack = stack
        self.sites: dict[str, Counter[str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        used = [
            self.watched[id(a)]
            for a in tree_leaves((args, kwargs))
            if isinstance(a, torch.Tensor) and id(a) in self.watched
        ]
        if used and any(isinstance(r, torch.Tensor) and r.grad_fn is not None for r in tree_leaves(result)):
            site = self.stack[-1] if self.stack else ""
            for full in set(used):
                self.sites.setdefault(full, Counter())[site] += 1
        return result


@contextlib.contextmanager
def trace_uses(model: nn.Module, params: dict[str, nn.Parameter]) -> Iterator[dict[str, Counter[str]]]:
    """Yields {full name: Counter(module name -> uses)}, filled by the forward run inside."""
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: stack.append(name)))
        handles.append(module.register_forward_hook(lambda m, a, o: _pop(stack), always_call=True))
    mode = _UseTrace({id(p): n for n, p in params.items()}, stack)
    try:
        with mode:
            yield mode.sites
    finally:
        for h in handles:
            h.remove()


def _pop(stack: list[str]) -> None:
    stack.pop()  # a forward hook that returned the name would replace the module's output


def common_module(names: set[str]) -> str:
    """The deepest module whose name prefixes every name ('' is the model itself)."""
    paths = [n.split(".") if n else [] for n in names]
    common: list[str] = []
    for parts in zip(*paths):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(common)


def owners_of(model: nn.Module) -> dict[int, set[str]]:
    """id(parameter) -> names of every module that holds it directly."""
    owners: dict[int, set[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), set()).add(name)
    return owners
