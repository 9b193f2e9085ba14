"""`crystalgen info`: the size of a backbone configuration, counted without allocating it;
with ``--model``, that of a saved model and what it was trained to follow."""

from __future__ import annotations

import json
from pathlib import Path

import click

from crystalgen.backbone import PRESETS, count_parameters, get_config

MODEL_KEYS = ("model_type", "vocab_size", "torch_dtype", "source_prompts")  # config.json keys beside the model config


def _model_info(directory: Path) -> tuple[object, dict]:
    """The backbone config of a saved model folder and what its ``config.json`` records."""
    from crystalgen.model import CONFIG_FILE, CrystalModelConfig

    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
        config = CrystalModelConfig.from_dict({k: v for k, v in meta.items() if k not in MODEL_KEYS})
    except (OSError, ValueError, TypeError) as err:
        raise click.BadParameter(f"{directory}: {err}", param_hint="--model") from None
    return config.backbone_config(), {"model": str(directory), "vocab_size": meta.get("vocab_size"),
                                      "source_prompts": list(meta.get("source_prompts", []))}


@click.command("info")
@click.option("--config", "config_name", default="tiny", show_default=True,
              help=f"Backbone preset ({', '.join(PRESETS)}) or a JSON file of config overrides "
                   "(optional key \"base\" names the preset they apply to; default tiny).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A saved model folder instead: its backbone, vocabulary and the data sources its source "
                   "prompts follow (sample --like).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(config_name: str, model_dir: Path | None, as_json: bool) -> None:
    """Print total and active (per-token) parameter counts of a backbone config.

    The model is built on the meta device, so even the 35B intern-s2-preview shape
    costs no memory.
    """
    extra: dict = {}
    if model_dir is not None:
        cfg, extra = _model_info(model_dir)
        config_name = str(model_dir)
    else:
        try:
            cfg = get_config(config_name)
        except (KeyError, ValueError, TypeError) as err:
            raise click.BadParameter(str(err), param_hint="--config") from err
    counts = count_parameters(cfg)
    info = {**counts, "config": config_name, "hidden_size": cfg.hidden_size, "num_experts": cfg.num_experts or 0,
            "num_experts_per_tok": cfg.num_experts_per_tok if cfg.is_moe else 0,
            "position_embedding": cfg.position_embedding, "layer_types": cfg.layer_types, **extra}
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"config            {config_name}")
    click.echo(f"total params      {counts['total_params']:,} ({counts['total_params'] / 1e9:.2f} B)")
    click.echo(f"active params     {counts['active_params']:,} ({counts['active_params'] / 1e9:.2f} B)")
    click.echo(f"embeddings+head   {counts['embedding_params']:,}")
    click.echo(f"MTP module        {counts['mtp_params']:,}")
    click.echo(f"layers            {cfg.num_hidden_layers} ({counts['num_linear_attention_layers']} Gated DeltaNet, "
               f"{counts['num_full_attention_layers']} gated attention)")
    experts = f"{cfg.num_experts} experts, top-{cfg.num_experts_per_tok} + shared" if cfg.is_moe else "dense MLP"
    click.echo(f"mlp               {experts}")
    if model_dir is not None:
        click.echo(f"vocabulary        {extra['vocab_size']} tokens")
        follows = ", ".join(extra["source_prompts"]) or "none (trained without source prompts; sample --like refuses)"
        click.echo(f"source prompts    {follows}")
