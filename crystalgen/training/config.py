"""Training configuration: dataclasses loaded from TOML or JSON.

A file has top-level run settings and the tables ``[model]`` (with
``[model.backbone_overrides]`` for any backbone field: ``layer_types``, ``num_experts``,
``position_embedding``, ...), ``[data]`` and ``[optim]``. Missing keys keep their
defaults; unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystalgen.model import CrystalModelConfig


@dataclass
class DataConfig:
    """How the corpus becomes batches."""

    val_fraction: float = 0.05  # held out by a seeded hash of material_id
    split_seed: int = 0  # seed of that hash: runs with different `seed`s hold out the same structures
    gen_fraction: float = 0.25  # share of training sequences written as de novo (<task:gen>)
    drop_fu_fraction: float = 0.3  # share of the csp ones without <fu:k> (composition only)
    spacegroup_fraction: float = 0.2  # share whose prefix names the space group (<sg:N>)
    batch_size: int = 32
    bucket_batches: int = 50  # batches sorted by length together, to cut padding
    max_length: int = 512  # longer sequences are skipped
    augment: bool = False  # each epoch draws one equivalent Wyckoff form per structure
    augment_max_variants: int = 8  # forms encoded per structure (the canonical one included)
    element_set_fraction: float = 0.0  # share of de novo sequences prompted with an element set (<sys:*>)
    source_prompt_fraction: float = 0.0  # share of training sequences whose prefix names their source (<src:NAME>)
    sources: tuple[str, ...] = ()  # train only on corpus rows of these `source` tags (empty: all rows)
    source_repeats: dict[str, int] = field(default_factory=dict)  # {source: k}: its rows k times per epoch


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    """One training run. ``max_steps`` and ``max_minutes`` (0 = unlimited) both bound it;
    the learning-rate schedule follows whichever is further along."""

    model: CrystalModelConfig = field(default_factory=CrystalModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_steps: int = 2000
    max_minutes: float = 0.0
    session_steps: int = 0  # end this session (with a checkpoint) after N steps; schedule unchanged
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 500  # steps
    checkpoint_minutes: float = 10.0
    sample_every: int = 0  # steps between sample -> validate checks (0 = never)
    sample_count: int = 16
    num_threads: int = 2  # CPU threads (torch.set_num_threads)
    bf16: bool = True  # autocast on CUDA
    init_from: str = ""  # warm start: a model folder or checkpoint.pt whose weights start this run

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        sections = {"model": CrystalModelConfig, "data": DataConfig, "optim": OptimConfig}
        kwargs: dict[str, Any] = {}
        for name, section in sections.items():
            if name in d:
                kwargs[name] = _build(section, d.pop(name), name)
        kwargs.update(_checked(cls, d, "top level"))
        return cls(**kwargs)


def _checked(cls, d: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown config keys in {where}: {sorted(unknown)}; known: {sorted(names)}")
    return d


def _build(cls, d: dict[str, Any], where: str):
    d = _checked(cls, dict(d), f"[{where}]")
    for key in ("betas", "sources"):
        if key in d:
            d[key] = (d[key],) if isinstance(d[key], str) else tuple(d[key])
    return cls(**d)


def _parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, list), or the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``dotted.key=value`` entries (e.g. ``model.backbone_overrides.num_experts=0``)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        *parents, last = key.strip().split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = _parse_value(text.strip())
    return d


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a ``.toml`` or ``.json`` config (None: all defaults), then apply ``overrides``."""
    d: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        text = path.read_text()
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return TrainConfig.from_dict(apply_overrides(d, list(overrides or [])))
