"""The paper's CIFAR-style ResNet18: a 3x3 stride-1 stem and no max-pool.

With 3 input channels and 100 classes this is the 11.2M-parameter model of the paper's CIFAR-100 runs;
with 1 channel it takes Fashion-MNIST (28x28 works: the stages go 28, 14, 7, 4).
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet18: stem conv3x3(64), four stages of two BasicBlocks, global pool, fc.

    Args:
        num_classes: outputs of `self.classifier` (an nn.Linear).
        in_channels: 1 for Fashion-MNIST, 3 for CIFAR.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.layers(self.stem(x))))


def resnet18(num_classes: int = 10, in_channels: int = 1) -> ResNet18:
    """CIFAR-style ResNet18 for 1-channel images (Fashion-MNIST) by default."""
    return ResNet18(num_classes=num_classes, in_channels=in_channels)


def cifar_resnet18(num_classes: int = 100) -> ResNet18:
    """The paper's ResNet18 for 3x32x32 CIFAR inputs (11.2M parameters at 100 classes)."""
    return ResNet18(num_classes=num_classes, in_channels=3)
