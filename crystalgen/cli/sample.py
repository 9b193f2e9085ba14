"""`crystalgen sample`: generate crystals with the shipped (or a given) model."""

from __future__ import annotations

import sys
import time

import click


def _summary_table(results) -> str:
    from crystalgen.evaluation.consistency import consistency_rates
    from crystalgen.validators import CHECK_NAMES

    n = len(results)
    lines = [f"{'check':<18}{'pass rate':>10}"]
    for name in CHECK_NAMES:
        verdicts = [r.report["checks"][name]["pass"] for r in results if r.report and name in r.report["checks"]]
        verdicts = [v for v in verdicts if v is not None]
        if verdicts:
            lines.append(f"{name:<18}{sum(verdicts) / len(verdicts):>10.1%}")
    if n and results[0].report is not None:
        lines.append(f"{'overall':<18}{sum(bool(r.valid) for r in results) / n:>10.1%}")
    rates = consistency_rates([r.trace["consistency"] for r in results if r.trace]) or {}
    for key in ("spacegroup", "composition", "density", "all"):
        if key in rates:
            lines.append(f"{'plan ' + key:<18}{rates[key]:>10.1%}")
    return "\n".join(lines)


@click.command("sample")
@click.option("--formula", help="Composition to generate, e.g. LiFePO4 (Li4Fe4P4O16 fixes 4 formula units).")
@click.option("--chemsys", help="Chemical system, e.g. Li-Fe-P-O: crystals with exactly these elements.")
@click.option("--elements", help="Comma-separated elements the crystals may use, e.g. Li,Fe,O.")
@click.option("--spacegroup", type=click.IntRange(1, 230), help="Space group number to generate in.")
@click.option("--num-atoms", type=click.IntRange(1, 400), help="Atoms in the primitive cell.")
@click.option("-n", "--num", "n", type=click.IntRange(1), default=10, show_default=True, help="How many crystals.")
@click.option("--temperature", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Sampling temperature; 0 takes the most likely choice everywhere.")
@click.option("--seed", type=int, help="Random seed: the same seed gives the same crystals.")
@click.option("--batch-size", type=click.IntRange(1), default=1024, show_default=True,
              help="Sequences decoded together in each process (crystalgen.api.DEFAULT_BATCH_SIZE).")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="Sampling processes for requests over two batches [default: one per core on a CPU, 0 on a GPU]. "
                   "The crystals do not depend on it (beyond float rounding).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False),
              help="Model directory (default: the model shipped with crystalgen).")
@click.option("--out", "out", type=click.Path(dir_okay=True), required=True,
              help="Output: a folder (one CIF each) or a file (.cif, .extxyz, .json, .h5).")
@click.option("--format", "fmt", type=click.Choice(["cif", "extxyz", "json", "h5"]),
              help="Output format (default: from the --out suffix; a folder means cif).")
@click.option("--trace", is_flag=True, help="Print each crystal's reasoning trace.")
@click.option("--only-valid", is_flag=True, help="Keep sampling until n crystals pass every validator check.")
@click.option("--min-distance", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Distance guard (Å): redraw a site's last free coordinate while its atoms would come closer "
                   "than this to atoms already placed; 0 samples the model unguarded.")
def command(formula, chemsys, elements, spacegroup, num_atoms, n, temperature, seed, batch_size, workers, device,
            model_path, out, fmt, trace, only_valid, min_distance) -> None:
    """Generate crystal structures and write them to OUT.

    \b
    Examples:
      crystalgen sample --formula LiFePO4 -n 10 --out lfp/ --trace
      crystalgen sample --chemsys Li-Fe-O -n 100 --out lfo.extxyz
    """
    from crystalgen.api import CrystalGenerator, GenerationRequest, RequestError, SamplingOptions
    from crystalgen.io import write_results

    element_list = [e for e in elements.split(",")] if elements else None
    try:
        gen = CrystalGenerator.from_pretrained(model_path, device=device, workers=workers)
        request = GenerationRequest.build(formula, chemsys, element_list, spacegroup, num_atoms,
                                          max_atoms=gen.max_atoms)
    except (RequestError, FileNotFoundError) as err:
        raise click.UsageError(str(err)) from None
    start = time.perf_counter()
    try:
        options = SamplingOptions(temperature=temperature, seed=seed, batch_size=batch_size, min_distance=min_distance,
                                  validate=True, only_valid=only_valid, progress=sys.stderr.isatty())
        results = gen.generate(request, n, options=options)
    finally:
        gen.close()
    elapsed = time.perf_counter() - start
    if not results:
        raise click.ClickException("the model produced no crystal for this request; nothing written")
    write_results(results, out, fmt)
    if trace:
        for i, r in enumerate(results):
            click.echo(f"--- crystal {i} ({r.structure.composition.reduced_formula}, "
                       f"log-likelihood {r.log_likelihood:.1f})")
            click.echo(r.trace["text"])
    click.echo(_summary_table(results))
    click.echo(f"wrote {len(results)} crystals to {out} (generated and validated in {elapsed:.1f} s, "
               f"written in {time.perf_counter() - start - elapsed:.1f} s)")
    if len(results) < n:
        click.echo(f"warning: only {len(results)} of {n} requested crystals were produced", err=True)
