"""A membership-inference aim for `tune`: make the forget set look to an attacker as it
would after retraining.

The attack is the one the SSD paper reports (after Chundawat et al. 2023): a logistic
regression on one feature, the entropy of the model's softmax output, fitted with
members (trained-on retain images, label 1) against non-members (unseen images, label 0)
with balanced class weights; the MIA score is the fraction of the forget set it calls
members. Dampening that drives forget accuracy to 0 can leave the forget outputs nearly
uniform (high entropy), so the score falls far below a retrained model's (0.5% against
19% on the benchmark's CNN): the forget set then looks less like training data than
unseen data does, which an auditor can notice. Among the trials that already meet the
forget and retain bars, tune can prefer the one whose score is closest to an aim.

The fit is Newton's method in float64 on the objective scikit-learn's default
`LogisticRegression(class_weight="balanced")` minimises (L2 penalty 1/2 w^2 on the slope
only, C = 1), so the core needs no scikit-learn; tests compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .. import _checks
from .._batches import Unpack, call_model, eval_mode
from ._evaluation import EvalSet


@dataclass(frozen=True)
class MiaTarget:
    """What tune's membership-inference aim is measured on, and the score to aim for.

    Attributes:
        members: trained-on images of the retain data (iterable of (x, y) batches): the
            attack's members.
        forget: the forget set's own trained-on images: the score is the fraction of
            them the attack calls members.
        aim: the score to aim for, in [0, 1], e.g. what a model retrained without the
            forget set scores. None takes it from `tune(retrained=...)`.
        nonmembers: images the model never trained on (the attack's non-members); None
            uses tune's `retain_eval`, which must then be held out of training.
    """

    members: Iterable
    forget: Iterable
    aim: float | None = None
    nonmembers: Iterable | None = None


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per row, in nats, in float64; 0 * log 0 counts as 0."""
    log_p = torch.log_softmax(logits.double(), dim=1)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(1)


@torch.no_grad()
def output_entropies(model: nn.Module, evalset: EvalSet) -> torch.Tensor:
    """The entropy of the model's output for every sample of `evalset`, on the CPU."""
    with eval_mode(model):
        return torch.cat([entropy(call_model(model, x)).cpu() for x, _ in evalset.batches])


def fit_attack(member: torch.Tensor, nonmember: torch.Tensor, *, iterations: int = 100) -> tuple[float, float]:
    """(slope, intercept) of the balanced, L2-penalised 1-D logistic regression (see module doc)."""
    x = torch.cat([member, nonmember]).double()
    t = torch.cat([torch.ones(len(member)), torch.zeros(len(nonmember))]).double()
    # Balanced weights: n / (2 * class count), as scikit-learn's class_weight="balanced".
    s = torch.where(t > 0, len(x) / (2.0 * len(member)), len(x) / (2.0 * len(nonmember))).double()
    theta = torch.zeros(2, dtype=torch.float64)  # slope, intercept
    features = torch.stack([x, torch.ones_like(x)], dim=1)
    penalty = torch.tensor([1.0, 0.0], dtype=torch.float64)  # the intercept is not penalised

    def loss(th: torch.Tensor) -> torch.Tensor:
        z = features @ th
        return 0.5 * th[0] ** 2 + (s * (torch.nn.functional.softplus(z) - t * z)).sum()

    for _ in range(iterations):
        p = torch.sigmoid(features @ theta)
        grad = penalty * theta + features.T @ (s * (p - t))
        hess = torch.diag(penalty) + (features * (s * p * (1 - p))[:, None]).T @ features
        step = torch.linalg.solve(hess, grad)
        current, scale = loss(theta), 1.0
        while scale > 1e-10 and loss(theta - scale * step) > current:  # backtrack: never go uphill
            scale /= 2
        theta = theta - scale * step
        if float(grad.abs().max()) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def member_rate(member: torch.Tensor, nonmember: torch.Tensor, target: torch.Tensor) -> float:
    """The attack fitted on member/non-member entropies: the fraction of `target` it calls members."""
    if len(member) == 0 or len(nonmember) == 0:
        raise ValueError("the MIA needs at least one member and one non-member sample")
    slope, intercept = fit_attack(member, nonmember)
    return float((slope * target.double() + intercept > 0).double().mean())


class MiaScorer:
    """The MIA of the model as it is now, on evaluation sets held once on the model's device."""

    def __init__(
        self, target: MiaTarget, retain_set: EvalSet, device: torch.device, limit: int | None, unpack: Unpack | None
    ):
        if not isinstance(target, MiaTarget):
            raise TypeError(f"mia must be an ssd_fast.MiaTarget, got {type(target).__name__}")
        if target.aim is not None:
            _checks.fraction(target.aim, "mia.aim")
        self.members = EvalSet(target.members, "mia.members", device, limit=limit, unpack=unpack)
        self.forget = EvalSet(target.forget, "mia.forget", device, limit=limit, unpack=unpack)
        self.nonmembers = (
            retain_set
            if target.nonmembers is None
            else EvalSet(target.nonmembers, "mia.nonmembers", device, limit=limit, unpack=unpack)
        )
        self.aim = target.aim

    def score(self, model: nn.Module) -> float:
        member, nonmember, forget = (output_entropies(model, s) for s in (self.members, self.nonmembers, self.forget))
        return member_rate(member, nonmember, forget)

    def resolve_aim(self, retrained: nn.Module | None) -> float:
        if self.aim is not None:
            return self.aim
        if retrained is None:
            raise ValueError(
                "MiaTarget(aim=None) takes its aim from a retrained model: pass tune(retrained=...) "
                "or give MiaTarget an aim"
            )
        return self.score(retrained)
