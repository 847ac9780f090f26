"""Saving and loading sharded (DTensor) importances: safetensors, one file per rank.

Why not torch.distributed.checkpoint: its metadata file is read with pickle, and
`Importances.load` promises to execute no code. Safetensors is the format of unsharded
importances already, and keeps that promise. What DCP would add, resharding, is kept:
each file's header records, for every tensor it holds, the global shape and where its
block starts, so a rank can load onto any sharding (another world size, or the plain
model) by reading only the parts of the blocks that overlap its own shard. Each element
is written once: by the rank that owns it (see _sharded.owns).

Version 2 adds what unsharded files carry (`ssd_fast/_checksums.py`): a SHA-256 of each
block and of the header's text. A block any part of which a rank needs is read whole and
checked before use; version 1 folders still load, with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .._checksums import tensor_digest, text_digest
from ._group import active, barrier
from ._sharded import fp32_zeros_like, is_dtensor, local, owns

FORMAT = "ssd_fast.importances.sharded"
VERSION = "2"
UNCHECKED_VERSION = "1"  # before checksums: still read, with a warning
Box = tuple[tuple[int, ...], tuple[int, ...]]  # (global shape, offset of the block)


def _block(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """This rank's block of `t` and its offset in the global tensor."""
    if not is_dtensor(t):
        return t, (0,) * t.dim()
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return local(t), tuple(offset)


def save_sharded(tensors: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> None:
    """Write `path/rank<r>.safetensors` on every rank (a collective: every rank calls it)."""
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    rank = dist.get_rank() if active() else 0
    blocks, boxes = {}, {}
    for name, t in tensors.items():
        if owns(t):
            block, offset = _block(t)
            blocks[name] = block.detach().to("cpu", torch.float32).contiguous().clone()
            boxes[name] = [list(t.shape), list(offset)]
    header = {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta), "boxes": json.dumps(boxes)}
    header["header_sha256"] = text_digest(header["meta"] + header["boxes"])
    header["tensor_sha256"] = json.dumps({name: tensor_digest(block) for name, block in blocks.items()})
    save_file(blocks, os.fspath(folder / f"rank{rank:05d}.safetensors"), metadata=header)
    barrier()


class _File:
    """One rank's file: its path, metadata, boxes, and (version 2) recorded block checksums."""

    def __init__(self, path: Path, header: dict[str, str]):
        self.path, self.version = path, header.get("version")
        if header.get("format") != FORMAT or self.version not in (VERSION, UNCHECKED_VERSION):
            raise ValueError(
                f"not written by ssd_fast.distributed.save_sharded (versions {UNCHECKED_VERSION}, {VERSION})"
            )
        if self.version == VERSION and header.get("header_sha256") != text_digest(header["meta"] + header["boxes"]):
            raise ValueError("its header does not match the checksum recorded when it was saved")
        self.meta = json.loads(header["meta"])
        self.boxes: dict[str, Box] = {n: (tuple(s), tuple(o)) for n, (s, o) in json.loads(header["boxes"]).items()}
        self.digests = json.loads(header["tensor_sha256"]) if self.version == VERSION else None
        if self.digests is not None and set(self.digests) != set(self.boxes):
            raise ValueError("its list of block checksums does not name the blocks it holds")

    def part(self, f, name: str, src: tuple[slice, ...]) -> torch.Tensor:
        """`src` of `name`'s block. A checked file's block is read whole, once per load (each
        rank's part of each name is filled once), and compared with its recorded checksum
        before any of it is used; an unchecked one's part is read alone."""
        if self.digests is None:
            return f.get_slice(name)[src] if src else f.get_tensor(name)
        block = f.get_tensor(name)
        if tensor_digest(block) != self.digests[name]:
            raise ValueError(
                f"{os.fspath(self.path)!r} is damaged: block {name!r} does not match the checksum recorded when it "
                "was saved (its bytes changed); recompute the importances or use an intact copy"
            )
        return block[src]


def _read_headers(folder: Path) -> list[_File]:
    from safetensors import safe_open

    files = sorted(folder.glob("rank*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{os.fspath(folder)!r} holds no rank*.safetensors files of sharded importances")
    out = []
    for file in files:
        try:
            with safe_open(os.fspath(file), framework="pt") as f:
                out.append(_File(file, f.metadata() or {}))
        except Exception as e:  # safetensors raises several types for a damaged file
            raise ValueError(f"{os.fspath(file)!r} is not a readable sharded importance file ({e})") from e
    if any(f.digests is None for f in out):
        warnings.warn(
            f"{os.fspath(folder)!r} was written by an earlier ssd_fast (sharded importance version "
            f"{UNCHECKED_VERSION}) and carries no checksums, so damage to its values cannot be detected; "
            "save it again to add them",
            UserWarning,
            stacklevel=4,
        )
    return out


def _target(name: str, shape: tuple[int, ...], param: torch.Tensor | None, device: torch.device | str):
    """The tensor to fill for `name`, and the offset and shape of the part this rank holds."""
    if param is not None and is_dtensor(param):
        if tuple(param.shape) != shape:
            raise ValueError(f"sharded importance {name!r} has shape {shape}, the parameter has {tuple(param.shape)}")
        target = fp32_zeros_like(param)
        block, offset = _block(target)
        return target, block, offset
    target = torch.zeros(shape, dtype=torch.float32, device=device)
    return target, target, (0,) * len(shape)


def _fill(block: torch.Tensor, offset: tuple[int, ...], name: str, sources: list[tuple[_File, Box]]) -> int:
    """Copy into `block` every overlapping part of the stored blocks; returns elements copied."""
    from safetensors import safe_open

    copied = 0
    for file, (_, src_offset) in sources:
        with safe_open(os.fspath(file.path), framework="pt") as f:
            src_shape = f.get_slice(name).get_shape()
            lo = [max(a, b) for a, b in zip(offset, src_offset)]
            hi = [min(a + n, b + m) for a, n, b, m in zip(offset, block.shape, src_offset, src_shape)]
            if any(h <= low for low, h in zip(lo, hi)) and block.dim():
                continue
            src = tuple(slice(low - b, h - b) for low, h, b in zip(lo, hi, src_offset))
            dst = tuple(slice(low - a, h - a) for low, h, a in zip(lo, hi, offset))
            part = file.part(f, name, src)
            block[dst].copy_(part)
            copied += part.numel()
    return copied


def load_sharded(
    path: str | os.PathLike, model: nn.Module | None, device: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata from a folder written by `save_sharded`, on any sharding.

    A name whose parameter in `model` is a DTensor loads as a DTensor sharded like it,
    reading only this rank's part; any other name loads whole onto `device`. Executes no code.
    """
    headers = _read_headers(Path(path))
    params = dict(model.named_parameters()) if model is not None else {}
    sources: dict[str, list[tuple[_File, Box]]] = {}
    for file in headers:
        for name, box in file.boxes.items():
            sources.setdefault(name, []).append((file, box))
    tensors = {}
    for name, parts in sources.items():
        target, block, offset = _target(name, parts[0][1][0], params.get(name), device)
        with torch.no_grad():
            copied = _fill(block, offset, name, parts)
        if copied != block.numel():
            raise ValueError(
                f"{os.fspath(path)!r} covers {copied} of the {block.numel()} values of {name!r} this rank needs"
            )
        tensors[name] = target
    return tensors, headers[0].meta
