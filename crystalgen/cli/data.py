"""`crystalgen data ...`: data preparation commands (`prepare`; others may add sub-commands here)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(name="data")
def command() -> None:
    """Prepare and inspect crystal-structure data sets."""


@command.command(name="prepare")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="corpus HDF5 file to write")
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def prepare_command(sources: tuple[Path, ...], out: Path, workers: int | None, quiet: bool) -> None:
    """Parse SOURCES (CSV/CSV.gz with a cif column, CIF files or folders, extxyz, matbench json.gz)
    into one corpus HDF5 with symmetry and Wyckoff analysis; prints and saves a drop report."""
    from crystalgen.data.prepare import PrepareConfig, prepare

    out.parent.mkdir(parents=True, exist_ok=True)
    report = prepare(list(sources), out, PrepareConfig(workers=workers, progress=not quiet))
    click.echo(report.text())
    click.echo(f"wrote {out} and {out}.report.json in {report.wall_s:.1f} s")
    if report.file_errors:
        raise SystemExit(1)
