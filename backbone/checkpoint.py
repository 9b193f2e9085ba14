"""Load Hugging Face-style safetensors checkpoints by parameter name.

Real Qwen3.5-MoE / Intern-S2 checkpoints store the text model under
``model.language_model.*`` (next to a vision tower, which is skipped) and each routed
expert separately (``mlp.experts.<e>.{gate,up,down}_proj.weight``); this module maps
those onto :class:`CausalLM` (stacked ``experts.gate_up_proj`` / ``experts.down_proj``),
one tensor at a time, so a sharded 35B checkpoint loads without a second copy.
Saved buffers (FoPE's ``rotary_emb.cos_coef`` / ``sin_coef``) are filled and required
like parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .shards import INDEX_FILE, SINGLE_FILE, weight_files

_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_SKIPPED_PREFIXES = ("model.visual.", "visual.", "model.vision_tower.", "vision_tower.")


@dataclass
class LoadReport:
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # model parameters the checkpoint did not fill
    unexpected: list[str] = field(default_factory=list)  # checkpoint tensors with no home
    skipped: int = 0  # vision-tower tensors, ignored on purpose


def checkpoint_files(path: str | Path) -> list[Path]:
    """A .safetensors file, or a directory with one or a sharded ``*.index.json``."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / INDEX_FILE).is_file() or (path / SINGLE_FILE).is_file():
        return weight_files(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors checkpoint in {path}")
    return files


def _normalise(name: str) -> str:
    return "model." + name[len("model.language_model."):] if name.startswith("model.language_model.") else name


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict in the original checkpoint layout (one tensor per expert projection)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("experts.gate_up_proj"):
            base = name[: -len(".gate_up_proj")]
            for e, w in enumerate(tensor):
                gate, up = w.chunk(2, dim=0)
                out[f"{base}.{e}.gate_proj.weight"] = gate.contiguous()
                out[f"{base}.{e}.up_proj.weight"] = up.contiguous()
        elif name.endswith("experts.down_proj"):
            base = name[: -len(".down_proj")]
            for e, w in enumerate(tensor):
                out[f"{base}.{e}.down_proj.weight"] = w.contiguous()
        else:
            out[name] = tensor.contiguous()
    return out


@torch.no_grad()
def load_hf_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Copy tensors from ``path`` into ``model`` (a ``CausalLM``) by name.

    ``strict`` raises when a model parameter stays unfilled or a tensor has no home.
    """
    params = _tensors(model)
    report = LoadReport()
    filled: set[str] = set()
    for file in checkpoint_files(path):
        with safe_open(str(file), framework="pt") as f:
            for raw in f.keys():
                if raw.startswith(_SKIPPED_PREFIXES):
                    report.skipped += 1
                    continue
                name = _normalise(raw)
                target, dest = _destination(params, name)
                if target is None:
                    report.unexpected.append(raw)
                    continue
                src = f.get_tensor(raw)
                if dest.shape != src.shape:
                    raise ValueError(f"{raw}: checkpoint shape {tuple(src.shape)} != model {tuple(dest.shape)}")
                dest.copy_(src)
                filled.add(target if _EXPERT.match(name) is None else f"{target}#{name}")
                report.loaded += 1
    expected = _expected_names(model)
    report.missing = sorted(expected - filled)
    if strict and (report.missing or report.unexpected):
        raise KeyError(f"checkpoint mismatch: missing {report.missing[:5]}..., unexpected {report.unexpected[:5]}...")
    return report


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint holds: parameters (a tied one once) and persistent buffers."""
    aliases = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {name: t for name, t in model.state_dict().items() if name not in aliases}
    return {**{name: p.data for name, p in model.named_parameters()}, **buffers}


def _destination(params: dict[str, torch.Tensor], name: str) -> tuple[str | None, torch.Tensor | None]:
    """The model tensor (and the slice of it) that checkpoint tensor ``name`` fills."""
    if name in params:
        return name, params[name]
    m = _EXPERT.match(name)
    if m is None:
        return None, None
    base, e, proj = m.group(1), int(m.group(2)), m.group(3)
    if proj == "down_proj":
        target = f"{base}.down_proj"
        return (target, params[target][e]) if target in params else (None, None)
    target = f"{base}.gate_up_proj"
    if target not in params:
        return None, None
    w = params[target][e]
    half = w.shape[0] // 2
    return target, (w[:half] if proj == "gate_proj" else w[half:])


def _expected_names(model: nn.Module) -> set[str]:
    """Everything a full checkpoint must fill: plain parameters, and each expert slice."""
    names: set[str] = set()
    for name, p in _tensors(model).items():
        if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            base = name.rsplit(".", 1)[0]
            projs = ("gate_proj", "up_proj") if name.endswith("gate_up_proj") else ("down_proj",)
            names |= {f"{name}#{base}.{e}.{pr}.weight" for e in range(p.shape[0]) for pr in projs}
        else:
            names.add(name)
    return names
