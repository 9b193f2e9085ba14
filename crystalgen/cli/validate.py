"""`crystalgen validate PATH... [--json OUT]`: check structures and print pass rates.

PATH may be CIF files, folders of CIFs (read with their subfolders), CSV/CSV.gz
files with a `cif` column, extxyz or matbench json.gz files. An unreadable file or
entry is reported on stderr and skipped; the exit status is 1 if anything could not
be read, or if no structure was found at all.
The JSON shape (`summary`, `structures`) is read by other tools: keep it stable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from crystalgen.data.readers import ReaderError, read_structures_parallel
from crystalgen.output_paths import OutputError, check_output_file
from crystalgen.validators import CHECK_NAMES, validate_many


def _format_rate(rate: float | None) -> str:
    return "   n/a" if rate is None else f"{100 * rate:6.1f}%"


def print_table(summary: dict[str, Any]) -> None:
    """A plain pass-rate table: one row per check, the overall verdict, and the two distance rules
    (CDVAE's 0.5 Å `structural_validity` for literature comparisons, the `physical_validity` in use)."""
    labels = {"pass": "overall", "structural_validity": "structural (CDVAE)", "physical_validity": "physical"}
    click.echo(f"{'check':<18} {'pass rate':>9}")
    for name in (*CHECK_NAMES, "pass", "structural_validity", "physical_validity"):
        click.echo(f"{labels.get(name, name):<18} {_format_rate(summary.get(name)):>9}")
    click.echo(f"{'structures':<18} {summary['n']:>9}")


@click.command(name="validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="write the full report as JSON")
@click.option("--workers", type=int, default=None, help="processes to validate with (default: all cores)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--overwrite", is_flag=True, help="replace an existing --json file (refused otherwise)")
def command(paths: tuple[Path, ...], json_out: Path | None, workers: int | None, quiet: bool, overwrite: bool) -> None:
    """Validate crystal structures (distances, lattice, SMACT charge neutrality, symmetry)."""
    if json_out is not None:
        try:
            check_output_file(json_out, overwrite)
        except OutputError as err:
            raise click.ClickException(str(err)) from None
    ids, structures, errors = [], [], []
    for path in paths:
        try:
            for record in read_structures_parallel(path, workers):
                if record.error is not None:
                    errors.append({"path": str(path), "id": record.id, "error": record.error})
                    click.echo(f"error: {path} [{record.id}]: {record.error}", err=True)
                else:
                    ids.append(record.id)
                    structures.append(record.structure)
        except ReaderError as exc:
            errors.append({"path": str(path), "id": None, "error": str(exc)})
            click.echo(f"error: {exc}", err=True)

    if not structures:
        click.echo(f"error: no structures found in {', '.join(str(p) for p in paths)}", err=True)
        sys.exit(1)
    batch = validate_many(structures, workers=workers, progress=not quiet)
    print_table(batch.summary)
    if errors:
        click.echo(f"{len(errors)} file(s) or entries could not be read (see above)", err=True)
    if json_out is not None:
        document = {
            "summary": batch.summary,
            "structures": [{"id": i, **r.as_dict()} for i, r in zip(ids, batch.reports)],
            "errors": errors,
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=1, default=_json_default))
        click.echo(f"wrote {json_out}")
    sys.exit(1 if errors else 0)


def _json_default(value: Any) -> Any:
    """numpy scalars and other stragglers as plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
