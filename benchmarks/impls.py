"""The select-and-dampen and accumulation implementations the benchmarks compare.

- published: the original code's loop (torch.where indices, index and index-put per tensor);
- reference: ssd_fast.reference, a torch.where loop;
- foreach: torch._foreach_* arithmetic with one masked select per tensor;
- compiled: torch.compile of the reference loop;
- ssd_fast: the fused kernel (the raw op, and the public dampen() with its validation).
"""

from __future__ import annotations

import torch

from ssd_fast import _ops, reference


@torch.no_grad()
def published_dampen(params, forget, full, alpha, lam):
    for p, f, d in zip(params, forget, full):
        locations = torch.where(f > d.mul(alpha))
        weight = d.mul(lam).div(f)
        update = weight[locations]
        update[torch.where(update > 1)] = 1
        p[locations] = p[locations].mul(update)


@torch.no_grad()
def reference_dampen(params, forget, full, alpha, lam):
    for p, f, d in zip(params, forget, full):
        reference.dampen_tensor_(p, f, d, alpha=alpha, lam=lam)


@torch.no_grad()
def foreach_dampen(params, forget, full, alpha, lam):
    thresholds = torch._foreach_mul(full, alpha)
    beta = torch._foreach_div(torch._foreach_mul(full, lam), forget)
    torch._foreach_clamp_max_(beta, 1.0)
    factors = [torch.where(f > t, b, 1.0) for f, t, b in zip(forget, thresholds, beta)]
    torch._foreach_mul_(params, factors)


def _where_loop(params, forget, full, alpha: float, lam: float):
    for p, f, d in zip(params, forget, full):
        p.copy_(torch.where(f > alpha * d, p * torch.clamp(lam * d / f, max=1.0), p))


_compiled = None


@torch.no_grad()
def compiled_dampen(params, forget, full, alpha, lam):
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_where_loop, dynamic=False)
    _compiled(params, forget, full, alpha, lam)


@torch.no_grad()
def ssd_fast_dampen(params, forget, full, alpha, lam):
    selected = torch.zeros(len(params), dtype=torch.int64, device=params[0].device)
    _ops.select_dampen_(params, forget, full, alpha, lam, selected)


DAMPEN = {
    "published": published_dampen,
    "reference": reference_dampen,
    "foreach": foreach_dampen,
    "torch.compile": compiled_dampen,
    "ssd_fast": ssd_fast_dampen,
}


@torch.no_grad()
def reference_accumulate(imps, grads):
    for i, g in zip(imps, grads):
        i += g.float().pow(2)


@torch.no_grad()
def published_accumulate(imps, grads):
    for i, g in zip(imps, grads):
        i.data += g.data.clone().pow(2)


@torch.no_grad()
def foreach_accumulate(imps, grads):
    torch._foreach_addcmul_(imps, grads, grads)


@torch.no_grad()
def ssd_fast_accumulate(imps, grads):
    _ops.sq_accumulate_(imps, grads, 1.0, False)


ACCUMULATE = {
    "published": published_accumulate,
    "reference": reference_accumulate,
    "foreach": foreach_accumulate,
    "ssd_fast": ssd_fast_accumulate,
}
