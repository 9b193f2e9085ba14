"""`crystalgen sample`: generate crystals with the shipped (or a given) model."""

from __future__ import annotations

import time
from collections import Counter

import click


class _Tally:
    """What the summary table needs from every crystal, counted as chunks go by (the
    crystals themselves are written out and dropped)."""

    def __init__(self) -> None:
        self.n = self.valid = 0
        self.validated = False
        self.checks: dict[str, list[int]] = {}  # check -> [passed, judged]
        self.plan: dict[str, list[int]] = {}  # aspect -> [consistent, planned]

    def add(self, results) -> None:
        from crystalgen.evaluation.consistency import consistency_rates

        for r in results:
            self.n += 1
            if r.report is None:
                continue
            self.validated = True
            self.valid += bool(r.valid)
            for name, check in r.report["checks"].items():
                if check["pass"] is not None:
                    tally = self.checks.setdefault(name, [0, 0])
                    tally[0] += bool(check["pass"])
                    tally[1] += 1
        per_crystal = [r.trace["consistency"] for r in results if r.trace and "consistency" in r.trace]
        for aspect, rate in (consistency_rates(per_crystal) or {}).items():
            planned = sum(bool(e) if aspect == "all" else aspect in (e or {}) for e in per_crystal)
            tally = self.plan.setdefault(aspect, [0, 0])
            tally[0] += round(rate * planned)
            tally[1] += planned

    def table(self) -> str:
        from crystalgen.validators import CHECK_NAMES

        lines = [f"{'check':<18}{'pass rate':>10}"]
        for name in CHECK_NAMES:
            if name in self.checks:
                passed, judged = self.checks[name]
                lines.append(f"{name:<18}{passed / judged:>10.1%}")
        if self.n and self.validated:
            lines.append(f"{'overall':<18}{self.valid / self.n:>10.1%}")
        for key in ("spacegroup", "composition", "density", "all"):
            if key in self.plan and self.plan[key][1]:
                lines.append(f"{'plan ' + key:<18}{self.plan[key][0] / self.plan[key][1]:>10.1%}")
        return "\n".join(lines)


def _only_valid_shortfall(n_kept: int, n: int, unfiltered, budget: int | None) -> str:
    """One line on why --only-valid fell short: how many were drawn, and which checks failed most
    among the first crystals drawn (the same seed, without the filter)."""
    tried = f" in {budget} attempts" if budget else ""
    head = f"--only-valid: {n_kept} of {n} requested crystals passed every check{tried}"
    failures = Counter(name for r in unfiltered if r.report
                       for name, c in r.report["checks"].items() if c.get("pass") is False)
    if not failures:
        return head
    worst = ", ".join(f"{name} {k} of {len(unfiltered)}" for name, k in failures.most_common(3))
    return f"{head}; checks failing most among the first {len(unfiltered)} drawn: {worst}"


def _relaxer(top: int):
    """The CHGNet relaxer for --relax, or a one-line error when CHGNet is not installed."""
    from crystalgen.analogues.relax import RelaxConfig, Relaxer

    try:
        return Relaxer(config=RelaxConfig(top=top))
    except ImportError as err:
        raise click.ClickException(f"--relax: {err}") from None


@click.command("sample")
@click.option("--formula", help="Composition to generate, e.g. LiFePO4 (Li4Fe4P4O16 fixes 4 formula units).")
@click.option("--chemsys", help="Chemical system, e.g. Li-Fe-P-O: crystals with exactly these elements.")
@click.option("--elements", help="Comma-separated elements the crystals may use, e.g. Li,Fe,O.")
@click.option("--like", help="Write crystals like this data source's, e.g. mpts_52/val (a trained source prompt; "
                             "`crystalgen info --model DIR` lists those a model follows). Goes with the other requests.")
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
              help="Output: a folder (one CIF each) or a file (.cif, .extxyz, .json, .h5). An existing file, "
                   "or a folder holding files, is refused unless --overwrite is given.")
@click.option("--format", "fmt", type=click.Choice(["cif", "extxyz", "json", "h5"]),
              help="Output format (default: from the --out suffix; a folder means cif). "
                   "A suffix of another format is refused.")
@click.option("--chunk-size", type=click.IntRange(1), default=4096, show_default=True,
              help="Write the output every this many sequences: memory holds one chunk, and a run that is "
                   "stopped keeps the chunks it wrote.")
@click.option("--overwrite", is_flag=True,
              help="Write into an existing --out: replace only files of the same names, keep everything else.")
@click.option("--trace", is_flag=True, help="Print each crystal's reasoning trace.")
@click.option("--only-valid", is_flag=True, help="Keep sampling until n crystals pass every validator check.")
@click.option("--min-distance", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Distance guard (Å): each free coordinate is drawn from the model where the site's atoms stay "
                   "this far from the others (and room is left for the sites still to come); 0 samples the model "
                   "unguarded.")
@click.option("--covalent-ratio", type=click.FloatRange(0), default=0.65, show_default=True,
              help="The guard also keeps each pair this fraction of its covalent radii sum apart (the validators' "
                   "physical rule); 0 guards with --min-distance alone.")
@click.option("--strategy", type=click.Choice(["model", "analogue", "auto"]), default="model", show_default=True,
              help="With --formula: model samples plans from the model; analogue substitutes elements into reference "
                   "structures of the same anonymous formula (the formula is then the cell content: Li4Fe4P4O16 for "
                   "four formula units); auto merges the analogues with the model's own candidates by the model's "
                   "plan log-prob (the model's goes first where it beats the analogue's by the model's fitted margin; "
                   "the shipped model's is infinity: analogues first).")
@click.option("--relax", is_flag=True,
              help="Relax the top --relax-top crystals with CHGNet (FIRE, symmetry kept, 100 steps) and re-rank them "
                   "by energy per atom; a relax that diverges keeps the unrelaxed crystal (the trace says why).")
@click.option("--relax-top", type=click.IntRange(1), default=3, show_default=True, help="How many crystals --relax relaxes.")
@click.option("--charge-neutral/--no-charge-neutral", default=True, show_default=True,
              help="De novo (--chemsys, --elements, none): plans are charge-neutral by the validators' rule (SMACT "
                   "oxidation states, Pauling test) or one element; --no-charge-neutral samples plans as trained.")
@click.option("--allow-intermetallic", is_flag=True,
              help="De novo: also allow all-metal plans with oxidation state 0 (alloys; CDVAE counts them valid).")
@click.option("--volume-guard/--no-volume-guard", default=True, show_default=True,
              help="Keep each cell's volume per atom in the plan's bin (redraws of the last free lattice length).")
def command(formula, chemsys, elements, like, spacegroup, num_atoms, n, temperature, seed, batch_size, workers, device,
            model_path, out, fmt, chunk_size, overwrite, trace, only_valid, min_distance, covalent_ratio,
            strategy, relax, relax_top, charge_neutral, allow_intermetallic, volume_guard) -> None:
    """Generate crystal structures and write them to OUT.

    \b
    Examples:
      crystalgen sample --formula LiFePO4 -n 10 --out lfp/ --trace
      crystalgen sample --chemsys Li-Fe-O -n 100 --out lfo.extxyz
      crystalgen sample --like mpts_52/val -n 100 --model runs/like_ft/best --out mpts_like.extxyz
    """
    from crystalgen.analogues.relax import relax_results
    from crystalgen.api import CrystalGenerator, GenerationRequest, RequestError, SamplingOptions
    from crystalgen.io import ResultWriter
    from crystalgen.output_paths import OutputError

    try:
        writer = ResultWriter(out, fmt, overwrite, width=max(5, len(str(n - 1))))
    except OutputError as err:
        raise click.ClickException(str(err)) from None
    for folder in writer.target.stale_staging:
        click.echo(f"removed {folder}: the staging folder of an earlier run into {out} that was killed", err=True)
    element_list = [e for e in elements.split(",")] if elements else None
    if strategy != "model" and (formula is None or spacegroup is not None or num_atoms is not None or only_valid):
        raise click.UsageError(f"--strategy {strategy} takes --formula alone (no --spacegroup, --num-atoms, --only-valid)")
    relaxer = _relaxer(relax_top) if relax else None
    try:
        gen = CrystalGenerator.from_pretrained(model_path, device=device, workers=workers)
        request = GenerationRequest.build(formula, chemsys, element_list, spacegroup, num_atoms,
                                          max_atoms=gen.max_atoms, charge_neutral=charge_neutral,
                                          allow_intermetallic=allow_intermetallic, element_prompt=gen.element_prompts,
                                          like=like, source_prompts=gen.source_prompts)
    except (RequestError, FileNotFoundError) as err:
        raise click.UsageError(str(err)) from None
    start = time.perf_counter()
    tally, unfiltered = _Tally(), []
    try:
        options = SamplingOptions(temperature=temperature, seed=seed, batch_size=batch_size, min_distance=min_distance,
                                  covalent_ratio=covalent_ratio, validate=True, only_valid=only_valid, progress=True,
                                  charge_neutral=charge_neutral, allow_intermetallic=allow_intermetallic,
                                  volume_guard=volume_guard)
        if strategy == "model":
            chunks = gen.stream(request, n, options, chunk=chunk_size)
        else:
            chunks = iter([gen.predict_structure(formula, n, options=options, strategy=strategy,
                                                 relax=relaxer or False)])
        for results in chunks:
            if strategy == "model" and relaxer is not None:
                results = relax_results(results, relaxer)
            writer.write(results)
            if trace:
                _print_traces(results, tally.n)
            tally.add(results)
        if only_valid and tally.n < n:  # the same seed redraws (the start of) the first round, to say what failed
            unfiltered = gen.generate(request, min(n, chunk_size), options=options.with_(only_valid=False, progress=False))
    except RequestError as err:
        raise click.UsageError(str(err)) from None
    except OutputError as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted: {writer.count} finished crystals are in {out}", err=True)
        raise SystemExit(130) from None
    finally:
        writer.close()
        gen.close()
    elapsed = time.perf_counter() - start
    if only_valid and tally.n < n:
        click.echo(_only_valid_shortfall(tally.n, n, unfiltered, options.max_rounds * n), err=True)
    if not tally.n:
        raise click.ClickException("the model produced no crystal for this request; nothing written")
    click.echo(tally.table())
    click.echo(f"wrote {tally.n} crystals to {out} (generated, validated and written in {elapsed:.1f} s)")
    if tally.n < n:
        click.echo(f"warning: only {tally.n} of {n} requested crystals were produced", err=True)


def _print_traces(results, first: int) -> None:
    for i, r in enumerate(results, start=first):
        source = (f"log-likelihood {r.log_likelihood:.1f}" if r.log_likelihood is not None
                  else f"analogue of {r.metadata.get('reference_id')}")
        click.echo(f"--- crystal {i} ({r.structure.composition.reduced_formula}, {source})")
        click.echo(r.trace["text"])
