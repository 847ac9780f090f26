"""Fisher Forgetting (Golatkar, Achille and Soatto, CVPR 2020), as the SSD paper ran it.

Source followed: `FisherForgetting` in the SSD authors' code
(github.com/if-loops/selective-synaptic-dampening, forget_*_strategies.py, itself
"From https://github.com/AdityaGolatkar/SelectiveForgetting"). Re-implemented, not copied.

1. Fisher diagonal on the retain set (`fisher_diagonal`): model in eval mode, batch size 1;
   for each sample x and for EVERY class y (not just the label): p = softmax(f(x)),
   backward CE(f(x), y), F += p_y * g**2. Finally F /= number of samples.
   Cost: N_retain forward passes and N_retain * n_classes backward passes.
2. Noise (`fisher_noise`), per parameter tensor, with alpha = 1e-6:
   - var = 1 / (F + 1e-8), clamped to at most 1e3 (1e2 for the classifier), times alpha;
     so var <= 1e-3 (1e-4 for the classifier) before the scaling below;
   - weights (ndim > 1): var is replaced by its mean over dim 1 (the input features /
     input channels), broadcast back to the full shape;
   - mu = the trained value; for the classifier (weight and bias), the row of the
     forgotten class gets mu = 0 and var = 1e-4 (class forgetting only);
   - var *= 10 for every 1-d tensor (BatchNorm, biases) and, in class forgetting, for the
     classifier weight too (the published subclass and random variants boost 1-d only);
   - theta = mu + sqrt(var) * N(0, 1).
Deviation, for robustness only: the published code finds "the classifier" as every tensor
whose first dimension equals the number of classes; we take the parameters of the last
nn.Linear with that many outputs (on SmallCNN and ResNet18 both pick the same tensors).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from ..._batches import eval_mode, model_device
from ..data.scenarios import Splits

ALPHA = 1e-6  # the published scale of the noise
VAR_CLAMP = 1e3  # before alpha: var <= 1e3 * alpha
CLASSIFIER_CLAMP = 1e2
FORGET_ROW_VAR = 1e-4
ONE_D_BOOST = 10.0  # 1-d tensors (and the head, in class forgetting) get ten times the variance


def capped_indices(n: int, max_samples: int | None, seed: int) -> torch.Tensor:
    """All of range(n) in order, or a seeded random `max_samples` of them (sorted)."""
    if max_samples is None or max_samples >= n:
        return torch.arange(n)
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_samples].sort().values


def fisher_diagonal(
    model: nn.Module,
    data: Dataset,
    *,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Step 1: the expected (over the model's own prediction) Fisher diagonal on `data`.

    Args:
        data: an indexable dataset of (x, y); y is not used (every class is visited).
        max_samples: use only this many samples (a seeded random subset) to bound the
            cost on a CPU; the result is still a mean, so it estimates the same thing.

    Returns:
        name -> fp32 tensor, for each parameter with requires_grad.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    indices = capped_indices(len(data), max_samples, seed)
    if len(indices) == 0:
        raise ValueError("the retain set is empty, so there is no Fisher information to estimate")
    device = model_device(model)
    steps = indices.tolist()
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="fisher (bs 1 x every class)", leave=False, unit="sample")
    with eval_mode(model), torch.enable_grad():
        for i in steps:
            _accumulate_sample(model, params, fisher, data[i][0].unsqueeze(0).to(device))
    for t in fisher.values():
        t.div_(len(indices))
    return fisher


def _accumulate_sample(
    model: nn.Module, params: dict[str, nn.Parameter], fisher: dict[str, torch.Tensor], x: torch.Tensor
) -> None:
    """F += sum over classes y of p_y * (grad CE(f(x), y))**2, for one sample."""
    logits = model(x)
    prob = torch.softmax(logits.detach().float(), dim=1)[0]
    names, tensors = list(params), list(params.values())
    for y in range(logits.shape[1]):
        loss = F.cross_entropy(logits, torch.tensor([y], device=x.device))
        grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
        for name, g in zip(names, grads):
            if g is not None:
                fisher[name].add_(g.float().square(), alpha=prob[y].item())


def classifier_names(model: nn.Module, num_classes: int) -> set[str]:
    """Parameter names of the last nn.Linear with `num_classes` outputs (empty if none)."""
    found = ""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = name
    if not found:
        return set()
    return {f"{found}.{n}" for n, _ in model.get_submodule(found).named_parameters()}


def noise_variance(
    fisher: torch.Tensor,
    *,
    is_classifier: bool,
    forget_class: int | None,
    alpha: float = ALPHA,
) -> torch.Tensor:
    """The published variance for one tensor, given its Fisher diagonal (see module doc)."""
    var = (1.0 / (fisher.float() + 1e-8)).clamp(max=VAR_CLAMP)
    if is_classifier:
        var = var.clamp(max=CLASSIFIER_CLAMP)
    var = alpha * var
    if var.dim() > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(fisher).clone()
    if is_classifier and forget_class is not None:
        var[forget_class] = FORGET_ROW_VAR
    if var.dim() == 1 or (is_classifier and forget_class is not None):
        var = var * ONE_D_BOOST
    return var


@torch.no_grad()
def fisher_noise(
    model: nn.Module,
    fisher: dict[str, torch.Tensor],
    *,
    num_classes: int,
    forget_class: int | None = None,
    alpha: float = ALPHA,
    seed: int = 0,
) -> nn.Module:
    """Step 2: a copy of `model` with theta = mu + sqrt(var) * N(0, 1) on every parameter.

    The draws come, in `named_parameters()` order, from a generator seeded with `seed`.
    """
    scrubbed = copy.deepcopy(model)
    head = classifier_names(scrubbed, num_classes)
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)
    for name, p in scrubbed.named_parameters():
        if name not in fisher:
            continue
        is_classifier = name in head
        var = noise_variance(fisher[name], is_classifier=is_classifier, forget_class=forget_class, alpha=alpha)
        mu = p.detach().float().clone()
        if is_classifier and forget_class is not None:
            mu[forget_class] = 0.0
        draw = torch.randn(p.shape, generator=generator, device=p.device, dtype=torch.float32)
        p.copy_(mu + var.sqrt() * draw)
    return scrubbed


def fisher_forgetting(
    model: nn.Module,
    splits: Splits,
    *,
    alpha: float = ALPHA,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Fisher Forgetting on `splits`: Fisher diagonal on the retain set, then noise.

    Returns a new model; `model` is untouched. With `max_samples`, only that many retain
    samples enter the Fisher estimate (time it and extrapolate; see ssd_fast.eval.bench).
    """
    fisher = fisher_diagonal(model, splits.retain, max_samples=max_samples, seed=seed, progress=progress)
    return fisher_noise(
        model, fisher, num_classes=splits.num_classes, forget_class=splits.forget_class, alpha=alpha, seed=seed
    )
