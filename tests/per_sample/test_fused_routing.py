"""Routing between the fused per-sample ops and the torch path (ssd_fast.per_sample._fused).

The cost model is fitted to a calibration file like the one gpu_check.sh writes; the
choices are recorded in Importances.per_sample_paths. No GPU and no timing here: the
calibration files are written by the tests with made-up, exactly fitting timings.
"""

from __future__ import annotations

import json

import pytest
import torch

import ssd_fast
from ssd_fast import _ops
from ssd_fast._precision import precision_scope
from ssd_fast.per_sample import _fused

from .support import per_sample, tiny_cnn

needs_kernel = pytest.mark.skipif(
    not _ops.has_per_sample_kernel("cpu"), reason=f"extension not built: {_ops.LOAD_ERROR}"
)


def _timings(fused_rate: float, torch_rate: float, overhead: float) -> list[dict]:
    """Rows with times exactly fused = overhead + flops / fused_rate, torch = flops / torch_rate."""
    rows = []
    for shape in [(8, 64, 576, 1024), (32, 128, 1152, 256), (256, 512, 4608, 16), (4, 16, 27, 64)]:
        flops = 2.0 * shape[0] * shape[1] * shape[2] * shape[3]
        rows.append({"shape": list(shape), "fused_s": overhead + flops / fused_rate, "torch_s": flops / torch_rate})
    return rows


def test_cost_model_prefers_the_path_it_predicts_faster():
    # fused: 10 us overhead at 20 TFLOP/s; torch: no overhead at 5 TFLOP/s. Break-even at
    # flops = 1e-5 / (1 / 5e12 - 1 / 2e13) ~ 6.7e7
    calibration = _fused.Calibration({"device": "GPU", "timings": {"conv2d/exact": _timings(2e13, 5e12, 1e-5)}})
    assert calibration.fused_is_faster("conv2d", "exact", (64, 256, 2304, 64))  # 4.8e9 flops
    assert not calibration.fused_is_faster("conv2d", "exact", (1, 8, 9, 16))  # 2.3e3 flops
    assert not calibration.fused_is_faster("tokens", "exact", (64, 256, 2304, 64))  # never measured
    assert not calibration.fused_is_faster("conv2d", "bf16", (64, 256, 2304, 64))


def test_a_bad_calibration_file_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring the per-sample calibration"):
        assert _fused.load_calibration(path) is None
    path.write_text(json.dumps({"version": 999, "device": "x", "timings": {}}))
    with pytest.warns(UserWarning, match="version 999"):
        assert _fused.load_calibration(path) is None
    assert _fused.load_calibration(tmp_path / "missing.json") is None


def test_calibration_path_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(_fused.CALIBRATION_ENV, str(tmp_path / "c.json"))
    assert _fused.calibration_path() == tmp_path / "c.json"


def test_pass_precision_follows_operands_and_tf32_switch(monkeypatch):
    f32, bf16 = torch.zeros(2), torch.zeros(2, dtype=torch.bfloat16)
    assert _fused.pass_precision(bf16, bf16) == "bf16"
    monkeypatch.setattr(_fused, "_tf32_allowed", lambda: True)
    assert _fused.pass_precision(f32, f32) == "tf32"
    assert _fused.pass_precision(f32.double(), f32.double()) == "exact"
    monkeypatch.setattr(_fused, "_tf32_allowed", lambda: False)
    assert _fused.pass_precision(f32, f32) == "exact"


@pytest.mark.parametrize("precision,allowed", [("exact", False), ("tf32", True)])
def test_the_pass_precision_scope_sets_what_routing_reads(precision, allowed):
    with precision_scope(precision, "cuda"):
        assert _fused._tf32_allowed() == allowed


@needs_kernel
@pytest.mark.parametrize("enabled", [True, False], ids=["fused", "torch"])
def test_importances_record_the_path_of_each_layer(enabled, monkeypatch):
    monkeypatch.setattr(_fused, "enabled", enabled)
    torch.manual_seed(0)
    model = tiny_cnn()
    x, y = torch.randn(6, 3, 9, 9), torch.randint(0, 3, (6,))
    got = per_sample(model, x, y)
    assert got.per_sample_paths, "a per_sample pass over conv layers records its paths"
    convs = {k: v for k, v in got.per_sample_paths.items() if k.startswith("conv2d ")}
    assert convs
    assert set(convs.values()) == ({"fused/exact"} if enabled else {"torch"})
    assert got.metadata()["per_sample_paths"] == got.per_sample_paths


@needs_kernel
def test_recorded_paths_survive_save_and_load(tmp_path):
    torch.manual_seed(0)
    got = per_sample(tiny_cnn(), torch.randn(4, 3, 9, 9), torch.randint(0, 3, (4,)))
    got.save(tmp_path / "imp.safetensors")
    assert ssd_fast.Importances.load(tmp_path / "imp.safetensors").per_sample_paths == got.per_sample_paths


@needs_kernel
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_cpu_ops_take_every_precision_and_compute_exact(precision):
    torch.manual_seed(0)
    dy, x = torch.randn(3, 5, 7), torch.randn(3, 5, 6)
    want, got = torch.zeros(7, 6), torch.zeros(7, 6)
    _ops.per_sample_sq_tokens_(want, dy, x, 1.0, False)
    _ops.per_sample_sq_tokens_(got, dy, x, 1.0, False, precision)
    assert torch.equal(got, want)


@needs_kernel
def test_ops_refuse_an_unknown_precision():
    with pytest.raises(RuntimeError, match='precision must be "exact", "tf32" or "bf16", got "fp8"'):
        _ops.per_sample_sq_tokens_(torch.zeros(2, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 1.0, False, "fp8")
    with pytest.raises(RuntimeError, match="precision must be"):
        _ops.per_sample_sq_conv2d_(
            torch.zeros(2, 1, 1, 1),
            torch.zeros(1, 2, 1, 1),
            torch.zeros(1, 1, 1, 1),
            (1, 1),
            (0, 0),
            (1, 1),
            1,
            1.0,
            False,
            "half",
        )
