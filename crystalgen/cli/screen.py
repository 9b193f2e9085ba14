"""`crystalgen screen CONFIG.toml --out RUN_DIR`: the high-throughput screening funnel."""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command("screen")
@click.argument("config_path", metavar="CONFIG.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder; an existing one with the same config is resumed (finished shards are skipped).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where shards run: local worker processes, or a Ray cluster (extra: crystalgen[ray]).")
@click.option("--address", default=None,
              help="Ray cluster address (e.g. 'auto' or 'ray://host:10001'); without it a local Ray instance is started.")
@click.option("--workers", type=int, default=None, help="Parallel shards (default: [run] workers of the config).")
@click.option("--dry-run", is_flag=True, help="List the shards and their seeds, run nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars (there are none when stderr is not a terminal).")
@click.option("--overwrite", is_flag=True,
              help="Run in an existing folder that holds other files (they are kept; only the run's own names are written).")
def command(config_path: Path, run_dir: Path, executor: str, address: str | None, workers: int | None,
            dry_run: bool, quiet: bool, overwrite: bool) -> None:
    """Sample, validate, deduplicate, check novelty, rank and export candidates for the targets in CONFIG.toml.

    Writes RUN_DIR/screen.h5 (all candidates, traces, reports, scores), summary.csv, funnel.csv,
    cifs/ (top candidates), and funnel/scores/spacegroups PNG plots. Killed runs resume where they stopped;
    Ctrl-C stops the workers, keeps the finished shards and exits with code 130.
    """
    from crystalgen.output_paths import OutputError, check_output_folder
    from crystalgen.screening.config import ScreenConfig
    from crystalgen.screening.outputs import funnel_markdown
    from crystalgen.screening.pipeline import run_screen
    from crystalgen.screening.shards import plan_shards, shard_path

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = ScreenConfig.from_toml(config_path)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="CONFIG.toml") from exc

    if dry_run:
        for spec in plan_shards(config):
            done = "done" if shard_path(run_dir, spec).exists() else "todo"
            click.echo(f"{spec.key}  {config.targets[spec.target_index].name:<16} n={spec.count:<4} "
                       f"seed={spec.seed}  {done}")
        return

    try:
        if not (run_dir / "config.json").is_file():  # a run folder is resumed; anything else must be new or empty
            check_output_folder(run_dir, overwrite)
    except OutputError as err:
        raise click.ClickException(str(err)) from None
    try:
        result = run_screen(config, run_dir, executor=executor, address=address, workers=workers,
                            progress=not quiet)
    except OutputError as err:  # another live run holds the folder
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        specs = plan_shards(config)
        done = sum(shard_path(run_dir, s).exists() for s in specs)
        click.echo(f"interrupted: {done} of {len(specs)} shards are finished in {run_dir}; "
                   f"the same command resumes the run", err=True)
        raise SystemExit(130) from None
    click.echo(funnel_markdown(result.funnel))
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
    click.echo(f"{result.shards_run} shards run; seconds per stage: {stages}")
    click.echo(f"outputs in {run_dir}")
