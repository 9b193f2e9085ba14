"""Model weights as one or several safetensors files, the Hugging Face layout.

A model small enough for one shard is written as ``model.safetensors``; a larger one as
``model-00001-of-0000N.safetensors`` ... plus ``model.safetensors.index.json`` whose
``weight_map`` names the shard of every tensor. Shards stay under a byte limit (15 MiB by
default) so that any model fits through a per-file transfer limit and into git. Weights
may be stored in a narrower float type (bf16 halves the files); reading gives float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from crystalgen.output_paths import umask_mode

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_SHARD_BYTES = 15 * 2**20
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def shard_name(i: int, n: int) -> str:
    """``model-0000i-of-0000n.safetensors`` (1-based), as Hugging Face names shards."""
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def weight_files(directory: str | Path) -> list[Path]:
    """The files holding a saved model: its index's shards, else ``model.safetensors``.

    Raises ``FileNotFoundError`` naming what is missing, so a partly copied model fails
    before any tensor is read.
    """
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are missing: {', '.join(missing)}")
        return [directory / s for s in shards]
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}")


def _plan(state: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Tensor names per shard, in order, each shard under ``max_bytes`` (a single larger
    tensor gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def _save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    """safetensors' ``save_file``, then the mode a plain ``open`` gives under the user's umask
    (safetensors itself creates the file 0600)."""
    save_file(tensors, str(path), metadata=meta)
    os.chmod(path, umask_mode(folder=False))


def save_weights(
    state: dict[str, torch.Tensor],
    directory: str | Path,
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> list[Path]:
    """Write ``state`` into ``directory`` (floats cast to ``dtype``), sharded if it exceeds
    ``max_shard_bytes``; earlier weight files there are removed first. Returns the files."""
    meta = {"format": "pt", "dtype": _dtype_name(dtype)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in [*directory.glob("model*.safetensors"), directory / INDEX_FILE]:
        old.unlink(missing_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu() for k, v in state.items()}
    groups = _plan(state, max_shard_bytes)
    if len(groups) == 1:
        _save(state, directory / SINGLE_FILE, meta)
        return [directory / SINGLE_FILE]
    files, weight_map = [], {}
    for i, names in enumerate(groups, start=1):
        name = shard_name(i, len(groups))
        _save({k: state[k] for k in names}, directory / name, meta)
        weight_map.update(dict.fromkeys(names, name))
        files.append(directory / name)
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total, "dtype": meta["dtype"]}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return files


def load_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model, single-file or sharded, floats upcast to float32."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        for k, v in load_file(str(file), device="cpu").items():
            state[k] = v.float() if v.is_floating_point() else v
    return state


def _dtype_name(dtype: torch.dtype) -> str:
    names = {v: k for k, v in DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"weights can be stored as {sorted(DTYPES)}, not {dtype}")
    return names[dtype]
