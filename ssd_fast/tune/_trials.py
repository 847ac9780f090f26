"""Runs tune's trials: puts the model in a setting, and answers questions about it with as
few samples as each answer needs.

A setting is (stage, alpha, lambda); the model it makes depends only on (stage, lambda,
selected count), because for one stage the selected sets are nested in alpha: an equal
count means an identical set. Every setting's tallies (how much of each set it has been
scored on) and answers are kept, so a question asked twice, or about a setting that
selects the same set as an earlier one, costs nothing.

A question is "is this set's accuracy at most (or at least) theta?". It is answered from
the tally when the bounds of `_bounds.py` allow; otherwise the next chunk is scored. The
risk each early answer may take is fixed by `tune` (see `_search.py`: the union bound).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from torch import nn

from .._batches import eval_mode
from ..dampen import Dampener
from ._activation_cache import ActivationCache
from ._bounds import at_least, at_most, mean_at_most
from ._evaluation import EvalSet, Tally

EPS = 1e-9  # accuracies this close to a threshold count as on it (as before the early stop)


@dataclass(frozen=True)
class Question:
    """Is `set_name`'s accuracy at most `theta` (at_most) or at least `theta` (not at_most)?"""

    set_name: str
    theta: float
    at_most: bool


@dataclass
class Setting:
    """One distinct model: how it is made, what it selected, what has been scored and answered."""

    stage: str | None
    alpha: float
    lam: float
    selected: int
    touched: frozenset[str]
    tallies: dict[str, Tally] = field(default_factory=dict)
    answers: dict[Question, bool] = field(default_factory=dict)


class TrialRunner:
    """Applies settings through `dampener` (and its `only_from` views) and scores them."""

    def __init__(
        self,
        model: nn.Module,
        dampener: Dampener,
        sets: dict[str, EvalSet],
        risk: float,
        cache: ActivationCache | None = None,
    ):
        self.model, self.dampener, self.sets, self.risk, self.cache = model, dampener, sets, risk, cache
        self.stages: dict[str | None, Dampener] = {None: dampener}
        self.by_key: dict[tuple, Setting] = {}
        self.by_request: dict[tuple, Setting] = {}
        self.current: Setting | None = None
        self.samples = 0  # samples scored, every set and setting
        self.timing = {"apply": 0.0, "restore": 0.0, "score": 0.0}

    def stage(self, first_layer: str | None) -> Dampener:
        if first_layer not in self.stages:
            self.stages[first_layer] = self.dampener.only_from(first_layer)
        return self.stages[first_layer]

    def setting(self, stage: str | None, alpha: float, lam: float) -> tuple[Setting, bool]:
        """The setting (stage, alpha, lam), applied to the model; True when it was known already
        (the same request, or another that selects the same set)."""
        request = (stage, alpha, lam)
        if request in self.by_request:
            return self.by_request[request], True
        self._apply(stage, alpha, lam)
        report = self._report
        selected = report.selected
        key = (stage, lam, selected) if selected else (None, 0.0, 0)
        known = key in self.by_key
        if not known:
            touched = frozenset(layer.name for layer in report.layers if layer.selected)
            self.by_key[key] = Setting(stage, alpha, lam, selected, touched)
        setting = self.by_key[key]
        self.by_request[request] = setting
        self.current = setting
        return setting, known

    def _apply(self, stage: str | None, alpha: float, lam: float) -> None:
        t0 = time.perf_counter()
        self.dampener.restore()
        t1 = time.perf_counter()
        self._report = self.stage(stage).apply(alpha, lam)
        _ = self._report.selected  # reading the counts waits for the kernel
        self.timing["restore"] += t1 - t0
        self.timing["apply"] += time.perf_counter() - t1

    def original(self) -> Setting:
        """The model as given (nothing selected); call it before any trial, while the model is so."""
        key = (None, 0.0, 0)
        if key not in self.by_key:
            self.by_key[key] = Setting(None, math.inf, 0.0, 0, frozenset())
            self.current = self.by_key[key]
        return self.by_key[key]

    def make_current(self, setting: Setting) -> None:
        """Put the model in `setting`."""
        if self.current is not setting:
            if setting.selected == 0:
                t0 = time.perf_counter()
                self.dampener.restore()
                self.timing["restore"] += time.perf_counter() - t0
            else:
                self._apply(setting.stage, setting.alpha, setting.lam)
            self.current = setting

    def tally(self, setting: Setting, set_name: str) -> Tally:
        return setting.tallies.setdefault(set_name, Tally())

    def answer(self, setting: Setting, question: Question) -> bool:
        """The answer to `question` for `setting`, scoring more of the set only while undecided."""
        if question in setting.answers:
            return setting.answers[question]
        evalset, tally = self.sets[question.set_name], self.tally(setting, question.set_name)
        while (decided := self._decide(evalset, tally, question)) is None:
            self._extend(setting, evalset, tally)
        setting.answers[question] = decided
        return decided

    def score_whole(self, setting: Setting, set_name: str) -> float:
        """The setting's accuracy on the whole set."""
        evalset, tally = self.sets[set_name], self.tally(setting, set_name)
        while tally.chunks < len(evalset.chunks):
            self._extend(setting, evalset, tally)
        return tally.accuracy

    def _extend(self, setting: Setting, evalset: EvalSet, tally: Tally) -> None:
        self.make_current(setting)
        t0 = time.perf_counter()
        forward = None if self.cache is None else self.cache.forward(evalset, setting.touched)
        before = tally.samples
        with eval_mode(self.model):
            evalset.extend(self.model, tally, forward)
        self.samples += tally.samples - before
        self.timing["score"] += time.perf_counter() - t0

    def _decide(self, evalset: EvalSet, tally: Tally, q: Question) -> bool | None:
        size, done = evalset.size, tally.chunks >= len(evalset.chunks)
        if done:
            return (
                tally.hits <= q.theta * tally.units + EPS * tally.units
                if q.at_most
                else (tally.hits >= q.theta * tally.units - EPS * tally.units)
            )
        if tally.samples == 0:
            return None
        if evalset.single_units:  # exact: the hypergeometric tails
            hits = int(round(tally.hits))
            if q.at_most:
                return at_most(size, tally.samples, hits, math.floor((q.theta + EPS) * size), self.risk)
            return at_least(size, tally.samples, hits, math.ceil((q.theta - EPS) * size), self.risk)
        if evalset.widest is not None:  # several units a sample: Hoeffding
            if q.at_most:
                return mean_at_most(size, tally.samples, tally.hits, tally.units, q.theta, evalset.widest, self.risk)
            misses = tally.units - tally.hits  # at least theta right = at most 1 - theta wrong
            verdict = mean_at_most(size, tally.samples, misses, tally.units, 1 - q.theta, evalset.widest, self.risk)
            return verdict
        return None  # a user metric: units unknown until scored, so only the whole set decides
