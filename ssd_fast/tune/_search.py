"""`ssd_fast.tune`: choose alpha (and lambda) for one deletion request automatically.

SSD's weak point is alpha: on Fashion-MNIST the right value ranges from 3 to 100 per
class (measured with benchmarks/tune_fashion_mnist.py). Dampening costs microseconds to
milliseconds, so a search is cheap once the two importances exist: prepare one
`Dampener` (validated and paired once, with a snapshot), then for each trial restore,
apply, and score on small evaluation subsets taken
from the training data. The test set is never needed.

    result = ssd_fast.tune(model, forget_imp, full_imp, forget_eval=forget_sub, retain_eval=retain_sub)
    result.alpha, result.lam, result.satisfied, len(result.trials)

A trial is accepted when its forget accuracy is at most the target's bound (see
`_target.py` for the proxies used when no retrained model exists) and its retain
accuracy is at most `max_retain_drop` below the original model's. Among accepted
trials the one whose forget accuracy is closest to the target's aim wins (within
`tolerance`), then the one with the best retain accuracy, then the larger alpha
(fewer parameters changed).

When no accepted trial with every layer dampened comes within `tolerance` of the aim,
the search runs again with only the later layers dampened, from each of a few weight
layers onwards, shallowest first, and stops at the first start that does; the choice
is then made over every trial (`_layer_starts.py` says why). The chance bound alone is
loose: on Fashion-MNIST it accepted Bag at 8.5% forget accuracy with every layer, where
dampening from the second conv on reached 0%.

With `mia=MiaTarget(...)`, each accepted trial is also scored by the paper's
membership-inference attack, and among the trials tied on the forget aim the one whose
score is closest to the MIA aim wins (`_mia.py` says why).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import _checks
from .._batches import Unpack, model_device
from ..auto_alpha import resolve_auto_alpha
from ..dampen import Dampener, ImportanceSource, prepare
from ..importances import Importances
from ..report import DampenReport
from ._alpha_grid import bisection_points, default_alphas
from ._evaluation import EvalSet
from ._layer_starts import layer_starts
from ._mia import MiaScorer, MiaTarget
from ._target import ForgetTarget, resolve_target


@dataclass(frozen=True)
class Trial:
    """One (alpha, lambda) tried: its scores on the evaluation subsets."""

    alpha: float
    lam: float
    selected: int
    forget_acc: float
    retain_acc: float
    meets_forget: bool
    meets_retain: bool
    reused: bool  # same lambda and selected count as an earlier trial: same model, scores reused
    first_layer: str | None = None  # dampened only from this parameter on; None: every layer
    mia: float | None = None  # the MIA score, for accepted trials when tune was given `mia`

    # A trial that fails a constraint may stop scoring early (see _Search._score): its
    # accuracies are then estimates from the part of the evaluation set scored.

    @property
    def accepted(self) -> bool:
        return self.meets_forget and self.meets_retain


@dataclass(frozen=True)
class TuneResult:
    """What `tune` chose, why, and every trial it ran. The model is left dampened with the choice.

    `alpha` and `lam` are None when no trial kept retain accuracy; the model is then
    left unchanged. `satisfied` says whether the choice met both the forget target
    and the retain constraint; when False the choice is the best effort (closest to the
    target while keeping retain accuracy). `first_layer` is None when every layer was
    dampened, else the parameter from which on (in `named_parameters()` order) it was.
    """

    alpha: float | None
    lam: float | None
    satisfied: bool
    forget_acc: float
    retain_acc: float
    original_forget_acc: float
    original_retain_acc: float
    target: ForgetTarget
    max_retain_drop: float
    seconds: float
    trials: tuple[Trial, ...] = field(repr=False)
    report: DampenReport | None = field(default=None, repr=False)
    first_layer: str | None = None
    # Seconds of the search spent restoring, applying (kernel included) and scoring.
    timing: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    mia: float | None = None  # the choice's MIA score, when tune was given `mia`
    mia_aim: float | None = None

    @property
    def trials_per_second(self) -> float:
        return len(self.trials) / self.seconds if self.seconds > 0 else math.inf

    def __str__(self) -> str:
        chosen = "none (model unchanged)" if self.alpha is None else f"alpha={self.alpha:.4g}, lambda={self.lam:g}"
        if self.alpha is not None and self.first_layer is not None:
            chosen += f", only from {self.first_layer} on"
        return (
            f"SSD tune: {chosen}; {'target met' if self.satisfied else 'TARGET NOT MET'}\n"
            f"  forget acc {self.original_forget_acc:.3f} -> {self.forget_acc:.3f} "
            f"(aim {self.target.aim:.3f}, at most {self.target.bound:.3f}: {self.target.source})\n"
            f"  retain acc {self.original_retain_acc:.3f} -> {self.retain_acc:.3f} (drop at most {self.max_retain_drop:.3f})\n"
            + (
                f"  MIA {self.mia:.3f} (aim {self.mia_aim:.3f})\n"
                if self.mia is not None and self.mia_aim is not None
                else ""
            )
            + f"  {len(self.trials)} trials in {self.seconds:.2f} s ({self.trials_per_second:.1f}/s)"
        )


class _Search:
    """Runs trials on the model: restore, dampen, score; remembers every outcome."""

    def __init__(
        self, model, dampener: Dampener, forget_set, retain_set, target, retain_floor, first_layer=None, mia=None
    ):
        self.model, self.dampener, self.first_layer, self.mia = model, dampener, first_layer, mia
        self.forget_set, self.retain_set = forget_set, retain_set
        self.target, self.retain_floor = target, retain_floor
        self.timing = {"apply": 0.0, "restore": 0.0, "score": 0.0}  # seconds, for benchmarks
        self.trials: list[Trial] = []
        self._scores: dict[tuple[float, int], tuple[float, float]] = {}
        self._mia: dict[tuple[float, int], float] = {}

    def tried(self, alpha: float, lam: float) -> bool:
        return any(t.lam == lam and math.isclose(t.alpha, alpha, rel_tol=1e-9) for t in self.trials)

    def run(self, alpha: float, lam: float) -> Trial:
        t0 = time.perf_counter()
        self.dampener.restore()
        t1 = time.perf_counter()
        report = self.dampener.apply(alpha, lam)
        # For one lambda the selected sets are nested in alpha, so an equal count means an
        # identical set and an identical model: its scores are already known.
        key = (lam if report.selected else 0.0, report.selected)  # reading the counts waits for the kernel
        t2 = time.perf_counter()
        reused = key in self._scores
        if not reused:
            self._scores[key] = self._score()
        forget_acc, retain_acc, meets_forget, meets_retain = self._scores[key]
        if self.mia is not None and meets_forget and meets_retain and key not in self._mia:
            self._mia[key] = self.mia.score(self.model)  # only where the choice may fall: it costs forwards
        self.timing["restore"] += t1 - t0
        self.timing["apply"] += t2 - t1
        self.timing["score"] += time.perf_counter() - t2
        trial = Trial(
            alpha,
            lam,
            report.selected,
            forget_acc,
            retain_acc,
            meets_forget,
            meets_retain,
            reused,
            self.first_layer,
            self._mia.get(key),
        )
        self.trials.append(trial)
        return trial

    def _score(self) -> tuple[float, float, bool, bool]:
        """Scores the model as it is now. Each set stops early once its constraint has
        certainly failed; a failed trial's accuracy is then an estimate from the part scored."""
        eps = 1e-9
        forget_acc, forget_done = self.forget_set.score(
            self.model, max_correct=self.target.bound * self.forget_set.size + eps
        )
        retain_acc, retain_done = self.retain_set.score(
            self.model, max_wrong=(1.0 - self.retain_floor) * self.retain_set.size + eps
        )
        meets_forget = forget_done and forget_acc <= self.target.bound + eps
        meets_retain = retain_done and retain_acc >= self.retain_floor - eps
        return forget_acc, retain_acc, meets_forget, meets_retain


def _nearest(trials: Sequence[Trial], distance, tolerance: float) -> list[Trial]:
    """The trials within `tolerance` of the smallest distance."""
    best = min(distance(t) for t in trials)
    return [t for t in trials if distance(t) <= best + tolerance]


def _choose(
    trials: Sequence[Trial], target: ForgetTarget, tolerance: float, mia_aim: float | None = None
) -> tuple[Trial | None, bool]:
    """The accepted trial closest to the aim (then closest to the MIA aim, when given, then
    best retain, then larger alpha), or a best effort."""

    def distance(t: Trial) -> float:
        return abs(t.forget_acc - target.aim)

    accepted = [t for t in trials if t.accepted]
    if accepted:
        close = _nearest(accepted, distance, tolerance)
        if mia_aim is not None:
            close = _nearest(close, lambda t: abs(t.mia - mia_aim), tolerance)
        return max(close, key=lambda t: (t.retain_acc, t.alpha)), True
    keeping = [t for t in trials if t.meets_retain and t.selected]
    if keeping:
        return min(keeping, key=lambda t: (distance(t), -t.retain_acc, -t.alpha)), False
    return None, False


def _reached_aim(trials: Sequence[Trial], target: ForgetTarget, tolerance: float) -> bool:
    return any(t.accepted and abs(t.forget_acc - target.aim) <= tolerance for t in trials)


def _largest_ratio(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """max f/d over elements with d > 0: every alpha at or above it selects the same set
    (only the d == 0 elements), so one such alpha stands for all of them."""
    largest = 0.0
    for f, d in pairs:
        ratio = f / d
        finite = ratio[torch.isfinite(ratio)]
        if finite.numel():
            largest = max(largest, float(finite.max()))
    return largest


def _candidate_alphas(
    alphas: Sequence[float] | None,
    include_auto: bool,
    forget_imp: Importances | None,
    full_imp: Importances | None,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> list[float]:
    """The alpha grid for one stage; `pairs` are the (forget, full) tensors it dampens."""
    grid = list(alphas) if alphas is not None else default_alphas()
    if include_auto:
        try:  # ASSD's alpha as one more candidate, when the sample counts are known
            grid.append(resolve_auto_alpha(forget_imp, full_imp, pairs))
        except (TypeError, ValueError):
            pass
    grid = sorted(set(grid))
    ceiling = _largest_ratio(pairs)
    above = [a for a in grid if a >= ceiling]
    return [a for a in grid if a < ceiling] + above[:1]


def tune(
    model: nn.Module,
    forget: ImportanceSource,
    full: ImportanceSource,
    *,
    forget_eval: Iterable,
    retain_eval: Iterable,
    target_forget_acc: float | None = None,
    max_retain_drop: float = 0.02,
    alphas: Sequence[float] | None = None,
    lams: Sequence[float] = (1.0, 0.1, 0.01),
    refine_steps: int = 6,
    max_trials: int = 200,
    unseen_eval: Iterable | None = None,
    retrained: nn.Module | None = None,
    full_class: bool | None = None,
    tolerance: float = 0.01,
    eval_limit: int | None = 2000,
    include_auto: bool = True,
    layer_fallback: bool = True,
    mia: MiaTarget | None = None,
    unpack: Unpack | None = None,
    backend: str = "auto",
) -> TuneResult:
    """Search alpha (and lambda) for SSD with importances computed once; leave the model dampened.

    Args:
        model: the trained model, modified in place: on return it is dampened with the
            chosen setting (or unchanged when nothing kept retain accuracy).
        forget, full: importances on Df and D (Importances or dicts), or data to compute
            them from, once, with `ssd_fast.importance`.
        forget_eval, retain_eval: small evaluation subsets (iterables of (x, y) batches)
            of the forget and retain data, taken from the training data, never the test
            set. Best held out of training (`ssd_fast.eval.data.split_validation`): retain
            images the model memorised lose accuracy under dampening faster than
            unseen ones, so scoring on them rejects settings that are fine.
        target_forget_acc: the largest acceptable forget accuracy. The default aims at
            what a model retrained without Df would score, through a proxy when no
            retrained model is given: full-class forgetting (no forget label occurs in
            retain_eval) aims at 0 and accepts at most chance, 1/num_classes; other
            forgetting aims at the original model's accuracy on `unseen_eval` and
            accepts up to `tolerance` above it.
        max_retain_drop: the most retain accuracy may fall below the original model's (a fraction).
        alphas: the alpha grid; default 22 log-spaced values from 0.1 to 300. Alphas
            below 1 matter: some classes (Bag on Fashion-MNIST) are forgotten only
            when parameters barely more important to Df than to D are dampened too.
        lams: the lambdas to try; (1.0,) searches alpha only. Small lambdas dampen the
            selected parameters harder (each is scaled by min(lambda * d / f, 1)).
        refine_steps: rounds of log-bisection where neighbouring outcomes flip; 6 rounds
            split a grid step (x1.47) to about 0.6%, enough to land between the cliffs
            where forget or retain accuracy jumps.
        max_trials: a cap on trials per layer start (every layer, then each fallback start).
        unseen_eval: held-out data of the forget distribution (not the test set), for
            forgetting that is not a whole class.
        retrained: a model trained without Df, when one exists: its forget accuracy is the aim.
        full_class: whether Df is whole classes; detected from the labels when None.
        tolerance: forget accuracies this close count as equally good.
        eval_limit: at most this many samples are kept from each evaluation set.
        include_auto: also try ASSD's alpha (`alpha="auto"`) when the counts are known.
        layer_fallback: when no accepted trial dampening every layer comes within
            `tolerance` of the aim, search again dampening only from a later weight
            layer on (up to 4 starts, shallowest first, stopping at the first that
            does; see `_layer_starts.py`). False searches every layer only.
        mia: an `ssd_fast.MiaTarget`: score each accepted trial with the paper's
            membership-inference attack too, and among the trials tied on the forget aim
            prefer the one whose score is closest to `mia.aim` (or, with aim None, to the
            `retrained` model's score). Costs forward passes over its sets per accepted
            trial. Without it the choice ignores the MIA.
        unpack: maps an evaluation batch to (inputs, labels).
        backend: passed to `ssd_fast.dampen`.

    Returns:
        TuneResult with the choice, its scores, the target, and every trial.

    Raises:
        TypeError, ValueError, RuntimeError: on bad input, before the model changes.
    """
    _checks.module(model)
    if alphas is not None:
        alphas = _checks.finite_numbers(alphas, "alphas", positive=True)
    lams = _checks.finite_numbers(lams, "lams", positive=False)
    for value, name in (
        (target_forget_acc, "target_forget_acc"),
        (max_retain_drop, "max_retain_drop"),
        (tolerance, "tolerance"),
    ):
        _checks.fraction(value, name)
    _checks.count(refine_steps, "refine_steps", minimum=0)
    _checks.count(max_trials, "max_trials", minimum=1)
    _checks.count(eval_limit, "eval_limit", minimum=1)
    _checks.flag(layer_fallback, "layer_fallback")
    _checks.flag(full_class, "full_class", optional=True)
    if retrained is not None:
        _checks.module(retrained, "retrained")

    dampener = prepare(model, forget, full, backend=backend)  # validates and pairs, once
    forget_imp, full_imp = dampener.forget, dampener.full

    device = model_device(model)
    forget_set = EvalSet(forget_eval, "forget_eval", device, limit=eval_limit, unpack=unpack)
    retain_set = EvalSet(retain_eval, "retain_eval", device, limit=eval_limit, unpack=unpack)
    unseen_set = (
        EvalSet(unseen_eval, "unseen_eval", device, limit=eval_limit, unpack=unpack)
        if unseen_eval is not None
        else None
    )
    mia_scorer = None if mia is None else MiaScorer(mia, retain_set, device, eval_limit, unpack)
    mia_aim = None if mia_scorer is None else mia_scorer.resolve_aim(retrained)
    target = resolve_target(
        model,
        forget_set,
        retain_set,
        target_forget_acc=target_forget_acc,
        unseen_eval=unseen_set,
        retrained=retrained,
        full_class=full_class,
        tolerance=tolerance,
    )
    original_forget, original_retain = forget_set.accuracy(model), retain_set.accuracy(model)
    candidates = _candidate_alphas(alphas, include_auto, forget_imp, full_imp, dampener.importance_pairs())

    dampener.take_snapshot(alpha_min=min(candidates))  # only tensors some candidate can change
    starts = [None] + (layer_starts(model, forget_imp) if layer_fallback else [])
    trials: list[Trial] = []
    timing = {"apply": 0.0, "restore": 0.0, "score": 0.0}
    start_time = time.perf_counter()
    try:
        for first_layer in starts:
            stage = dampener if first_layer is None else dampener.only_from(first_layer)
            stage_alphas = (
                candidates
                if first_layer is None
                else _candidate_alphas(alphas, False, None, None, stage.importance_pairs())
            )
            search = _Search(
                model, stage, forget_set, retain_set, target, original_retain - max_retain_drop, first_layer, mia_scorer
            )
            try:
                _run_search(search, stage_alphas, lams, refine_steps, max_trials)
            finally:
                for key, value in search.timing.items():
                    timing[key] += value
            trials += search.trials
            if _reached_aim(search.trials, target, tolerance):
                break
    finally:
        dampener.restore()  # whatever happened, the model is the original again here
    seconds = time.perf_counter() - start_time

    choice, satisfied = _choose(trials, target, tolerance, mia_aim)
    report = None
    if choice is not None:
        chosen = dampener if choice.first_layer is None else dampener.only_from(choice.first_layer)
        report = chosen.apply(choice.alpha, choice.lam)
    if not satisfied:
        warnings.warn(
            "ssd_fast.tune: no trial met both the forget target and the retain constraint; "
            + ("the model is left unchanged" if choice is None else "the model is dampened with the best effort")
            + (
                ". Importances of the loss are near zero where the model is confidently right; "
                "label-free ones (ssd_fast.importance(..., label_free=True), for both sets) may reach the target"
                if not getattr(forget_imp, "label_free", False)
                else ""
            ),
            RuntimeWarning,
            stacklevel=2,
        )
    return TuneResult(
        alpha=None if choice is None else choice.alpha,
        lam=None if choice is None else choice.lam,
        satisfied=satisfied,
        forget_acc=original_forget if choice is None else choice.forget_acc,
        retain_acc=original_retain if choice is None else choice.retain_acc,
        original_forget_acc=original_forget,
        original_retain_acc=original_retain,
        target=target,
        max_retain_drop=max_retain_drop,
        seconds=seconds,
        trials=tuple(trials),
        report=report,
        first_layer=None if choice is None else choice.first_layer,
        timing=timing,
        mia=None if choice is None else choice.mia,
        mia_aim=mia_aim,
    )


def _run_search(search: _Search, alphas: list[float], lams: list[float], refine_steps: int, max_trials: int) -> None:
    """The grid for every lambda, then rounds of bisection where outcomes flip."""
    for lam in lams:
        for alpha in alphas:
            if len(search.trials) >= max_trials:
                return
            search.run(alpha, lam)
    for _ in range(refine_steps):
        points = [(a, lam) for lam in lams for a in bisection_points(search.trials, lam) if not search.tried(a, lam)]
        if not points:
            return
        for alpha, lam in points:
            if len(search.trials) >= max_trials:
                return
            search.run(alpha, lam)
