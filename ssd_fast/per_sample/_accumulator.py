"""The per-sample engine: hooks, one forward, and one backward pass per seed.

For each batch:
1. Forward once, with a forward hook on every covered layer. The hook keeps the layer's
   input and taps its output (see _tap); bare parameters are swapped for per-sample
   [B, ...] copies with torch.func.functional_call.
2. Check that every layer ran once, on the batch in dim 0, and (first batch) that each
   covered parameter enters the graph only through its layer. Anything else moves to
   vmap, and the forward is redone; nothing has been accumulated yet.
3. Backward the weighted sum of per-sample losses to a scalar anchor. Each tap hands its
   output gradient to its layer's rule, which adds sum_i g_i^2 (or |g_i|) for that layer
   and lets the gradient go. Parameter gradients are never formed.
4. The vmap path, if any, adds its parameters' sums with vmap(grad).
Samples must not interact in the forward pass: eval mode, which importance() sets.
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .._batches import call_model, count_samples
from .._loss import LossFn
from ._chunks import DEFAULT_BUDGET, add_power_sum_
from ._coverage import parameter_uses
from ._vmap import ModelCall, vmap_accumulate_
from ._losses import per_sample_losses
from ._plan import Layer, Plan, make_plan
from .rules import layer_input
from ._tap import source, tap
from ._targets import seeds_for


class PerSampleAccumulator:
    """Adds each batch's sum over samples of squared per-sample gradients into `sums`.

    Args:
        model: the model; it must be in eval mode while this runs (importance() does that).
        params: the trainable parameters, by name.
        label_free: accumulate |g_i| of ||f(x_i)||^2 instead of g_i^2 of the loss.
        loss_fn: `loss_fn(outputs, targets) -> [B]` per-sample losses; cross-entropy by default.
        chunk_budget: elements of per-sample temporaries a rule may hold at once (it may also
            use as much as its layer's activations).
    Call `close()` to remove the hooks.
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
        self._caller = ModelCall(model)
        self._handles: list[Any] = []
        self._forced: set[str] = set()
        self._warned: set[str] = set()
        self._verified = False
        # Per-forward state, read by the hooks.
        self._active = False
        self._n = 0
        self._anchor: torch.Tensor | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._calls: Counter[Layer] = Counter()
        self._misshapen: set[Layer] = set()
        self._install(make_plan(model, self.params, self._forced))

    # ---- hooks ---------------------------------------------------------------------------
    def _install(self, plan: Plan, reasons: dict[str, str] | None = None) -> None:
        self.close()
        self.plan = plan
        for layer in plan.layers:
            self._handles.append(layer.module.register_forward_hook(self._hook(layer)))
        self._warn_vmap(reasons or {})

    def _hook(self, layer: Layer):
        def on_forward(module: nn.Module, args: tuple, output: Any) -> Any:
            if not self._active:
                return None
            self._calls[layer] += 1
            x = layer_input(module, args)
            if not (_leads_with(x, self._n) and _leads_with(output, self._n)):
                self._misshapen.add(layer)  # its rows are not samples: the rule would be wrong
                return None
            return tap(output, self._anchor, self._layer_callback(layer, x))

        return on_forward

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
        outputs = self._checked_forward(inputs, n)
        seeds = seeds_for(targets, outputs, absolute=self.label_free)
        self._sums = sums
        try:
            self._backward(outputs, seeds)
            del outputs  # free the graph before vmap builds its own graph
            if self.plan.vmap:
                vmap_accumulate_(
                    self._caller, self.plan.vmap, inputs, seeds, self._losses, sums,
                    n=n, absolute=self.label_free, budget=self.budget,
                )
        finally:
            self._sums = {}

    def _losses(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        return per_sample_losses(outputs, targets, label_free=self.label_free, loss_fn=self.loss_fn)

    def _forward(self, inputs: Any, n: int) -> torch.Tensor:
        self._n = n
        self._calls.clear()
        self._misshapen.clear()
        device = next(iter(self.params.values())).device
        self._anchor = torch.zeros((), device=device, requires_grad=True)
        self._active = True
        try:
            if not self.plan.bare:
                return call_model(self.model, inputs)
            swaps = {f"model.{name}": self._bare_copy(name, p) for name, p in self.plan.bare.items()}
            return functional_call(self._caller, swaps, (inputs,), strict=False)
        finally:
            self._active = False

    def _checked_forward(self, inputs: Any, n: int) -> torch.Tensor:
        """Forward, moving whatever a rule cannot cover exactly to vmap first."""
        while True:
            try:
                outputs = self._forward(inputs, n)
            except Exception:
                if self._verified or not self.plan.bare:
                    raise
                # The model cannot take per-sample copies of its bare parameters at all.
                why = "giving it a per-sample leading dim breaks the forward pass"
                outputs, problems = None, {full: why for full in self.plan.bare}
            else:
                problems = self._problems(outputs, inputs)
            if not problems:
                self._verified = True
                return outputs
            self._forced |= set(problems)
            self._install(make_plan(self.model, self.params, self._forced), reasons=problems)

    def _problems(self, outputs: torch.Tensor, inputs: Any) -> dict[str, str]:
        problems: dict[str, str] = {}
        for layer in self.plan.layers:
            why = None
            if layer in self._misshapen:
                why = "its input or output does not hold one sample per row of dim 0"
            elif self._calls[layer] > 1:
                why = f"it ran {self._calls[layer]} times in one forward pass"
            if why:
                problems.update({full: why for full in layer.params.values()})
        if not self._verified:
            problems.update(self._graph_problems(outputs))
            problems.update(self._bare_problems(outputs, inputs))
        return problems

    def _graph_problems(self, outputs: torch.Tensor) -> dict[str, str]:
        uses = parameter_uses(outputs)
        problems = {}
        for layer in self.plan.layers:
            for full in layer.params.values():
                count = uses[id(self.params[full])]
                if count > 1 or (count and not self._calls[layer]):
                    problems[full] = "it is used outside its layer's forward (tied or read directly)"
        for full in self.plan.bare:
            if uses[id(self.params[full])]:
                problems[full] = "it is also used directly, not only through its per-sample copy"
        return problems

    def _bare_problems(self, outputs: torch.Tensor, inputs: Any) -> dict[str, str]:
        """A per-sample copy must not change what the model computes; check once."""
        if not self.plan.bare:
            return {}
        with torch.no_grad():
            plain = call_model(self.model, inputs)
        same = plain.shape == outputs.shape and torch.allclose(plain, outputs.detach(), rtol=1e-4, atol=1e-5)
        why = "giving it a per-sample leading dim changes the model's output"
        return {} if same else {full: why for full in self.plan.bare}

    def _backward(self, outputs: torch.Tensor, seeds: list) -> None:
        if not (self.plan.layers or self.plan.bare):
            return
        for k, seed in enumerate(seeds):
            losses = self._losses(outputs, seed.targets)
            if seed.scale is not None:
                losses = losses * seed.scale
            objective = losses.sum()
            if objective.requires_grad:
                torch.autograd.grad(objective, self._anchor, retain_graph=k + 1 < len(seeds), allow_unused=True)

    # ---- warnings -------------------------------------------------------------------------
    def _warn_vmap(self, reasons: dict[str, str]) -> None:
        """Warn once per module that goes to vmap, saying why when a check moved it."""
        why = {self.plan.owner[name]: reason for name, reason in reasons.items()}
        owners = sorted({self.plan.owner[name] for name in self.plan.vmap} - self._warned)
        if not owners:
            return
        self._warned.update(owners)
        named = ", ".join(f"{o} ({why[o]})" if o in why else o for o in owners)
        warnings.warn(
            f"ssd_fast per-sample importance: no exact rule for {named}; using torch.func "
            "vmap(grad) for their parameters, which costs an extra forward and backward per batch",
            RuntimeWarning,
            stacklevel=4,
        )


def _leads_with(t: Any, n: int) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == n
