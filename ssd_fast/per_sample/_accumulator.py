"""The per-sample engine: hooks, one forward, and one backward pass per seed.

For each batch:
1. Forward once, with a forward hook on every covered layer and every unit. A layer's
   hook keeps its input and taps its output (see _tap); a unit's hook keeps its inputs
   and taps its outputs (see _vmap); bare parameters are swapped for per-sample [B, ...]
   copies with torch.func.functional_call. A layer whose input and output lead with 1
   while the batch has more (a position embedding of [1, T] positions) is broadcast:
   its output is expanded to the batch, so that its gradient arrives per sample.
2. Check that every layer ran on the batch in dim 0, and (first batch, under a trace of
   every op, see _coverage) where each parameter is used. What a plain rule cannot
   cover is re-planned (a shared weight is deferred; a use elsewhere goes to the unit of
   the smallest module holding every use), and the forward is redone; nothing has been
   accumulated yet.
3. Backward the weighted sum of per-sample losses to a scalar anchor. Each tap hands its
   output gradient to its layer's rule, which adds sum_i g_i^2 (or |g_i|) for that layer
   and lets the gradient go. Parameter gradients are never formed.
4. Deferred uses (shared weights, units) then add their sums, a chunk of samples at a
   time, summing every use of a parameter before squaring (see _deferred).
Samples must not interact in the forward pass: eval mode, which importance() sets.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .._batches import call_model, count_samples
from .._hf import attention_mask, task_of
from .._loss import LossFn
from ._chunks import DEFAULT_BUDGET, add_power_sum_
from ._coverage import common_module, owners_of, trace_uses
from ._deferred import LayerCall, Use, flush_
from ._losses import per_sample_losses
from ._plan import DEFER, Layer, Plan, Unit, describe, make_plan
from ._scales import ScaleHub
from ._tap import source, tap
from ._targets import seeds_for
from ._vmap import record_call
from .rules import layer_input


class ModelCall(nn.Module):
    """model called the way importance() calls it, so functional_call can swap its tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Any) -> torch.Tensor:
        return call_model(self.model, inputs)


class PerSampleAccumulator:
    """Adds each batch's sum over samples of squared per-sample gradients into `sums`.

    Args:
        model: the model; it must be in eval mode while this runs (importance() does that).
        params: the trainable parameters, by name.
        label_free: accumulate |g_i| of ||f(x_i)||^2 instead of g_i^2 of the loss.
        loss_fn: `loss_fn(outputs, targets) -> [B]` per-sample losses; cross-entropy (or a
            transformers model's own loss, per sample) by default.
        chunk_budget: elements of per-sample temporaries a rule may hold at once (it may also
            use as much as its layer's activations).
    Call `close()` to remove the hooks. `plan` says how each parameter is covered.
    """

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, nn.Parameter],
        *,
        label_free: bool = False,
        loss_fn: LossFn | None = None,
        chunk_budget: int = DEFAULT_BUDGET,
    ):
        self.model = model
        self.params = dict(params)
        self.label_free = label_free
        self.loss_fn = loss_fn
        self.budget = chunk_budget
        self.task = task_of(model)
        self._caller = ModelCall(model)
        self._handles: list[Any] = []
        self._placement: dict[str, str] = {}
        self._warned: set[str] = set()
        self._verified = False
        # Per-forward state, read by the hooks.
        self._active = False
        self._n = 0
        self._mask: torch.Tensor | None = None
        self._anchor: torch.Tensor | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._uses: list[Use] = []
        self._calls: Counter[Layer] = Counter()
        self._misshapen: set[Layer] = set()
        self._broadcast: set[Layer] = set()
        self._hub: ScaleHub | None = None
        self._install(make_plan(model, self.params, self._placement))

    # ---- hooks ---------------------------------------------------------------------------
    def _install(self, plan: Plan, reasons: dict[str, str] | None = None) -> None:
        self.close()
        self.plan = plan
        for layer in plan.layers:
            if layer.entry.output_rule is not None:
                self._handles.append(layer.module.register_forward_hook(self._output_hook(layer), with_kwargs=True))
            else:
                self._handles.append(layer.module.register_forward_hook(self._layer_hook(layer)))
        for unit in plan.units:
            self._handles.append(unit.module.register_forward_hook(self._unit_hook(unit), with_kwargs=True))
        self._warn_units(reasons or {})

    def _layer_hook(self, layer: Layer):
        def on_forward(module: nn.Module, args: tuple, output: Any) -> Any:
            if not self._active:
                return None
            self._calls[layer] += 1
            x = layer_input(module, args)
            n = self._n
            if not (_leads_with(x, n) and _leads_with(output, n)):
                if not (n > 1 and _leads_with(x, 1) and _leads_with(output, 1)):
                    self._misshapen.add(layer)  # its rows are not samples: the rule would be wrong
                    return None
                # Broadcast over the batch (position embeddings): give each sample its own copy.
                self._broadcast.add(layer)
                x, output = x.expand(n, *x.shape[1:]), output.expand(n, *output.shape[1:]).contiguous()
            if layer.deferred:
                use = LayerCall(layer, x)
                self._uses.append(use)
                return tap(output, self._anchor, lambda dy: setattr(use, "dy", dy))
            return tap(output, self._anchor, self._layer_callback(layer, x))

        return on_forward

    def _output_hook(self, layer: Layer):
        """A layer whose rule re-computes its output with its internal tensors tapped (recurrent layers)."""

        def on_forward(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if not self._active:
                return None
            self._calls[layer] += 1
            sums = _LazySums(self, layer)
            replaced = layer.entry.output_rule(
                module, args, kwargs, lambda t, cb: tap(t, self._anchor, cb), sums, absolute=self.label_free, n=self._n
            )
            if replaced is None:  # a call the rule does not cover: run the module's own forward after all
                self._misshapen.add(layer)
                return type(module).forward(module, *args, **kwargs)
            return replaced

        return on_forward

    def _unit_hook(self, unit: Unit):
        def on_forward(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if not self._active:
                return None
            call, output = record_call(unit, args, kwargs, output, self._n, self._tap_any)
            self._uses.append(call)
            return output

        return on_forward

    def _tap_any(self, y: torch.Tensor, callback) -> torch.Tensor:
        # A copy: tapping marks its input dirty, and a unit's output may be saved by its own
        # backward (MkldnnRnnLayer), or be an expanded [1, ...] tensor with no memory of its own.
        return tap(y.clone(memory_format=torch.contiguous_format), self._anchor, callback)

    def _layer_callback(self, layer: Layer, x: torch.Tensor):
        version = x._version

        def on_grad(dy: torch.Tensor) -> None:
            if x._version != version:
                raise RuntimeError(
                    f"the input of {layer.name} was modified in place after the layer ran; "
                    "per-sample importance needs it as it was"
                )
            out = {local: self._sums[full] for local, full in layer.params.items()}
            layer.rule(layer.module, x, dy, out, absolute=self.label_free, budget=self.budget)

        return on_grad

    def _bare_copy(self, name: str, p: nn.Parameter) -> torch.Tensor:
        def on_grad(g: torch.Tensor) -> None:  # g: [B, ...], the per-sample gradients
            add_power_sum_(self._sums[name], g, absolute=self.label_free)

        return source(p.detach().expand(self._n, *p.shape[1:]), self._anchor, on_grad)

    def close(self) -> None:
        """Remove every hook this accumulator installed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # ---- one batch ------------------------------------------------------------------------
    def __call__(self, inputs: Any, targets: Any, sums: dict[str, torch.Tensor]) -> None:
        n = count_samples(inputs)
        self._mask = attention_mask(inputs)
        outputs = self._checked_forward(inputs, n)
        seeds = seeds_for(targets, outputs, absolute=self.label_free)
        self._sums = sums
        numel = {full: self.params[full].numel() for use in self._uses for full in _use_params(use)}
        try:
            for k, seed in enumerate(seeds):
                self._backward(outputs, seed, retain=k + 1 < len(seeds))
                if self._hub is not None:
                    self._hub.flush_(sums, absolute=self.label_free)
                flush_(self._uses, sums, n=n, absolute=self.label_free, budget=self.budget, numel=numel)
                for use in self._uses:
                    _forget_grads(use)
        finally:
            self._sums = {}
            self._uses = []
            self._mask = None
            self._hub = None

    def check(self, inputs: Any) -> Plan:
        """Run the first-batch checks on `inputs` (one forward, nothing accumulated); the plan they give."""
        self._checked_forward(inputs, count_samples(inputs))
        self._uses, self._hub = [], None
        return self.plan

    def _losses(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        return per_sample_losses(
            outputs, targets, label_free=self.label_free, loss_fn=self.loss_fn, task=self.task, mask=self._mask
        )

    def _forward(self, inputs: Any, n: int) -> torch.Tensor:
        self._n = n
        self._calls.clear()
        self._misshapen.clear()
        self._broadcast.clear()
        self._uses = []
        device = next(iter(self.params.values())).device
        self._anchor = torch.zeros((), device=device, requires_grad=True)
        self._active = True
        # A layer whose output rule computes its output skips its own forward (the hook fills it in).
        skipped = [layer.module for layer in self.plan.layers if layer.entry.output_rule is not None]
        skipped = [m for m in skipped if "forward" not in m.__dict__]
        for module in skipped:
            module.forward = _output_comes_from_the_hook
        self._hub = ScaleHub(n, lambda t, cb: tap(t, self._anchor, cb)) if self.plan.scales else None
        try:
            if not (self.plan.bare or self.plan.scales):
                return call_model(self.model, inputs)
            swaps = {f"model.{name}": self._bare_copy(name, p) for name, p in self.plan.bare.items()}
            swaps.update({f"model.{name}": self._hub.watch(name, p) for name, p in self.plan.scales.items()})
            return functional_call(self._caller, swaps, (inputs,), strict=False)
        finally:
            self._active = False
            for module in skipped:
                del module.forward

    def _checked_forward(self, inputs: Any, n: int) -> torch.Tensor:
        """Forward, re-planning whatever a plain rule cannot cover exactly first."""
        while True:
            verify = not self._verified
            sites: dict = {}
            try:
                with trace_uses(self.model, self.params) if verify else contextlib.nullcontext({}) as sites:
                    outputs = self._forward(inputs, n)
            except Exception:
                if not verify or not (self.plan.bare or self.plan.scales):
                    raise
                # The model cannot take per-sample copies of its bare parameters, or watched scales, at all.
                why = "swapping it for a per-sample copy or a watched scale breaks the forward pass"
                swapped = [*self.plan.bare, *self.plan.scales]
                outputs, problems = None, {full: (self._home(full), why) for full in swapped}
            else:
                problems = self._problems(outputs, inputs, sites if verify else None)
            problems = {full: p for full, p in problems.items() if self._placement.get(full) != p[0]}
            if not problems:
                self._verified = True
                return outputs
            self._placement.update({full: where for full, (where, _) in problems.items()})
            reasons = {full: why for full, (_, why) in problems.items() if why}
            self._install(make_plan(self.model, self.params, self._placement), reasons=reasons)

    def _home(self, full: str) -> str:
        """The module that owns a parameter (the first, for a tied one)."""
        return min(owners_of(self.model)[id(self.params[full])], key=len)

    def _problems(self, outputs: torch.Tensor, inputs: Any, sites: dict | None) -> dict[str, tuple[str, str]]:
        """full name -> (where it must go, why); an empty why means an exact rule still covers it."""
        problems: dict[str, tuple[str, str]] = {}
        for layer in self.plan.layers:
            if layer in self._misshapen:
                why = "its input or output does not hold one sample per row of dim 0"
                problems.update({full: (layer.name, why) for full in layer.params.values()})
            elif self._calls[layer] > 1 and not layer.deferred:
                problems.update({full: (DEFER, "") for full in layer.params.values()})
        if self._hub is not None:
            for full, why in self._hub.problems.items():
                problems.setdefault(full, (self._home(full), why))
        if sites is not None:
            for full, problem in self._use_problems(sites).items():
                problems.setdefault(full, problem)
            if not problems:
                problems.update(self._altered(outputs, inputs))
        return problems

    def _use_problems(self, sites: dict) -> dict[str, tuple[str, str]]:
        owners = owners_of(self.model)
        units = {full: unit.name for unit in self.plan.fallbacks for full in unit.params.values()}
        covering: dict[str, set[str]] = {}  # full name -> the rule modules whose calls it may be used in
        for rule_module in [*self.plan.layers, *(u for u in self.plan.units if u.call_rule is not None)]:
            for full in rule_module.params.values():
                covering.setdefault(full, set()).add(rule_module.name)
        deferred = {full for layer in self.plan.layers if layer.deferred for full in layer.params.values()}
        deferred |= {full for unit in self.plan.units for full in unit.params.values()}
        problems: dict[str, tuple[str, str]] = {}
        for full, counts in sites.items():
            mine = covering.get(full, set())
            if full in self.plan.bare or full in self.plan.scales:  # a stand-in replaces it: a direct use is wrong
                where = common_module(set(counts) | owners[id(self.params[full])])
                problems[full] = (where, "it is also used directly, not only through the attribute that holds it")
            elif full in units:  # a unit covers every use inside its module's forward
                home = units[full]
                inside = all(_within(site, home) for site in counts)
                if not inside:
                    where = common_module(set(counts) | {home})
                    problems[full] = (where, f"it is used outside {home or '<model>'}")
            elif set(counts) <= mine:
                if sum(counts.values()) > 1 and full not in deferred:
                    problems[full] = (DEFER, "")
            else:
                where = common_module(set(counts) | owners[id(self.params[full])])
                outside = sorted(site or "<model>" for site in set(counts) - mine)
                problems[full] = (where, f"{full} is also used in the forward of {', '.join(outside)}")
        return problems

    def _altered(self, outputs: torch.Tensor, inputs: Any) -> dict[str, tuple[str, str]]:
        """Per-sample copies and broadcast outputs must not change what the model computes; check once."""
        if not (self.plan.bare or self.plan.scales or self._broadcast):
            return {}
        with torch.no_grad():
            plain = call_model(self.model, inputs)
        if plain.shape == outputs.shape and torch.allclose(plain, outputs.detach(), rtol=1e-4, atol=1e-5):
            return {}
        if self._broadcast:
            names = ", ".join(describe(layer.name, layer.module) for layer in self._broadcast)
            raise RuntimeError(
                f"per-sample importance: {names} ran on one row shared by the batch, and giving each sample its "
                "own copy of the output changed the model's output; give these layers a per-sample input"
            )
        why = "swapping it for a per-sample copy or a watched scale changes the model's output"
        return {full: (self._home(full), why) for full in [*self.plan.bare, *self.plan.scales]}

    def _backward(self, outputs: torch.Tensor, seed, *, retain: bool) -> None:
        if not (self.plan.layers or self.plan.bare or self.plan.scales or self.plan.units):
            return
        losses = self._losses(outputs, seed.targets)
        if seed.scale is not None:
            losses = losses * seed.scale
        objective = losses.sum()
        if objective.requires_grad:
            torch.autograd.grad(objective, self._anchor, retain_graph=retain, allow_unused=True)

    # ---- warnings -------------------------------------------------------------------------
    def _warn_units(self, reasons: dict[str, str]) -> None:
        """Warn once per module that goes to vmap, saying why when a check moved it there."""
        new = [unit for unit in self.plan.fallbacks if unit.name not in self._warned]
        if not new:
            return
        self._warned.update(unit.name for unit in new)
        named = []
        for unit in new:
            why = sorted({reasons[full] for full in unit.params.values() if full in reasons})
            params = ", ".join(sorted(unit.params.values()))
            named.append(f"{describe(unit.name, unit.module)} for {params}" + (f" ({'; '.join(why)})" if why else ""))
        warnings.warn(
            f"ssd_fast per-sample importance: no exact rule for {', '.join(named)}; using torch.func vmap(grad) "
            "over that module alone, on its own inputs and output gradients (exact, but slower than a rule: "
            "see ssd_fast.per_sample.register_rule)",
            RuntimeWarning,
            stacklevel=4,
        )


def _output_comes_from_the_hook(*args: Any, **kwargs: Any) -> None:
    return None


class _LazySums(dict):
    """{local name: sum tensor} of one layer, read from the batch's sums when the backward pass runs."""

    def __init__(self, acc: PerSampleAccumulator, layer: Layer):
        super().__init__()
        self._acc, self._layer = acc, layer

    def __contains__(self, local: object) -> bool:
        return local in self._layer.params

    def __getitem__(self, local: str) -> torch.Tensor:
        return self._acc._sums[self._layer.params[local]]


def _leads_with(t: Any, n: int) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == n


def _within(site: str, module: str) -> bool:
    return module == "" or site == module or site.startswith(module + ".")


def _use_params(use: Use) -> list[str]:
    owner = use.layer if isinstance(use, LayerCall) else use.unit
    return list(owner.params.values())


def _forget_grads(use: Use) -> None:
    if isinstance(use, LayerCall):
        use.dy = None
    else:
        use.grads.clear()
