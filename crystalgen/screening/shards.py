"""Splitting a run into shards, their seeds, and their files on disk.

A shard is a fixed slice of one target's candidates. Its seed depends only on the run
seed, the target and the shard index (hashed with SHA-256, never Python's salted
``hash()``), so any process, on any machine, in any order, regenerates the same shard.
Each finished shard is written to ``RUN_DIR/shards/`` atomically (temporary file in the
same folder, then ``os.replace``): a file there is always complete, so a restarted run
simply skips the shards whose file exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystalgen.output_paths import umask_mode
from crystalgen.screening.config import ScreenConfig


@dataclass(frozen=True)
class ShardSpec:
    """What one shard generates: ``count`` candidates for target ``target_index``."""

    target_index: int
    shard_index: int
    count: int
    seed: int

    @property
    def key(self) -> str:
        return f"t{self.target_index:03d}-s{self.shard_index:04d}"


def shard_seed(run_seed: int, target: str, shard_index: int) -> int:
    """A 63-bit seed, stable across processes and Python versions."""
    digest = hashlib.sha256(f"{run_seed}|{target}|{shard_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def plan_shards(config: ScreenConfig) -> list[ShardSpec]:
    """All shards of a run, in a fixed order (target, then shard index)."""
    shards = []
    size = config.run.shard_size
    for t_idx, target in enumerate(config.targets):
        for s_idx, start in enumerate(range(0, target.candidates, size)):
            count = min(size, target.candidates - start)
            shards.append(ShardSpec(t_idx, s_idx, count, shard_seed(config.run.seed, target.name, s_idx)))
    return shards


def shard_path(run_dir: Path, spec: ShardSpec) -> Path:
    return Path(run_dir) / "shards" / f"{spec.key}.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, umask_mode(folder=False))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_shard(run_dir: Path, spec: ShardSpec, payload: dict[str, Any]) -> Path:
    path = shard_path(run_dir, spec)
    atomic_write_bytes(path, json.dumps(payload).encode())
    return path


def read_shard(run_dir: Path, spec: ShardSpec) -> dict[str, Any] | None:
    """The finished shard's payload, or None if it has not been written yet."""
    path = shard_path(run_dir, spec)
    if not path.exists():
        return None
    with open(path) as fh:
        return json.load(fh)
