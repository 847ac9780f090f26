"""timm's vit_*, deit_*, convnext_*, efficientnet_* and resnet* families, built from configs (no weights).

Each runs per_sample with nothing under vmap (no warning, coverage complete) and matches
the batch-size-1 loop within 1e-4 of each tensor's largest value. Small configs keep CI
fast: 32x32 images, one or two blocks where the family lets the depth be set. Norm
parameters and running statistics are randomised, so that a wrong formula would show.
The README's timm example runs here too.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast.per_sample import coverage

from ..conftest import assert_unchanged, snapshot
from .support import assert_close, loop_oracle, per_sample

timm = pytest.importorskip("timm")

VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3)
CONFIGS = {
    "vit_tiny": ("vit_tiny_patch16_224", VIT),
    "vit_layer_scale_avg_pool": ("vit_small_patch16_224", {**VIT, "init_values": 0.5, "global_pool": "avg"}),
    "deit_tiny_distilled": ("deit_tiny_distilled_patch16_224", VIT),
    "deit3_small": ("deit3_small_patch16_224", VIT),
    "convnext_atto": ("convnext_atto", dict(depths=(1, 1, 1, 1))),
    "convnext_linear_mlp": ("convnext_tiny", dict(depths=(1, 1, 1, 1), dims=(16, 24, 32, 40))),
    "convnextv2_atto": ("convnextv2_atto", dict(depths=(1, 1, 1, 1))),
    "efficientnet_b0": ("efficientnet_b0", {}),
    "resnet18": ("resnet18", {}),
    "resnet26d": ("resnet26d", {}),
}


def build(key: str) -> nn.Module:
    name, kwargs = CONFIGS[key]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            for local, p in m.named_parameters(recurse=False):
                if p.dim() == 1:  # norm weights and biases, gammas: away from their 1 / 0 / 1e-6 inits
                    p.normal_(0.0 if local == "bias" else 1.0, 0.3)
    return model.eval()


# Every config squared; label-free (|g| instead of g^2, same rules) on one of each kind of layer.
CASES = [(key, False) for key in CONFIGS] + [(key, True) for key in ("vit_tiny", "deit3_small", "convnext_atto")]


@pytest.mark.parametrize(
    ("key", "label_free"), CASES, ids=[f"{k}-{'label_free' if f else 'squared'}" for k, f in CASES]
)
def test_family_is_exact_with_nothing_under_vmap(key: str, label_free: bool) -> None:
    model = build(key)
    x = torch.randn(5, 3, 32, 32)
    y = None if label_free else torch.randint(0, 5, (5,))
    assert coverage(model).complete and coverage(model, x[:2]).complete
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "no exact rule ... vmap" would fail here
        got = per_sample(model, x, y, batch_size=3, label_free=label_free)
    assert_unchanged(model, before)
    assert_close(got, loop_oracle(model, x, y, label_free=label_free), rtol=1e-4)


def test_what_the_probes_recognise_in_timm() -> None:
    """The classes the issue named, each covered by what it computes."""
    convnext, efficientnet, vit = build("convnext_atto"), build("efficientnet_b0"), build("deit3_small")
    how = {c.module.split(" ")[-1] for m in (convnext, efficientnet, vit) for c in coverage(m).rules}
    assert {"(LayerNorm2d)", "(BatchNormAct2d)", "(LayerNorm)"} <= how
    scales = [c.name for c in coverage(convnext).scales] + [c.name for c in coverage(vit).scales]
    assert "stages.0.blocks.0.gamma" in scales and "blocks.0.ls1.gamma" in scales


def readme_timm_block() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("### timm", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_timm_example_runs() -> None:
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        exec(compile(readme_timm_block(), "README.md", "exec"), namespace)
    assert namespace["report"].complete
    assert isinstance(namespace["full"], ssd_fast.Importances)
