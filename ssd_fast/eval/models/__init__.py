"""Models for the unlearning benchmark, built by name.

    model = build_model("cnn", num_classes=10, in_channels=1)   # SmallCNN
    model = build_model("resnet18", num_classes=10)            # CIFAR-style, 1 channel
    model = cifar_resnet18(100)                                # the paper's, 3 channels
Every model's last layer is `model.classifier`, an nn.Linear.
"""

from __future__ import annotations

from torch import nn

from .resnet import ResNet18, cifar_resnet18, resnet18
from .small_cnn import SmallCNN

MODELS = ("cnn", "resnet18")


def build_model(name: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A freshly initialised model: "cnn" (SmallCNN) or "resnet18" (CIFAR-style ResNet18).

    Seed torch (`torch.manual_seed`) before calling for a reproducible initialisation.
    """
    if name == "cnn":
        return SmallCNN(num_classes=num_classes, in_channels=in_channels)
    if name == "resnet18":
        return resnet18(num_classes=num_classes, in_channels=in_channels)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


__all__ = ["MODELS", "ResNet18", "SmallCNN", "build_model", "cifar_resnet18", "resnet18"]
