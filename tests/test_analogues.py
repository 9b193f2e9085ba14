"""Analogue-guided structure prediction on small real-data fixtures (no ../shared needed)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import sys

import pytest
from click.testing import CliRunner
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition

from crystalgen.analogues.candidates import NoAnalogueError, find_candidates
from crystalgen.analogues.exclusion import exclude_test_crystals
from crystalgen.analogues.generator import AnalogueGenerator
from crystalgen.analogues.index import load_index, sidecar_paths, corpus_fingerprint
from crystalgen.analogues.substitution import best_mapping
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import MATCHER_KWARGS

csv.field_size_limit(sys.maxsize)


def _read_rows(path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path, rows: list[dict[str, str]]) -> None:
    with gzip.open(path, "wt", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_index_is_cached_beside_the_corpus_and_rebuilt_when_it_changes(mpts_corpus, mpts_index, tmp_path):
    sidecar = sidecar_paths(mpts_corpus, corpus_fingerprint(mpts_corpus))[0]
    assert sidecar.is_file()
    again = load_index(mpts_corpus)
    assert list(again.ids) == list(mpts_index.ids) and (again.spacegroup == mpts_index.spacegroup).all()
    changed = tmp_path / "mpts.csv.gz"
    _write_rows(changed, _read_rows(mpts_corpus)[:5])
    shutil.copy(sidecar, tmp_path / (changed.name + ".analogues.npz"))  # a stale cache of another corpus
    assert len(load_index(changed)) == 5


def test_lookup_finds_analogues_across_formula_units(mpts_index):
    i = list(mpts_index.ids).index("mp-11787")  # YbNdSe3, 10 atoms: Z = 2 in its primitive cell
    assert mpts_index.z[i] == 2
    counts = mpts_index.counts[i]
    assert i in mpts_index.lookup(counts, 2) and i in mpts_index.lookup(counts, 4)
    assert i not in mpts_index.lookup(counts, 1) and i not in mpts_index.lookup(counts, 3)
    found = find_candidates(mpts_index, "Yb4Sm4Se12")  # four formula units: a 2x supercell of Z = 2 cells
    assert {"mp-11786", "mp-11787", "mp-11788"} <= {c.reference_id for c in found}
    known = next(c for c in found if c.reference_id == "mp-11788")
    assert known.known and known.z_ratio == 2


def test_substitution_ranks_chemically_similar_elements_first():
    ionic = best_mapping((("K", 1), ("Br", 1)), (("Na", 1), ("Cl", 1)))
    assert ionic.method == "pymatgen" and set(ionic.pairs) == {("K", "Na"), ("Br", "Cl")}
    # the alkaline earth goes onto the alkaline earth, the transition metal onto the transition metal
    perovskite = best_mapping((("Sr", 1), ("Ti", 1), ("O", 3)), (("Ba", 1), ("Zr", 1), ("O", 3)))
    assert set(perovskite.substitutions) == {("Sr", "Ba"), ("Ti", "Zr")}
    # intermetallics have no oxidation-state guess: Mendeleev numbers decide
    metal = best_mapping((("Dy", 1), ("Ho", 1), ("Zn", 2)), (("Nd", 1), ("Er", 1), ("Cd", 2)))
    assert metal.method == "mendeleev" and ("Zn", "Cd") in metal.pairs
    same = best_mapping((("Na", 1), ("Cl", 1)), (("Na", 1), ("Cl", 1)))
    assert same.log_prob > ionic.log_prob
    assert best_mapping((("Na", 1), ("Cl", 1)), (("Na", 1), ("Cl", 2))) is None


def test_a_substituted_analogue_reproduces_the_held_out_crystal(mpts_index, mpts52_sample_path):
    test = load_structures(str(mpts52_sample_path))
    i = test.ids.index("mp-31117")  # NdScO3; its corpus analogues include LaScO3, TbScO3, DyScO3, HoScO3
    held_out, _ = exclude_test_crystals(mpts_index, ["mp-31117"], [test.structures[i]], MATCHER_KWARGS)
    result = AnalogueGenerator(held_out).predict_structure(test.structures[i].composition, n=1)[0]
    assert result.structure.composition == test.structures[i].composition
    assert not result.metadata["known_compound"]
    assert StructureMatcher(**MATCHER_KWARGS).fit(result.structure, test.structures[i])
    assert result.trace["text"].startswith("Analogues: ") and "ScO3 (mp-" in result.trace["text"]
    assert "Sc" not in result.trace["chosen"]["substitution"] and result.valid


def test_known_compound_comes_back_as_itself_ground_state_first(mpts_index, mpts52_sample_path):
    gen = AnalogueGenerator(mpts_index)
    test = load_structures(str(mpts52_sample_path))
    i = test.ids.index("mp-31116")
    results = gen.predict_structure("La4Sc4O12", n=3)
    assert results[0].metadata["known_compound"] and results[0].metadata["reference_id"] == "mp-31116"
    assert "known compound: mp-31116" in results[0].trace["text"]
    assert StructureMatcher(**MATCHER_KWARGS).fit(results[0].structure, test.structures[i])
    assert 2 <= len(results) <= 3  # K > 1: the other ScO3 entries share its prototype; YbNdSe3 differs
    matcher = StructureMatcher()
    assert not any(matcher.fit(a.structure, b.structure) for k, a in enumerate(results) for b in results[k + 1:])


def test_exclusion_removes_test_crystals_by_id_and_by_match(mpts_corpus, tmp_path, mpts52_sample_path):
    rows = _read_rows(mpts_corpus)
    renamed = [dict(r, material_id=f"copy-{r['material_id']}") for r in rows[:6]]
    corpus = tmp_path / "overlap.csv.gz"
    _write_rows(corpus, rows[6:12] + renamed)
    index = load_index(corpus, workers=1)
    test = load_structures(str(mpts52_sample_path))
    kept, exclusion = exclude_test_crystals(index, test.ids[:8], test.structures[:8], MATCHER_KWARGS)
    assert (exclusion.by_id, exclusion.by_match) == (2, 6)  # rows 6, 7 by id; the six renamed copies by match
    assert len(kept) == 4 and not any(str(i).startswith("copy-") for i in kept.ids)


def test_exclusion_size_filter_gives_the_same_verdicts(mpts_corpus, tmp_path, mpts52_sample_path, monkeypatch):
    """Comparing only cells of the test crystal's primitive size (as for Carbon-24) drops the same entries."""
    import crystalgen.analogues.exclusion as exclusion_module

    rows = _read_rows(mpts_corpus)
    corpus = tmp_path / "overlap.csv.gz"
    _write_rows(corpus, rows[6:12] + [dict(r, material_id=f"copy-{r['material_id']}") for r in rows[:6]])
    index = load_index(corpus, workers=1)
    test = load_structures(str(mpts52_sample_path))
    monkeypatch.setattr(exclusion_module, "SIZE_FILTER_ABOVE", 0)
    kept, exclusion = exclude_test_crystals(index, test.ids[:8], test.structures[:8], MATCHER_KWARGS)
    assert (exclusion.by_id, exclusion.by_match, exclusion.test_matched) == (2, 6, 6)
    assert sorted(map(str, kept.ids)) == sorted(r["material_id"] for r in rows[8:12])


def test_no_analogue_is_a_clear_one_line_error(mpts_index):
    with pytest.raises(NoAnalogueError, match="no analogue for") as err:
        AnalogueGenerator(mpts_index).predict_structure(Composition("Xe2Pu3Np5"), n=1)
    assert "\n" not in str(err.value)
    assert AnalogueGenerator(mpts_index).predict_structures(["Xe2Pu3Np5", "La4Sc4O12"], n=1)[0] == []


def test_cli_csp_adds_the_analogue_row_and_records_exclusions(mpts52_sample_path, mpts_corpus, tmp_path):
    from crystalgen.cli import main

    out = tmp_path / "csp.json"
    result = CliRunner().invoke(main, [
        "evaluate", "csp", "--test", str(mpts52_sample_path), "--strategy", "analogue", "--baseline", "analogue",
        "--energy-top", "0", "--reference", str(mpts_corpus), "--no-compare", "--workers", "1", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["settings"]["strategy"] == "analogue"
    analogues = report["settings"]["analogues"]
    assert analogues["excluded_by_id"] == 40 and analogues["n_kept"] == 0
    assert report["rows"]["analogue"]["match_rate"] == 0.0  # nothing left to be an analogue of


def test_cli_csp_model_with_analogue_baseline_row(mpts52_sample_path, tmp_path):
    from crystalgen.cli import main

    corpus = tmp_path / "corpus.csv.gz"
    shutil.copy(mpts52_sample_path, corpus)
    out = tmp_path / "csp.json"
    result = CliRunner().invoke(main, [
        "evaluate", "csp", "--test", str(mpts52_sample_path), "--limit", "6", "--baseline", "analogue",
        "--reference", str(corpus), "--no-compare", "--workers", "1", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["model", "analogue"] and report["settings"]["strategy"] == "model"
    assert report["settings"]["analogues"]["excluded_by_id"] == 6
    for row in report["rows"].values():
        assert {"match_rate", "rmse", "n_test", "n_samples"} <= set(row) and row["n_test"] == 6


def test_any_cell_finds_analogues_whose_primitive_cell_holds_more_formula_units(mpts_index):
    assert find_candidates(mpts_index, "YbNdSe3") == []  # Z = 2 analogues do not fit one formula unit
    found = find_candidates(mpts_index, "YbNdSe3", exact_cell=False)
    assert found[0].known and found[0].reference_id == "mp-11787" and found[0].z_ratio == 1
