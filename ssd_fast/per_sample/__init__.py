"""Per-sample Fisher: exact, batch-size-independent importance, without [batch x params].

`ssd_fast.importance(model, data, mode="per_sample")` uses `PerSampleAccumulator`:
(1/N) sum_i (grad loss_i)^2, or (1/N) sum_i |grad ||f(x_i)||^2| with label_free=True.
Per-layer rules (Linear, Conv1d/2d, BatchNorm in eval, LayerNorm, GroupNorm, RMSNorm,
Embedding, transformers' Conv1D and RMSNorm classes, norm subclasses recognised by what
they compute such as timm's LayerNorm2d and BatchNormAct2d, bare parameters such as a
cls token, bare per-channel scales such as ConvNeXt's gamma) form each layer's sum of
squared per-sample gradients from its input and output gradient; tied or reused
weights sum their uses per sample before squaring; any other module runs alone under
torch.func vmap, on its own inputs and output gradients, with a warning.
`coverage(model)` lists what would fall back, before any data is read.
`register_rule(module_type, rule)` adds an exact rule for a layer of your own. `Weighted`
and `PerClass` targets give weighted and per-class (e.g. true-Fisher) importances
through the same engine.
"""

from ._accumulator import PerSampleAccumulator
from ._summary import Coverage, Covered, coverage
from ._targets import PerClass, Weighted
from .rules import register_rule, unregister_rule

__all__ = [
    "Coverage",
    "Covered",
    "PerClass",
    "PerSampleAccumulator",
    "Weighted",
    "coverage",
    "register_rule",
    "unregister_rule",
]
