"""A small CNN with BatchNorm: the default benchmark model, quick to train on a CPU."""

from __future__ import annotations

from torch import Tensor, nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU-pool blocks, then a two-layer MLP head.

    About 0.2M parameters at width 32. Adaptive pooling to 4x4 before the head lets the
    same model take 28x28 Fashion-MNIST and the 8x8 digits fallback. The last layer is
    `self.classifier` (an nn.Linear), which Fisher Forgetting treats specially.

    Args:
        num_classes: outputs of the classifier.
        in_channels: image channels (1 for Fashion-MNIST).
        width: channels of the first block; the second has twice as many.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, width),
            _conv_block(width, 2 * width),
            nn.AdaptiveAvgPool2d(4),
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.hidden(self.features(x)))
