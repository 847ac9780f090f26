"""The radix selection behind sharded alpha='auto', in one process, against a sort."""

from __future__ import annotations

import pytest
import torch

from ssd_fast.auto_alpha import _percentile
from ssd_fast.distributed._select import _keys, _value, sharded_percentile


def test_keys_order_like_the_floats_and_decode_exactly():
    values = torch.tensor([-3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1e-38, 0.5, 1.0, 3e38])
    keys = _keys(values)
    assert torch.equal(torch.sort(keys).values, keys)  # already in float order
    assert [_value(int(k)) for k in keys] == values.tolist()


@pytest.mark.parametrize("q", [0.0, 12.5, 50.0, 99.0, 99.937, 100.0])
def test_percentile_equals_sorting_every_ratio(q):
    g = torch.Generator().manual_seed(3)
    f = [torch.rand(40, 7, generator=g), torch.rand(13, generator=g), torch.zeros(5)]
    d = [torch.rand(40, 7, generator=g), torch.rand(13, generator=g), torch.rand(5, generator=g)]
    f[0][0, :4] = 1e-40  # denormal ratios
    d[0][1, :3] = 0  # inf and NaN ratios are left out
    f[1][:6] = f[1][6:12]  # ties
    d[1][:6] = d[1][6:12]
    ratios = torch.cat([(a / b).flatten() for a, b in zip(f, d)])
    want = _percentile(ratios[torch.isfinite(ratios)], q)
    assert sharded_percentile(list(zip(f, d)), q) == want


def test_no_finite_ratio_gives_none():
    assert sharded_percentile([(torch.ones(3), torch.zeros(3))], 50.0) is None
