"""`crystalgen evaluate csp|dng`: literature-comparable scores, with a PyXtal row beside.

Both commands score the chosen generator (the shipped model by default, `--model PATH`
for another checkpoint, or `--baseline pyxtal|oracle`) and, unless `--no-compare`, the
PyXtal baseline in the same run by the same code. `evaluate csp --strategy analogue`
scores analogue-guided prediction (`crystalgen.analogues`) instead of the model, and
`--baseline analogue` adds the analogue-only row beside the main one; their corpus
(`--reference`, default the shipped pool) is stripped of the test crystals first. They print a table and write JSON
(`--json`) and a PNG summary (`--png`).
"""

from __future__ import annotations

import dataclasses

import click

CSP_COLUMNS = ["match_rate", "rmse", "n_test", "n_samples", "validity", "pass_rate", "seconds_generate", "seconds_score"]
DNG_COLUMNS = [
    "structural_validity", "physical_validity", "compositional_validity", "pass_rate", "fraction_p1", "uniqueness",
    "novelty", "cov_recall", "cov_precision", "wdist_density", "wdist_num_elems",
]


def _generators(model: str | None, baseline: str | None, compare: bool, oracle_structures, pyxtal_pool=None,
                min_distance: float = 0.5, strategy: str = "model", reference=None, charge_neutral: bool = True,
                allow_intermetallic: bool = False, volume_guard: bool = True, plan_search: int = 1,
                analogue_config=None, auto_ranking=None, like: str | None = None):
    """[(name, generator)], the primary first; the model is imported only if used."""
    from crystalgen.evaluation.baseline import PyXtalBaseline
    from crystalgen.evaluation.oracle import OracleGenerator
    from crystalgen.evaluation.protocol import load_model_generator

    if baseline == "pyxtal":
        primary = PyXtalBaseline(pyxtal_pool)
    elif baseline == "oracle":
        primary = OracleGenerator(oracle_structures)
    else:
        primary = load_model_generator(model, min_distance=min_distance, strategy=strategy, reference=reference,
                                       charge_neutral=charge_neutral, allow_intermetallic=allow_intermetallic,
                                       volume_guard=volume_guard, plan_search=plan_search,
                                       analogue_config=analogue_config, auto_ranking=auto_ranking, like=like)
    label = "model" if strategy == "model" else f"model ({strategy})"
    if plan_search > 1:
        label += f" + plan search {plan_search}"
    out = [(label if baseline is None else baseline, primary)]
    if compare and baseline != "pyxtal":
        out.append(("pyxtal", PyXtalBaseline(pyxtal_pool)))
    return out


def _common(f):
    options = [
        click.option("--model", "model", type=click.Path(), default=None,
                     help="Model checkpoint to evaluate (default: the shipped model)."),
        click.option("--baseline", type=click.Choice(["pyxtal", "oracle", "analogue"]), default=None,
                     help="Evaluate a baseline instead of the model (oracle = the test crystals themselves); "
                          "analogue (csp only): add the analogue-only row beside the main row."),
        click.option("--compare/--no-compare", default=True, show_default=True,
                     help="Also score the PyXtal baseline in the same run."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for generation and subsets."),
        click.option("--min-distance", type=click.FloatRange(0), default=0.5, show_default=True,
                     help="The model's distance guard (Å), as in `crystalgen sample`; 0 scores the model unguarded."),
        click.option("--workers", type=int, default=2, show_default=True, help="Processes for scoring (and the baseline)."),
        click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write all figures and settings here."),
        click.option("--png", "png_out", type=click.Path(dir_okay=False), default=None, help="Write the PNG summary here."),
        click.option("--overwrite", is_flag=True, help="Replace existing --json/--png files (refused otherwise)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _check_outputs(overwrite: bool, *paths: str | None) -> None:
    """Refuse unwritable or existing output files before hours of generation, in one line."""
    from crystalgen.output_paths import OutputError, check_output_file

    for path in paths:
        if path:
            try:
                check_output_file(path, overwrite)
            except OutputError as err:
                raise click.ClickException(str(err)) from None


@click.group("evaluate")
def command() -> None:
    """Score generators with the field's CSP and de novo metrics."""


@command.command("csp")
@click.option("--test", "test_path", type=click.Path(exists=True), required=True, help="Test crystals (CSV with cif column, ...).")
@click.option("--samples", "n_samples", type=int, default=1, show_default=True, help="Candidates per test crystal (K).")
@click.option("--limit", type=int, default=None, help="Score a seeded random subset of this many test crystals.")
@click.option("--strategy", type=click.Choice(["model", "analogue", "auto"]), default="model", show_default=True,
              help="How the main row predicts: the model, analogues from the reference corpus, or auto "
                   "(analogues and the model's own candidates merged by the model's plan log-prob).")
@click.option("--auto-margin", type=float, default=None,
              help="--strategy auto: nats of plan log-prob by which the model's own candidate must beat an analogue "
                   "to go before it (default: the model directory's auto_ranking.json, else the shipped model's "
                   "fitted margin; inf: analogues first).")
@click.option("--auto-share", type=click.FloatRange(0, 1), default=None,
              help="--strategy auto, K>1: the share of the K slots kept for the model's own distinct candidates "
                   "(default: the model directory's auto_ranking.json, else the shipped default); given and above 0, "
                   "auto without it is scored as a row beside.")
@click.option("--model-row", is_flag=True,
              help="--strategy auto: also score the model alone (same model, seed and plan search) as a row.")
@click.option("--reference", "reference", type=click.Path(exists=True), default=None,
              help="Analogue corpus: reference pool .h5, `data prepare` output, CSV(.gz) or CIF folder "
                   "(default: the shipped reference pool). Test crystals are removed from it first.")
@click.option("--energy-top", type=click.IntRange(0), default=0, show_default=True,
              help="Analogue strategy: re-rank this many top candidates by CHGNet energy; auto: rank this many of "
                   "each side's top candidates together by plan log-prob and CHGNet energy, and score auto without "
                   "it as a row beside (0 = off).")
@click.option("--energy-weight", type=click.FloatRange(0), default=10.0, show_default=True,
              help="With --energy-top: nats per eV/atom of CHGNet energy in the combined score (large: energy decides).")
@click.option("--prefilter", type=click.IntRange(0), default=0, show_default=True,
              help="Analogue strategy: map only this many Mendeleev-closest corpus entries of the target's anonymous "
                   "formula (0 = all; for corpora like Perov-5 where one anonymous formula holds thousands).")
@click.option("--relax", is_flag=True,
              help="Add a row with the main generator's top --relax-top candidates relaxed by CHGNet and re-ranked "
                   "by energy, beside the unrelaxed row.")
@click.option("--relax-top", type=click.IntRange(1), default=3, show_default=True, help="Candidates --relax relaxes.")
@click.option("--plan-search", type=click.IntRange(1), default=1, show_default=True,
              help="The model's candidates are the best of N samples each by plan log-probability (1 = as sampled).")
@click.option("--prototype-prior/--no-prototype-prior", default=True, show_default=True,
              help="Analogue ranking with the prototype prior (docs/analogues.md); off: the plain order.")
@_common
def csp(test_path, n_samples, limit, strategy, reference, energy_top, energy_weight, prefilter, relax, relax_top,
        plan_search, prototype_prior, auto_margin, auto_share, model_row, model, baseline, compare, seed, min_distance, workers,
        json_out, png_out, overwrite) -> None:
    """Crystal structure prediction: match rate and RMSE (CDVAE / DiffCSP protocol)."""
    _check_outputs(overwrite, json_out, png_out)
    from crystalgen.analogues.generator import AnalogueConfig, AnalogueGenerator
    from crystalgen.analogues.prior import PriorWeights
    from crystalgen.auto_ranking import AutoRanking
    from crystalgen.evaluation.analogue import held_out_analogues
    from crystalgen.evaluation.csp import CSPConfig, csp_settings, evaluate_csp
    from crystalgen.evaluation.datasets import load_structures
    from crystalgen.evaluation.plots import summary_png
    from crystalgen.evaluation.report import build_report, format_table, write_json

    test = load_structures(test_path, limit=limit, seed=seed, workers=workers)
    config = CSPConfig(n_samples=n_samples, seed=seed, workers=workers)
    generators, analogue_settings = [], None
    auto_energy = {"energy_top": energy_top, "energy_weight": energy_weight} if strategy == "auto" and energy_top else {}
    auto_ranking = AutoRanking.for_model(model, margin=auto_margin, model_share=auto_share, **auto_energy)
    prior = {} if prototype_prior else {"prior": PriorWeights()}
    if strategy in ("analogue", "auto") or baseline == "analogue":
        plain, analogue_settings = held_out_analogues(reference, test.ids, test.structures,
                                                      AnalogueConfig(prefilter=prefilter, **prior), workers=workers)
        if strategy == "analogue":
            main = plain if energy_top == 0 else AnalogueGenerator(
                plain.index, AnalogueConfig(energy_top=energy_top, energy_weight=energy_weight, prefilter=prefilter,
                                            **prior))
            generators.append(("analogue" if energy_top == 0 else "analogue+chgnet", main))
            analogue_settings.update(energy_top=energy_top, energy_weight=energy_weight)
        if baseline == "analogue" and (strategy != "analogue" or energy_top > 0):
            generators.append(("analogue", plain))
    if strategy in ("model", "auto"):
        model_rows = _generators(model, None if baseline == "analogue" else baseline, compare, test.structures,
                                 min_distance=min_distance, strategy=strategy,
                                 reference=plain.index if strategy == "auto" else None, plan_search=plan_search,
                                 analogue_config=AnalogueConfig(prefilter=prefilter, **prior),
                                 auto_ranking=auto_ranking)
        if model_row and strategy == "auto":
            model_rows[1:1] = _generators(model, None, False, test.structures, min_distance=min_distance,
                                          plan_search=plan_search)
        extras = ["chgnet"] * bool(auto_energy)
        extras += [f"share {auto_ranking.model_share:g}"] * (auto_share is not None
                                                            and auto_ranking.reserved_slots(n_samples) > 0)
        if extras and strategy == "auto":
            model_rows[0] = (model_rows[0][0].replace("(auto", "(auto+" + "+".join(extras)), model_rows[0][1])
            model_rows[1:1] = _generators(model, None, False, test.structures, min_distance=min_distance,
                                          strategy=strategy, reference=plain.index, plan_search=plan_search,
                                          analogue_config=AnalogueConfig(prefilter=prefilter, **prior),
                                          auto_ranking=dataclasses.replace(auto_ranking, energy_top=0, model_share=0.0))
        generators = model_rows[:1] + generators + model_rows[1:]
    elif compare:
        generators += _generators(model, "pyxtal", False, test.structures)
    relax_settings = None
    if relax:
        from crystalgen.analogues.relax import RelaxConfig, Relaxer
        from crystalgen.evaluation.relaxed import RelaxedGenerator

        try:
            relaxer = Relaxer(config=RelaxConfig(top=relax_top))
        except ImportError as err:
            raise click.ClickException(f"--relax: {err}") from None
        name, main = generators[0]
        generators.insert(0, (f"{name}+relax", RelaxedGenerator(main, relaxer, seed=seed)))
        relax_settings = {"calculator": type(relaxer.calculator).__name__, **dataclasses.asdict(relaxer.config)}
    rows, densities = {}, {}
    for name, generator in generators:
        run = evaluate_csp(generator, test.structures, config)
        rows[name] = run.summary
        densities[name] = [c.density for item in run.items for c in item.candidates if c is not None]
    settings = csp_settings(config, test_path, len(test.structures), limit)
    settings["n_unparsable"] = test.n_unparsable
    settings["min_distance"] = min_distance
    settings["strategy"] = strategy
    settings["plan_search"] = plan_search
    if strategy == "auto":
        settings["auto_ranking"] = auto_ranking.as_dict()
    settings["relax"] = relax_settings
    if analogue_settings is not None:
        settings["analogues"] = analogue_settings
    report = build_report(settings, rows, primary=next(iter(rows)))
    click.echo(format_table(rows, CSP_COLUMNS))
    if json_out:
        click.echo(f"wrote {write_json(json_out, report)}")
    if png_out:
        ref = [s.density for s in test.structures]
        path = summary_png(png_out, rows, densities, ref, title=f"CSP, K={n_samples}, {len(test.structures)} test crystals")
        click.echo(f"wrote {path}")


@command.command("dng")
@click.option("-n", "n", type=int, default=1000, show_default=True, help="Crystals to generate.")
@click.option("--test", "test_path", type=click.Path(exists=True), default=None,
              help="Test crystals: reference for Wasserstein distances and coverage.")
@click.option("--train", "train_path", type=click.Path(exists=True), default=None,
              help="Training crystals: the PyXtal baseline's compositions, and the novelty reference "
                   "unless --train-corpus is given.")
@click.option("--train-corpus", default=None,
              help="Novelty reference: the model's training corpus (CSV(.gz) with a cif column, CIF folder, "
                   "`data prepare` HDF5 or reference file). Default: --train if given, else the shipped "
                   "training pool (`training-pool`, data/reference_pool.h5: what the shipped model was trained on).")
@click.option("--test-limit", type=int, default=None, help="Use a seeded random subset of the test crystals.")
@click.option("--no-coverage", is_flag=True, help="Skip COV-R/COV-P (CrystalNN fingerprints are slow).")
@click.option("--charge-neutral/--no-charge-neutral", default=True, show_default=True,
              help="The model's plans are charge-neutral (or one element) by grammar masks; "
                   "--no-charge-neutral samples its plans as trained.")
@click.option("--allow-intermetallic", is_flag=True, help="Also allow all-metal plans (CDVAE counts alloys valid).")
@click.option("--volume-guard/--no-volume-guard", default=True, show_default=True,
              help="Keep each cell's volume per atom in its plan's bin (redraws of the last free length).")
@click.option("--like", default=None,
              help="The model writes crystals like this data source's (a trained source prompt, e.g. mpts_52/val); "
                   "the PyXtal row is unchanged.")
@_common
def dng(n, test_path, train_path, train_corpus, test_limit, no_coverage, charge_neutral, allow_intermetallic, volume_guard, like,
        model, baseline, compare, seed, min_distance, workers, json_out, png_out, overwrite) -> None:
    """De novo generation: validity, uniqueness, novelty, coverage, Wasserstein distances."""
    _check_outputs(overwrite, json_out, png_out)
    from crystalgen.data.reference import ALIAS
    from crystalgen.data.reference_index import load_reference
    from crystalgen.evaluation.datasets import load_structures
    from crystalgen.evaluation.dng import DNGConfig, dng_settings, evaluate_dng, score_reference
    from crystalgen.evaluation.fingerprints import fingerprint_unavailable_reason
    from crystalgen.evaluation.plots import summary_png
    from crystalgen.evaluation.report import build_report, format_table, write_json
    from crystalgen.generation.request import RequestError, check_source
    from crystalgen.representation.vocab import SOURCES

    if baseline == "analogue":
        raise click.UsageError("the analogue baseline predicts structures for given compositions: use `evaluate csp`")
    if like is not None:
        if baseline is not None:
            raise click.UsageError("--like conditions the model; it does not go with --baseline")
        try:
            check_source(like, SOURCES)  # the name alone, before the test set loads; the model is checked below
        except RequestError as err:
            raise click.UsageError(str(err)) from None
    config = DNGConfig(n=n, seed=seed, workers=workers, coverage=not no_coverage)
    test = load_structures(test_path, limit=test_limit, seed=seed, workers=workers) if test_path else None
    train = load_structures(train_path, workers=workers) if train_path else None
    corpus = train_corpus or train_path or ALIAS
    try:
        novelty_reference = load_reference(corpus)
    except (OSError, ValueError, KeyError) as err:
        raise click.ClickException(f"--train-corpus {corpus}: {err}") from None
    with_fp = config.coverage and fingerprint_unavailable_reason() is None
    reference = score_reference(test.structures, with_fp, workers) if test else None
    pool_source = train or test
    if (baseline == "pyxtal" or (compare and baseline != "pyxtal")) and pool_source is None:
        raise click.UsageError("the PyXtal baseline draws compositions from --train or --test: give one")
    if baseline == "oracle" and test is None:
        raise click.UsageError("the oracle samples the test crystals: give --test")
    pool = [s.composition for s in pool_source.structures] if pool_source else None

    try:
        generators = _generators(model, baseline, compare, test.structures if test else [], pool,
                                 min_distance=min_distance, charge_neutral=charge_neutral,
                                 allow_intermetallic=allow_intermetallic, volume_guard=volume_guard, like=like)
    except RequestError as err:
        raise click.UsageError(str(err)) from None
    rows, densities = {}, {}
    for name, generator in generators:
        run = evaluate_dng(generator, config, reference, novelty_reference)
        rows[name] = run.summary
        densities[name] = [s.density for s in run.scores if s is not None and s.valid]
    settings = dng_settings(
        config, test_path, train_path,
        test_limit=test_limit,
        n_test=len(test.structures) if test else None,
        n_train=len(train.structures) if train else None,
        train_corpus=corpus,
        n_train_corpus=sum(len(v) for v in novelty_reference.values()),
        pyxtal_compositions=("training set" if train else "test set") if pool_source else None,
        min_distance=min_distance,
        charge_neutral=charge_neutral,
        allow_intermetallic=allow_intermetallic,
        volume_guard=volume_guard,
        like=like,
    )
    report = build_report(settings, rows, primary=next(iter(rows)))
    click.echo(format_table(rows, DNG_COLUMNS))
    if json_out:
        click.echo(f"wrote {write_json(json_out, report)}")
    if png_out:
        ref = [s.density for s in reference.scores] if reference else None
        path = summary_png(png_out, rows, densities, ref, title=f"de novo, n={n}")
        click.echo(f"wrote {path}")
