"""``crystalgen train``: train the crystal model on a prepared corpus.

The command lives here, not in ``crystalgen.cli``, so that a GPU box without pymatgen
can run it as ``python -m crystalgen.training`` (or ``torchrun ... -m crystalgen.training``)
without importing the other sub-commands; ``crystalgen.cli.train`` re-exports it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click


@click.command("train")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML or JSON training config (default: all defaults, the tiny model).")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Corpus HDF5 written by `crystalgen data prepare`.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: checkpoint.pt, best/ (the best model), train_log.jsonl, config.json.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt if it exists.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config entry, e.g. --set max_minutes=30 "
                   "--set model.backbone_overrides.num_experts=0 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(config_path, data_path, out_dir, resume, device, overrides, quiet) -> None:
    """Train on DATA, writing checkpoints and the best model to OUT.

    Multi-GPU (or multi-process CPU, gloo): launch with
    `torchrun --standalone --nproc_per_node N -m crystalgen.training ...`
    (the same options; `python -m crystalgen.training` needs no pymatgen).
    """
    from crystalgen.training.config import load_config
    from crystalgen.training.loop import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(config_path, list(overrides))
    final = train(config, data_path, out_dir, resume=resume, device=device, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo("validation NLL per head: " + ", ".join(f"{k}={v:.4f}" for k, v in final.items()))
