"""Importances: validation at construction, and safetensors files that load without running code."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ssd_fast
from ssd_fast import Importances

from ..conftest import TinyCNN, tiny_batches


@pytest.fixture
def imp(tiny_model):
    return ssd_fast.importance(tiny_model, tiny_batches(), progress=False)


def test_round_trip_keeps_values_and_metadata(imp, tiny_model, tmp_path):
    path = tmp_path / "model.importance.safetensors"
    imp.save(path)
    back = Importances.load(path, model=tiny_model)
    assert back.metadata() == imp.metadata()
    assert set(back) == set(imp)
    assert all(torch.equal(back[k], imp[k]) for k in imp)


def test_loaded_importances_dampen_like_the_originals(imp, tiny_model, tmp_path):
    import copy

    imp.save(tmp_path / "full.safetensors")
    forget = ssd_fast.importance(tiny_model, tiny_batches(1, 2, seed=3), progress=False)
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    ra = ssd_fast.dampen(a, forget, imp, alpha=1.0)
    rb = ssd_fast.dampen(b, forget, Importances.load(tmp_path / "full.safetensors"), alpha=1.0)
    assert ra.per_layer() == rb.per_layer()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_truncated_file_is_a_clear_error(imp, tmp_path):
    path = tmp_path / "broken.safetensors"
    imp.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Importances.load(path)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Importances.load(path)


def test_pickle_file_is_refused_not_executed(imp, tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(dict(imp), path)  # a pickle: loading it could run code, so we never do
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Importances.load(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(ValueError, match="not one written by ssd_fast"):
        Importances.load(path)


@pytest.mark.filterwarnings("ignore:.*carries no checksums")  # hand-made version-1 files
def test_damaged_metadata_is_refused(imp, tmp_path):
    path = tmp_path / "meta.safetensors"
    save_file(
        {k: v.contiguous() for k, v in imp.items()},
        str(path),
        metadata={"format": "ssd_fast.importances", "version": "1", "meta": "{not json"},
    )
    with pytest.raises(ValueError, match="damaged metadata"):
        Importances.load(path)


@pytest.mark.filterwarnings("ignore:.*carries no checksums")  # hand-made version-1 files
def test_file_with_nan_is_refused(imp, tmp_path):
    path = tmp_path / "nan.safetensors"
    tensors = {k: v.clone() for k, v in imp.items()}
    tensors["fc.bias"][0] = float("nan")
    save_file(tensors, str(path), metadata={"format": "ssd_fast.importances", "version": "1", "meta": "{}"})
    with pytest.raises(ValueError, match="NaN or inf"):
        Importances.load(path)


def test_file_for_another_model_is_refused(imp, tmp_path):
    imp.save(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="'fc.weight' has shape"):
        Importances.load(tmp_path / "a.safetensors", model=TinyCNN(classes=7))
    renamed = torch.nn.Sequential(TinyCNN())
    with pytest.raises(ValueError, match="do not match the model"):
        Importances.load(tmp_path / "a.safetensors", model=renamed)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Importances.load(tmp_path / "nope.safetensors")


def test_construction_validates_and_converts_to_fp32():
    imp = Importances({"w": torch.ones(3, dtype=torch.float16)}, n_samples=4)
    assert imp["w"].dtype == torch.float32 and imp.n_samples == 4
    with pytest.raises(ValueError, match="NaN or inf"):
        Importances({"w": torch.tensor([1.0, float("inf")])})
    with pytest.raises(ValueError, match="negative"):
        Importances({"w": torch.tensor([1.0, -1.0])})
    with pytest.raises(ValueError, match="mode must be"):
        Importances({"w": torch.ones(1)}, mode="exact")
    with pytest.raises(ValueError, match="n_samples"):
        Importances({"w": torch.ones(1)}, n_samples=-1)
    with pytest.raises(TypeError, match="names must be str"):
        Importances({1: torch.ones(1)})
    with pytest.raises(TypeError, match="mapping"):
        Importances([torch.ones(1)])


def test_is_read_only_mapping(imp):
    with pytest.raises(TypeError):
        imp["fc.bias"] = torch.zeros(3)
    assert "fc.bias" in imp and len(imp) == len(list(imp)) and "Importances(" in repr(imp)


def test_to_moves_and_keeps_metadata(imp):
    moved = imp.to("cpu")
    assert moved.metadata() == imp.metadata() and moved is not imp


def _data_offset(raw: bytes, name: str) -> int:
    """Where tensor `name`'s bytes start in a safetensors file (8-byte header length, JSON header, data)."""
    n = int.from_bytes(raw[:8], "little")
    return 8 + n + json.loads(raw[8 : 8 + n])[name]["data_offsets"][0]


def test_a_flipped_data_byte_is_refused_naming_the_tensor(imp, tmp_path):
    """A flip in a value's low mantissa byte changes it by ~1e-7 relative: no NaN, no sign change, so
    only the checksum can tell (the issue's 0.0014481494 -> 0.0014481295 was such a flip)."""
    path = tmp_path / "flipped.safetensors"
    imp.save(path)
    raw = bytearray(path.read_bytes())
    at = _data_offset(bytes(raw), "fc.weight") + 4 * 5  # element 5, its least significant byte (little-endian)
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))
    with safe_open(str(path), framework="pt") as f:  # the damage is invisible to safetensors itself
        changed = f.get_tensor("fc.weight")
    assert torch.isfinite(changed).all() and (changed >= 0).all() and not torch.equal(changed, imp["fc.weight"])
    with pytest.raises(ValueError, match=r"is damaged: tensor 'fc.weight' does not match the checksum"):
        Importances.load(path)


def test_a_flipped_metadata_byte_is_refused(imp, tmp_path):
    path = tmp_path / "meta_flipped.safetensors"
    imp.save(path)
    raw = path.read_bytes()
    key = f'n_samples\\": {imp.n_samples}'.encode()  # the metadata is JSON text inside the JSON header
    assert raw.count(key) == 1
    damaged = raw.replace(key, f'n_samples\\": {imp.n_samples + 1}'.encode()[: len(key)])
    assert len(damaged) == len(raw) and damaged != raw
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match="is damaged: its metadata does not match the checksum"):
        Importances.load(path)


def test_saved_files_record_checksums_and_load_without_warnings(imp, tmp_path):
    path = tmp_path / "ok.safetensors"
    imp.save(path)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    assert header["version"] == "2" and set(json.loads(header["tensor_sha256"])) == set(imp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Importances.load(path)


def test_files_from_before_checksums_load_with_a_note(imp, tmp_path):
    path = tmp_path / "v1.safetensors"
    header = {"format": "ssd_fast.importances", "version": "1", "meta": json.dumps(imp.metadata())}
    save_file({k: v.contiguous() for k, v in imp.items()}, str(path), metadata=header)
    with pytest.warns(UserWarning, match="carries no checksums"):
        back = Importances.load(path)
    assert back.metadata() == imp.metadata() and all(torch.equal(back[k], imp[k]) for k in imp)
