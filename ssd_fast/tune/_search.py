"""`ssd_fast.tune`: choose alpha (and lambda) for one deletion request automatically.

SSD's weak point is alpha: on Fashion-MNIST the right value ranges from 3 to 100 per
class (measured with benchmarks/tune_fashion_mnist.py). Dampening costs microseconds to
milliseconds, so nearly all of a search's time is the model's forward passes over the
evaluation sets. The search therefore asks as few questions as it can, and answers each
with as few samples as the answer needs:

    result = ssd_fast.tune(model, forget_imp, full_imp, forget_eval=forget_sub, retain_eval=retain_sub)
    result.alpha, result.lam, result.satisfied, len(result.trials), result.samples_scored

- **Where to look.** Raising alpha only shrinks the selected set (f > alpha * d), so
  forget and retain accuracy grow (nearly) monotonically with alpha for one lambda. The
  grid is the alphas where the selected set changes, one per 5% of selected count, from
  one sort of f/d (`_alpha_grid.py`). Per lambda, every eighth grid alpha is asked, from
  the largest down, until one reaches the aim (forget accuracy within `tolerance`), and
  bisection between it and the one above finds the largest alpha that does: among the
  settings reaching the aim, it keeps the most retain accuracy. One question on the
  retain set then says whether it keeps enough; if so it is scored on the whole sets and
  becomes a finalist. Settings that reach the aim are the costly ones to confirm (nearly
  the whole forget set), so smaller alphas are not asked.
- **How much to score.** Each question ("is forget accuracy at most x?", "is retain
  accuracy at least y?") is answered from a growing prefix of the set in a fixed random
  order, as soon as an exact bound decides it (`_bounds.py`). The per-search error rate
  `error_rate` (default 1%) is split evenly, by the union bound, over every question the
  search could ask (4 per setting of every stage's grid and lambda) and every early look
  (the prefixes of 32, 64, 128, ... samples): with probability at least 1 - error_rate,
  every answer equals the one the whole sets would give. The finalists, the choice
  among them included, are scored on the whole sets, and the result reports those.
- **Nothing twice.** Every tally and answer is kept per distinct model: a setting that
  selects the same set as an earlier one (same stage, lambda and count) reuses it
  (`_trials.py`). Leading modules that a trial leaves untouched are replayed from kept
  outputs (`_activation_cache.py`).

A trial is accepted when its forget accuracy is at most the target's bound (see
`_target.py` for the proxies used when no retrained model exists) and its retain
accuracy is at most `max_retain_drop` below the original model's. Among the accepted
finalists the ones within `tolerance` of the target's aim win (else those nearest it),
then the one with the best retain accuracy, then the larger alpha (fewer parameters changed).

When no finalist with every layer dampened reaches the aim, the search runs again with
only the later layers dampened, from each of a few weight layers onwards, shallowest
first, and stops at the first start that does (`_layer_starts.py` says why). When no
stage does, the best effort per stage and lambda is the smallest coarse alpha that keeps
retain accuracy, looked for from the smallest alpha up (where "no" is cheap), and the best
of those is refined by bisection to the grid alpha where retain accuracy turns. The
chance bound alone is loose: on Fashion-MNIST it accepted Bag at 8.5% forget accuracy
with every layer, where dampening from the second conv on reached 0%.

With `mia=MiaTarget(...)`, each accepted finalist is also scored by the paper's
membership-inference attack, and among the finalists tied on the forget aim the one whose
score is closest to the MIA aim wins (`_mia.py` says why).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

from .. import _checks
from .._batches import Unpack, model_device
from ..auto_alpha import resolve_auto_alpha
from ..dampen import Dampener, ImportanceSource, prepare
from ..report import DampenReport
from ._activation_cache import ActivationCache
from ._alpha_grid import given_alphas, selection_alphas
from ._bounds import risk_per_look
from ._evaluation import EvalSet
from ._layer_starts import layer_starts
from ._metric import Metric, Scoring
from ._mia import MiaScorer, MiaTarget
from ._target import ForgetTarget, resolve_target
from ._trials import EPS, Question, Setting, TrialRunner


@dataclass(frozen=True)
class Trial:
    """One (alpha, lambda) tried, and what it answered.

    `forget_acc` and `retain_acc` are over the samples scored (`forget_samples`,
    `retain_samples`; NaN where none were): the whole sets when `whole` is True, else a
    prefix, enough to answer the trial's question. `meets_forget` / `meets_retain` are
    None where that question was not asked.
    """

    alpha: float
    lam: float
    selected: int
    forget_acc: float
    retain_acc: float
    meets_forget: bool | None
    meets_retain: bool | None
    reused: bool  # the same model as an earlier trial (same stage, lambda and count): answers reused
    first_layer: str | None = None  # dampened only from this parameter on; None: every layer
    mia: float | None = None  # the MIA score, for accepted finalists when tune was given `mia`
    forget_samples: int = 0
    retain_samples: int = 0
    whole: bool = False  # scored on the whole sets: a finalist

    @property
    def accepted(self) -> bool:
        return bool(self.meets_forget) and bool(self.meets_retain)


@dataclass(frozen=True)
class TuneResult:
    """What `tune` chose, why, and every trial it ran. The model is left dampened with the choice.

    `alpha` and `lam` are None when no trial kept retain accuracy; the model is then
    left unchanged. `satisfied` says whether the choice met both the forget target
    and the retain constraint; when False the choice is the best effort (closest to the
    target while keeping retain accuracy). `first_layer` is None when every layer was
    dampened, else the parameter from which on (in `named_parameters()` order) it was.
    The accuracies are on the whole evaluation sets. `samples_scored` counts every sample
    put through the model for a trial (the original model's whole-set scores included);
    `cached_batches` the batches whose leading modules were replayed from kept outputs.
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
    samples_scored: int = 0
    error_rate: float = 0.01
    cached_batches: int = 0

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
            + f"  {len(self.trials)} trials, {self.samples_scored} samples scored, in {self.seconds:.2f} s"
        )


def _nearest(trials: Sequence[Trial], distance, tolerance: float) -> list[Trial]:
    """The trials within `tolerance` of the smallest distance."""
    best = min(distance(t) for t in trials)
    return [t for t in trials if distance(t) <= best + tolerance]


def _choose(
    trials: Sequence[Trial], target: ForgetTarget, tolerance: float, mia_aim: float | None = None
) -> tuple[Trial | None, bool]:
    """The accepted trial within `tolerance` of the aim (else the accepted ones nearest it), then
    closest to the MIA aim when given, then best retain, then larger alpha; or a best effort."""

    def distance(t: Trial) -> float:
        return abs(t.forget_acc - target.aim)

    accepted = [t for t in trials if t.accepted]
    if accepted:
        close = [t for t in accepted if distance(t) <= tolerance + EPS] or _nearest(accepted, distance, tolerance)
        if mia_aim is not None:
            close = _nearest(close, lambda t: abs(t.mia - mia_aim), tolerance)
        return max(close, key=lambda t: (t.retain_acc, t.alpha)), True
    keeping = [t for t in trials if t.meets_retain and t.selected]
    if keeping:
        return min(keeping, key=lambda t: (distance(t), -t.retain_acc, -t.alpha)), False
    return None, False


def _reached_aim(trials: Sequence[Trial], target: ForgetTarget, tolerance: float) -> bool:
    return any(t.accepted and abs(t.forget_acc - target.aim) <= tolerance + EPS for t in trials)


class _OutOfTrials(Exception):
    """A stage used up `max_trials`."""


class _Search:
    """The search over one model: per stage and lambda, the largest grid alpha that reaches
    the aim (see `stage`), asked about retain accuracy, and scored whole when it keeps it."""

    def __init__(
        self,
        runner: TrialRunner,
        target: ForgetTarget,
        floor: float,
        tolerance: float,
        max_trials: int,
        mia: MiaScorer | None,
        bar,
        coarse_step: int,
    ):
        self.runner, self.target, self.floor, self.tolerance = runner, target, floor, tolerance
        self.max_trials, self.mia, self.bar, self.coarse_step = max_trials, mia, bar, coarse_step
        self.near_aim = Question("forget", target.aim + tolerance, at_most=True)
        self.under_bound = Question("forget", target.bound, at_most=True)
        self.above_band = Question("forget", target.aim - tolerance, at_most=False) if target.aim > tolerance else None
        self.keeps_retain = Question("retain", floor, at_most=False)
        self.trials: list[Trial] = []
        self.finalists: list[Trial] = []
        self._stage_trials = 0

    def stage(self, first_layer: str | None, grid: list[float], lams: Sequence[float]) -> None:
        """Search one stage (every layer, or only from `first_layer` on); finalists are kept.

        Per lambda, the coarse alphas are asked from the largest down whether they reach the
        aim; the first that does, and the bisection between it and the coarse alpha above,
        give the largest alpha that reaches it. Smaller alphas dampen more and keep less
        retain accuracy, so they are not asked: answers that reach the aim are the costly
        ones (the whole forget set, nearly), and the best of them is the largest alpha."""
        self._stage_trials = 0
        coarse = self._coarse(len(grid))
        try:
            for lam in lams:
                above = None  # the coarse index above, which did not reach the aim
                for i in reversed(coarse):
                    if self._answer(first_layer, grid[i], lam, self.near_aim):
                        top = (
                            i if above is None else self._turn(first_layer, grid, lam, [self.near_aim], yes=i, no=above)
                        )
                        setting = self._probe(first_layer, grid[top], lam, [self.keeps_retain])
                        if setting.answers.get(self.keeps_retain):
                            self._finalist(setting, grid[top], lam)
                        break
                    above = i
        except _OutOfTrials:
            pass

    def best_effort(self, stages: Sequence[str | None], grids: dict, lams: Sequence[float]) -> None:
        """No stage reached the aim. Per stage and lambda, the smallest coarse alpha whose
        forget accuracy is under the bound and that keeps retain accuracy (the most forgetting
        allowed) is a finalist. Where none keeps retain accuracy, the first stage's smallest
        coarse alpha that keeps it, per lambda, is a candidate instead. The best of them is
        then refined by bisection down to the grid alpha where the answer turns: one
        refinement, because each step costs nearly a whole retain set."""
        gate = [self.under_bound, self.keeps_retain]
        edges = {}
        for first_layer in stages:
            self._stage_trials = 0
            for lam in lams:
                if edge := self._edge(first_layer, grids[first_layer], lam, gate):
                    edges[(first_layer, lam)] = edge
                    self._finalist_at(first_layer, grids[first_layer], lam, edge[0])
        if any(t.meets_retain for t in self.finalists):
            best = _choose(self.finalists, self.target, self.tolerance)[0]
            key, self._stage_trials = (best.first_layer, best.lam), 0  # the refinement's own trial budget
        else:
            self._stage_trials, stage, gate = 0, stages[0], [self.keeps_retain]
            edges = {(stage, lam): e for lam in lams if (e := self._edge(stage, grids[stage], lam, gate))}
            if not edges:
                return
            key = min(edges, key=lambda k: self._forget_estimate(k[0], grids[stage][edges[k][0]], k[1]))
        if key not in edges:
            return
        (first_layer, lam), (kept, below) = key, edges[key]
        if below is not None:
            try:
                kept = self._turn(first_layer, grids[first_layer], lam, gate, yes=kept, no=below)
            except _OutOfTrials:
                pass
        self._finalist_at(first_layer, grids[first_layer], lam, kept)

    def _edge(self, first_layer, grid: list[float], lam: float, questions: Sequence[Question]):
        """The first coarse index, from the smallest alpha up, answering yes to every question
        (asked in order), and the coarse index below it (None at the bottom); None when none
        does. Small alphas dampen the most and lose retain accuracy: "no" is a cheap answer
        there, while "yes, retain accuracy is kept" costs nearly the whole retain set. The
        gate asked first keeps a class the importances cannot reach cheap: its forget
        accuracy fails the bound on a few samples at every alpha."""
        below = None
        try:
            for i in self._coarse(len(grid)):
                if all(self._answer(first_layer, grid[i], lam, q) for q in questions):
                    return i, below
                below = i
        except _OutOfTrials:
            pass
        return None

    def _finalist_at(self, first_layer, grid: list[float], lam: float, i: int) -> None:
        self._finalist(self.runner.setting(first_layer, grid[i], lam)[0], grid[i], lam)

    def _forget_estimate(self, first_layer, alpha: float, lam: float) -> float:
        """The forget accuracy scored so far for a setting already asked about (1 if none)."""
        setting = self.runner.by_request.get((first_layer, alpha, lam))
        tally = None if setting is None else setting.tallies.get("forget")
        return 1.0 if tally is None or not tally.samples else tally.accuracy

    def _coarse(self, n: int) -> list[int]:
        """Every `coarse_step`-th grid index, the last included: the first look along alpha."""
        if n == 0:
            return []
        picks = list(range(0, n, self.coarse_step))
        return picks if picks[-1] == n - 1 else picks + [n - 1]

    def _turn(self, first_layer, grid, lam, questions: Sequence[Question], yes: int, no: int) -> int:
        """Bisection between grid indices `yes` (every question answered yes) and `no` (not):
        the index next to the turn on `yes`'s side. It works in either direction along alpha."""
        while abs(no - yes) > 1:
            mid = (yes + no) // 2
            if all(self._answer(first_layer, grid[mid], lam, q) for q in questions):
                yes = mid
            else:
                no = mid
        return yes

    def _answer(self, first_layer, alpha, lam, question: Question) -> bool:
        return self._probe(first_layer, alpha, lam, [question]).answers[question]

    def _probe(self, first_layer, alpha, lam, questions: Sequence[Question]) -> Setting:
        if self._stage_trials >= self.max_trials:
            raise _OutOfTrials
        self._stage_trials += 1
        setting, known = self.runner.setting(first_layer, alpha, lam)
        for q in questions:
            if not self.runner.answer(setting, q):
                break
        self.trials.append(self._record(setting, alpha, lam, known, whole=False))
        self._show()
        return setting

    def _finalist(self, setting: Setting, alpha: float, lam: float) -> None:
        """Score `setting`, asked for as (alpha, lam), on the whole sets; it competes in the final
        choice. (A setting that selects nothing is the original model, whatever alpha asked for it.)"""
        forget_acc = self.runner.score_whole(setting, "forget")
        retain_acc = self.runner.score_whole(setting, "retain")
        meets = forget_acc <= self.target.bound + EPS and retain_acc >= self.floor - EPS
        mia = None
        if self.mia is not None and meets:
            self.runner.make_current(setting)  # the MIA scores the model as it is now
            mia = self.mia.score(self.runner.model)
        trial = self._record(setting, alpha, lam, True, whole=True, mia=mia)
        self.finalists.append(trial)
        self.trials.append(trial)
        self._show()

    def _record(self, setting: Setting, alpha, lam, reused: bool, *, whole: bool, mia: float | None = None) -> Trial:
        forget, retain = setting.tallies.get("forget"), setting.tallies.get("retain")
        answers = setting.answers
        if whole:
            meets_forget = forget.accuracy <= self.target.bound + EPS
            meets_retain = retain.accuracy >= self.floor - EPS
        else:
            meets_forget = answers.get(self.under_bound, True if answers.get(self.near_aim) else None)
            meets_retain = answers.get(self.keeps_retain)
        return Trial(
            alpha,
            lam,
            setting.selected,
            float("nan") if forget is None else forget.accuracy,
            float("nan") if retain is None else retain.accuracy,
            meets_forget,
            meets_retain,
            reused,
            setting.stage,
            mia,
            forget_samples=0 if forget is None else forget.samples,
            retain_samples=0 if retain is None else retain.samples,
            whole=whole,
        )

    def _show(self) -> None:
        if self.bar is None:
            return
        best, _ = _choose(self.finalists, self.target, self.tolerance) if self.finalists else (None, False)
        self.bar.set_postfix(
            best="-" if best is None else f"alpha {best.alpha:.3g} lam {best.lam:g}",
            samples=self.runner.samples,
            refresh=False,
        )
        self.bar.update(1)  # draws the count and the postfix just set


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
    resolution: float = 1.05,
    max_trials: int = 200,
    unseen_eval: Iterable | None = None,
    retrained: nn.Module | None = None,
    full_class: bool | None = None,
    tolerance: float = 0.01,
    eval_limit: int | None = 2000,
    error_rate: float = 0.01,
    include_auto: bool = True,
    layer_fallback: bool = True,
    mia: MiaTarget | None = None,
    metric: Metric | None = None,
    cache_activations: bool = True,
    progress: bool = True,
    unpack: Unpack | None = None,
    backend: str = "auto",
) -> TuneResult:
    """Search alpha (and lambda) for SSD with importances computed once; leave the model dampened.

    Args:
        model: the trained model, modified in place: on return it is dampened with the
            chosen setting (or unchanged when nothing kept retain accuracy).
        forget, full: importances on Df and D (Importances or dicts), or data to compute
            them from, once, with `ssd_fast.importance`.
        forget_eval, retain_eval: small evaluation subsets of the forget and retain data,
            taken from the training data, never the test set: batches as `importance`
            takes them ((inputs, labels) with tensor, tuple or dict inputs, or dicts holding
            `labels`). Best held out of training (`ssd_fast.eval.data.split_validation`):
            retain images the model memorised lose accuracy under dampening faster than
            unseen ones, so scoring on them rejects settings that are fine.
        target_forget_acc: the largest acceptable forget accuracy. The default aims at
            what a model retrained without Df would score, through a proxy when no
            retrained model is given: full-class forgetting (no forget label occurs in
            retain_eval) aims at 0 and accepts at most chance, 1/num_classes; other
            forgetting aims at the original model's accuracy on `unseen_eval` and
            accepts up to `tolerance` above it.
        max_retain_drop: the most retain accuracy may fall below the original model's (a fraction).
        alphas: the alpha grid. Default: the alphas where the selected set changes, one
            per `resolution` factor of selected count (see `_alpha_grid.py`).
        lams: the lambdas to try; (1.0,) searches alpha only. Small lambdas dampen the
            selected parameters harder (each is scaled by min(lambda * d / f, 1)).
        resolution: the default grid's step in selected count (1.05: 5% more parameters
            selected from one grid alpha to the next smaller one).
        max_trials: a cap on trials per stage (every layer, then each later-layer start).
        unseen_eval: held-out data of the forget distribution (not the test set), for
            forgetting that is not a whole class.
        retrained: a model trained without Df, when one exists: its forget accuracy is the aim.
        full_class: whether Df is whole classes; detected from the labels when None.
        tolerance: forget accuracies this close to the aim count as reaching it.
        eval_limit: at most this many samples are kept from each evaluation set.
        error_rate: the probability, over the random order the sets are scored in, that any
            answer taken before a whole set was scored differs from the whole set's (see
            the module doc). The chosen setting is scored on the whole sets regardless.
        include_auto: add ASSD's alpha (`alpha="auto"`) to the grid when the counts are known.
        layer_fallback: when no setting dampening every layer reaches the aim with retain
            accuracy kept, search again dampening only from a later weight layer on (up
            to 4 starts, shallowest first, stopping at the first that does; see
            `_layer_starts.py`). False searches every layer only.
        mia: an `ssd_fast.MiaTarget`: score each accepted finalist with the paper's
            membership-inference attack too, and among those tied on the forget aim
            prefer the one whose score is closest to `mia.aim` (or, with aim None, to the
            `retrained` model's score). Without it the choice ignores the MIA.
        metric: what counts as right, `metric(logits, labels) -> (hits, units)` per sample;
            default top-1 accuracy, or token accuracy on labelled positions for a
            transformers causal / masked LM (see `_metric.py`). With a metric of your own
            every question is answered on the whole sets.
        cache_activations: reuse the evaluation sets' outputs of leading modules that a trial
            leaves untouched (exact; see `_activation_cache.py`).
        progress: show a progress bar (trials, best setting so far, samples scored).
        unpack: maps an evaluation batch to (inputs, labels).
        backend: passed to `ssd_fast.dampen`.

    Returns:
        TuneResult with the choice, its whole-set scores, the target, and every trial.

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
        (error_rate, "error_rate"),
    ):
        _checks.fraction(value, name)
    resolution = _checks.finite_number(resolution, "resolution")
    if resolution <= 1.0:
        raise ValueError(f"resolution must be above 1 (a factor of selected count), got {resolution}")
    _checks.count(max_trials, "max_trials", minimum=1)
    _checks.count(eval_limit, "eval_limit", minimum=1)
    for flag, name in (
        (layer_fallback, "layer_fallback"),
        (cache_activations, "cache_activations"),
        (progress, "progress"),
    ):
        _checks.flag(flag, name)
    _checks.flag(full_class, "full_class", optional=True)
    if retrained is not None:
        _checks.module(retrained, "retrained")

    dampener = prepare(model, forget, full, backend=backend)  # validates and pairs, once
    forget_imp, full_imp = dampener.forget, dampener.full
    scoring = Scoring(model, metric)

    device = model_device(model)

    def evalset(data, name):
        return EvalSet(data, name, device, limit=eval_limit, unpack=unpack, scoring=scoring)

    forget_set, retain_set = evalset(forget_eval, "forget_eval"), evalset(retain_eval, "retain_eval")
    unseen_set = evalset(unseen_eval, "unseen_eval") if unseen_eval is not None else None
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

    stages = [None] + (layer_starts(model, forget_imp) if layer_fallback else [])
    grids = {s: _grid(dampener if s is None else dampener.only_from(s), alphas, resolution) for s in stages}
    if include_auto and alphas is None:
        try:  # ASSD's alpha as one more grid point, when the sample counts are known
            grids[None] = sorted(
                set(grids[None]) | {resolve_auto_alpha(forget_imp, full_imp, dampener.importance_pairs())}
            )
        except (TypeError, ValueError):
            pass
    settings = sum(len(g) for g in grids.values()) * len(lams) + 1
    looks_per_set = max(len(s.looks) - 1 for s in (forget_set, retain_set))
    # The union bound: at most QUESTIONS questions per setting, each with early looks, share error_rate.
    risk = risk_per_look(error_rate, settings * QUESTIONS, max(1, looks_per_set))

    all_alphas = [a for g in grids.values() for a in g]
    dampener.take_snapshot(alpha_min=min(all_alphas) if all_alphas else None)  # only tensors a trial can change
    cache = ActivationCache(model) if cache_activations else None
    runner = TrialRunner(model, dampener, {"forget": forget_set, "retain": retain_set}, risk, cache)
    original = runner.original()
    original_forget = runner.score_whole(original, "forget")
    original_retain = runner.score_whole(original, "retain")
    bar = _progress_bar(progress)
    # A grid of the caller's is looked at whole; the default one every COARSE in count first.
    coarse_step = 1 if alphas is not None else max(1, round(math.log(COARSE) / math.log(resolution)))
    search = _Search(
        runner, target, original_retain - max_retain_drop, tolerance, max_trials, mia_scorer, bar, coarse_step
    )
    start_time = time.perf_counter()
    try:
        run = []
        for first_layer in stages:
            run.append(first_layer)
            search.stage(first_layer, grids[first_layer], lams)
            if _reached_aim(search.finalists, target, tolerance):
                break
        else:
            search.best_effort(run, grids, lams)
    finally:
        dampener.restore()  # whatever happened, the model is the original again here
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start_time

    choice, satisfied = _choose(search.finalists, target, tolerance, mia_aim)
    report = None
    if choice is not None:
        report = runner.stage(choice.first_layer).apply(choice.alpha, choice.lam)
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
        trials=tuple(search.trials),
        report=report,
        first_layer=None if choice is None else choice.first_layer,
        timing=dict(runner.timing),
        mia=None if choice is None else choice.mia,
        mia_aim=mia_aim,
        samples_scored=runner.samples,
        error_rate=error_rate,
        cached_batches=0 if cache is None else cache.hits,
    )


COARSE = 1.5  # the first look along alpha: about 1.5 times more selected from one alpha to the next smaller
QUESTIONS = 4  # per setting: near the aim, under the bound, above the band (forget); keeps retain


def _grid(stage: Dampener, alphas: Sequence[float] | None, resolution: float) -> list[float]:
    pairs = stage.importance_pairs()
    return given_alphas(alphas, pairs) if alphas is not None else selection_alphas(pairs, resolution)


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # mininterval=0: every trial redraws; a trial costs at least one forward, so this is cheap.
    return tqdm(desc="ssd_fast.tune", unit="trial", leave=False, mininterval=0)
