"""Shared test helpers: devices to run on, small models, and model snapshots."""

from __future__ import annotations

import pytest
import torch
from torch import nn

CUDA = torch.cuda.is_available()


def pytest_report_header(config) -> str:
    """Which CPU and vector width ran the tests (see scripts/test.sh, SSD_FAST_TEST_CPU_CAPABILITIES)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu: {model}; torch CPU capability: {torch.backends.cpu.get_cpu_capability()}"


# CPU always; CUDA only where a GPU is present (the device machine), never required.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU"))]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of the full state (parameters and buffers) for bit-exact comparison."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        # equal() treats NaN != NaN, so compare the raw bytes instead
        assert after[k].dtype == v.dtype and after[k].shape == v.shape, k
        assert torch.equal(after[k].detach().cpu().view(-1).view(torch.uint8), v.cpu().view(-1).view(torch.uint8)), k


class TinyCNN(nn.Module):
    """Conv + BatchNorm + dropout + Linear: exercises eval mode and buffers."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(self.drop(x.flatten(1)))


def tiny_batches(n_batches: int = 3, batch: int = 5, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


@pytest.fixture
def tiny_model() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    # non-trivial running statistics, so that eval mode visibly differs from train mode
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model
