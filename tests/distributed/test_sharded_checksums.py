"""Sharded importance folders carry checksums as single files do: damage is refused, by name.

One process writes the folder (rank 0 owns every element without a process group), which
is the same file format the ranks write; tests/distributed/test_sharded.py covers the
resharding across ranks.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ssd_fast
from ssd_fast import Importances
from ssd_fast.distributed import save_sharded

from ..conftest import tiny_batches
from ..core.test_importances_io import _data_offset


@pytest.fixture
def folder(tiny_model, tmp_path):
    imp = ssd_fast.importance(tiny_model, tiny_batches(), progress=False)
    path = tmp_path / "sharded"
    save_sharded(dict(imp), imp.metadata(), path)
    return imp, path, path / "rank00000.safetensors"


def test_an_intact_folder_loads_without_warnings(folder, tiny_model):
    imp, path, _ = folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = Importances.load(path, model=tiny_model)
    assert back.metadata() == imp.metadata() and all(torch.equal(back[k], imp[k]) for k in imp)


def test_a_flipped_data_byte_is_refused_naming_the_block(folder):
    imp, path, file = folder
    raw = bytearray(file.read_bytes())
    raw[_data_offset(bytes(raw), "fc.weight") + 4 * 5] ^= 0x10  # element 5's least significant byte
    file.write_bytes(bytes(raw))
    with safe_open(str(file), framework="pt") as f:  # invisible to safetensors itself
        assert not torch.equal(f.get_tensor("fc.weight"), imp["fc.weight"])
    with pytest.raises(ValueError, match=r"is damaged: block 'fc.weight' does not match the checksum"):
        Importances.load(path)


def test_a_changed_header_is_refused(folder):
    imp, path, file = folder
    raw = file.read_bytes()
    key = f'n_samples\\": {imp.n_samples}'.encode()
    assert raw.count(key) == 1
    file.write_bytes(raw.replace(key, f'n_samples\\": {imp.n_samples + 1}'.encode()[: len(key)]))
    with pytest.raises(ValueError, match="its header does not match the checksum"):
        Importances.load(path)


def test_a_folder_from_before_checksums_loads_with_a_warning(folder):
    imp, path, file = folder
    with safe_open(str(file), framework="pt") as f:
        header = f.metadata()
        blocks = {k: f.get_tensor(k) for k in f.keys()}
    old = {k: header[k] for k in ("format", "meta", "boxes")} | {"version": "1"}  # no checksums
    save_file(blocks, str(file), metadata=old)
    with pytest.warns(UserWarning, match="carries no checksums"):
        back = Importances.load(path)
    assert back.metadata() == imp.metadata() and all(torch.equal(back[k], imp[k]) for k in imp)
