"""`crystalgen info`: the size of a backbone configuration, counted without allocating it."""

from __future__ import annotations

import json

import click

from crystalgen.backbone import PRESETS, count_parameters, get_config


@click.command("info")
@click.option("--config", "config_name", default="tiny", show_default=True,
              help=f"Backbone preset ({', '.join(PRESETS)}) or a JSON file of config overrides "
                   "(optional key \"base\" names the preset they apply to; default tiny).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(config_name: str, as_json: bool) -> None:
    """Print total and active (per-token) parameter counts of a backbone config.

    The model is built on the meta device, so even the 35B intern-s2-preview shape
    costs no memory.
    """
    try:
        cfg = get_config(config_name)
    except (KeyError, ValueError, TypeError) as err:
        raise click.BadParameter(str(err), param_hint="--config") from err
    counts = count_parameters(cfg)
    info = {**counts, "config": config_name, "hidden_size": cfg.hidden_size, "num_experts": cfg.num_experts or 0,
            "num_experts_per_tok": cfg.num_experts_per_tok if cfg.is_moe else 0,
            "position_embedding": cfg.position_embedding, "layer_types": cfg.layer_types}
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
