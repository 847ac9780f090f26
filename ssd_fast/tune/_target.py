"""What forget accuracy `tune` aims for, when no retrained model is at hand.

The ideal is the forget accuracy a model retrained without Df would have. Proxies:
- Full-class forgetting (no label of the forget set occurs in the retain set): a
  retrained model never learnt the class, so it aims at 0 and accepts at most chance
  (1 / number of classes), or `target_forget_acc` when given.
- Otherwise (random samples, sub-classes): a retrained model treats Df like unseen
  data of the same distribution, so it aims at the original model's accuracy on
  `unseen_eval` (held-out data of the forget distribution, not the test set) and
  accepts up to `tolerance` above it. `target_forget_acc` may be given instead.
- With `retrained` (a model trained without Df): aim at its accuracy on `forget_eval`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ._evaluation import EvalSet


@dataclass(frozen=True)
class ForgetTarget:
    """Aim for forget accuracy `aim`; accept a trial only when forget accuracy <= `bound`."""

    aim: float
    bound: float
    source: str


def resolve_target(
    model: nn.Module,
    forget_eval: EvalSet,
    retain_eval: EvalSet,
    *,
    target_forget_acc: float | None,
    unseen_eval: EvalSet | None,
    retrained: nn.Module | None,
    full_class: bool | None,
    tolerance: float,
) -> ForgetTarget:
    if full_class is None:
        full_class = not (forget_eval.labels() & retain_eval.labels())
    if retrained is not None:
        aim = forget_eval.accuracy(retrained)
        bound = target_forget_acc if target_forget_acc is not None else aim + tolerance
        return ForgetTarget(aim, bound, "retrained model's accuracy on forget_eval")
    if full_class:
        if target_forget_acc is not None:
            return ForgetTarget(0.0, target_forget_acc, "full class: aim 0, at most target_forget_acc")
        chance = 1.0 / forget_eval.num_outputs(model)
        return ForgetTarget(0.0, chance, "full class: aim 0, at most chance (1/num_classes)")
    if target_forget_acc is not None:
        return ForgetTarget(target_forget_acc, target_forget_acc + tolerance, "target_forget_acc")
    if unseen_eval is None:
        raise ValueError(
            "forget_eval shares labels with retain_eval, so this is not full-class forgetting and "
            "chance is no target: pass target_forget_acc, unseen_eval (held-out data of the forget "
            "distribution) or retrained, or full_class=True if it is full-class forgetting"
        )
    aim = unseen_eval.accuracy(model)
    return ForgetTarget(aim, aim + tolerance, "original model's accuracy on unseen_eval")
