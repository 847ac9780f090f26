"""How often each parameter enters the autograd graph of one forward pass.

A rule squares one layer call's per-sample gradient. That is exact only when the
parameter reaches the loss through that one call: a parameter that is tied, reused by a
second call, or read outside its module's forward (nn.MultiheadAttention reads
out_proj.weight directly) needs vmap. Counting the graph edges into each
parameter's AccumulateGrad node tells these cases apart, for the price of one walk over
the graph, done on the first batch.
"""
from __future__ import annotations

from collections import Counter

import torch


def parameter_uses(output: torch.Tensor) -> Counter[int]:
    """id(parameter) -> number of graph edges into it, over the graph behind `output`."""
    uses: Counter[int] = Counter()
    if output.grad_fn is None:
        return uses
    seen = {output.grad_fn}
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            variable = getattr(child, "variable", None)  # AccumulateGrad: a leaf tensor
            if variable is not None:
                uses[id(variable)] += 1
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return uses
