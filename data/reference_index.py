"""A novelty reference corpus: known structures, indexed by reduced formula, and the lookup.

A candidate can only match a known structure of the same reduced formula, so the corpus
is indexed by formula and cut down to the elements the run's targets can produce. For
CSV files with a ``cif`` column (the shipped data layout) the formula is read from the
CIF's ``_chemical_formula_sum`` line, without parsing the structure: indexing the whole
20,889-row training pool takes under a second, and only the few CIFs a candidate needs
are ever parsed (in the worker, cached). Screening's novelty stage and `crystalgen
evaluate dng`'s novelty figure both look candidates up here.
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure

# reduced formula -> [(identifier, CIF text)]
ReferenceIndex = dict[str, list[tuple[str, str]]]

_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+'?([^'\n]+)'?\s*$", re.MULTILINE)


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def _formula_of_cif(cif: str) -> str | None:
    m = _FORMULA_SUM.search(cif)
    if not m:
        return None
    with warnings.catch_warnings():  # noble gases have no Pauling electronegativity: harmless here
        warnings.simplefilter("ignore", UserWarning)
        return Composition(m.group(1)).reduced_formula


def _keep(formula: str, allowed: list[frozenset[str]] | None) -> bool:
    if allowed is None:
        return True
    elements = frozenset(el.symbol for el in Composition(formula).elements)
    return any(elements <= a for a in allowed)


def _csv_rows(path: Path) -> Iterable[tuple[str, str]]:
    csv.field_size_limit(1 << 30)
    with _open_text(path) as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            yield row.get("material_id") or f"row{i}", row["cif"]


def load_reference(path: str | Path, element_sets: Iterable[frozenset[str]] | None = None) -> ReferenceIndex:
    """Index the structures at ``path`` by reduced formula.

    element_sets: keep only structures whose elements lie within one of these sets (the
        targets' elements); None keeps everything.
    ``training-pool`` is the training pool shipped with the package
    (``crystalgen.data.reference``). Reads CSV(.gz) files with a ``cif`` column directly, a
    shipped reference file, a prepared HDF5 corpus with
    ``crystalgen.data.corpus.read_corpus``, and anything else (CIF folder, extxyz, ...) with
    ``crystalgen.data.readers.read_structures``.
    """
    from crystalgen.data.reference import is_reference_file, read_reference, resolve

    path = resolve(path)
    allowed = None if element_sets is None else [frozenset(s) for s in element_sets]
    index: ReferenceIndex = defaultdict(list)
    if is_reference_file(path):
        for ident, formula, cif in zip(*read_reference(path)):
            if _keep(formula, allowed):
                index[formula].append((ident, cif))
        return dict(index)
    if path.is_file() and ".csv" in path.suffixes:
        for ident, cif in _csv_rows(path):
            formula = _formula_of_cif(cif)
            if formula is None:  # not written by pymatgen: parse it
                formula = Structure.from_str(cif, fmt="cif").composition.reduced_formula
            if _keep(formula, allowed):
                index[formula].append((ident, cif))
        return dict(index)

    from pymatgen.io.cif import CifWriter

    for ident, structure in _other_source(path, allowed):
        formula = structure.composition.reduced_formula
        if _keep(formula, allowed):
            index[formula].append((ident, str(CifWriter(structure))))
    return dict(index)


def _other_source(path: Path, allowed: list[frozenset[str]] | None) -> Iterable[tuple[str, Structure]]:
    """(identifier, structure) from a prepared HDF5 corpus or anything ``read_structures`` reads."""
    if path.suffix in (".h5", ".hdf5"):
        from pymatgen.core import Element

        from crystalgen.data.corpus import read_corpus

        corpus = read_corpus(path)
        for i in range(len(corpus)):
            numbers, _ = corpus.sites(i)
            elements = frozenset(Element.from_Z(int(z)).symbol for z in set(numbers.tolist()))
            if allowed is None or any(elements <= a for a in allowed):  # build only what is kept
                yield str(corpus.ids[i]), corpus.structure(i)
        return
    from crystalgen.data.readers import read_structures

    for record in read_structures(path):
        if record.structure is not None:  # unparsable entries cannot match anything
            yield record.id, record.structure


def index_structures(structures: Sequence[Structure], ids: Sequence[str] | None = None) -> ReferenceIndex:
    """An in-memory reference of ``structures`` (identifiers: ``ids``, else their positions)."""
    from pymatgen.io.cif import CifWriter

    index: ReferenceIndex = defaultdict(list)
    for i, s in enumerate(structures):
        index[s.composition.reduced_formula].append((str(ids[i]) if ids else str(i), str(CifWriter(s))))
    return dict(index)


@lru_cache(maxsize=4096)
def _parse_cif(cif: str) -> Structure | None:
    try:
        return Structure.from_str(cif, fmt="cif")
    except Exception:  # a broken reference entry must not stop the run
        return None


def known_match(structure: Structure, reference: ReferenceIndex, matcher: StructureMatcher) -> str | None:
    """The identifier of a reference structure that matches, or None (the candidate is novel)."""
    for ident, cif in reference.get(structure.composition.reduced_formula, []):
        known = _parse_cif(cif)
        if known is not None and matcher.fit(known, structure):
            return ident
    return None
