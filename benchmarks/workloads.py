"""The parameter lists the kernel benchmarks run on: the paper's CIFAR ResNet18 (11.2M
parameters, 62 tensors) and ViT-B/16 (85.9M, 152 tensors), with synthetic importances."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssd_fast.eval.models import cifar_resnet18


def vit_b16_shapes(num_classes: int = 100) -> list[tuple[int, ...]]:
    """ViT-B/16 at 224x224: patch embedding, cls token, position embedding, 12 blocks, head."""
    width, mlp, tokens = 768, 3072, 197
    shapes: list[tuple[int, ...]] = [(width, 3, 16, 16), (width,), (1, 1, width), (1, tokens, width)]
    for _ in range(12):
        shapes += [(width,), (width,), (3 * width, width), (3 * width,), (width, width), (width,)]
        shapes += [(width,), (width,), (mlp, width), (mlp,), (width, mlp), (width,)]
    shapes += [(width,), (width,), (num_classes, width), (num_classes,)]
    return shapes


def resnet18_shapes() -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in cifar_resnet18(100).parameters()]


SHAPES = {"resnet18": resnet18_shapes, "vit_b16": vit_b16_shapes}


@dataclass
class Workload:
    """Parameters plus forget/full importances; about a quarter of elements get selected at alpha 10."""

    name: str
    params: list[torch.Tensor]
    forget: list[torch.Tensor]
    full: list[torch.Tensor]
    pristine: list[torch.Tensor]

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def restore(self) -> None:
        """Undo the previous run, so repeated runs never drift into denormals."""
        torch._foreach_copy_(self.params, self.pristine)


def make_workload(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Workload:
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = SHAPES[name]()
    params = [torch.randn(s, generator=g, device=device).to(dtype) for s in shapes]
    full = [torch.rand(s, generator=g, device=device) for s in shapes]
    forget = [torch.rand(s, generator=g, device=device) * 40 for s in shapes]
    return Workload(name, params, forget, full, [p.clone() for p in params])
