"""Shared fixtures: small real-data samples shipped under tests/fixtures/ (see its README)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crystalgen.analogues.index import AnalogueIndex, load_index
from crystalgen.data.readers import StructureRecord, read_structures

FIXTURES = Path(__file__).parent / "fixtures"
POOL_SAMPLE = FIXTURES / "pool_sample.csv.gz"
MPTS52_SAMPLE = FIXTURES / "mpts52_sample.csv.gz"


@pytest.fixture(scope="session")
def pool_sample_path() -> Path:
    """60 training-pool rows, one per space group, all sources (CSV.gz with `cif`)."""
    return POOL_SAMPLE


@pytest.fixture(scope="session")
def mpts52_sample_path() -> Path:
    """First 40 rows of the MPTS-52 test split (CSV.gz with `cif`)."""
    return MPTS52_SAMPLE


@pytest.fixture(scope="session")
def pool_records() -> list[StructureRecord]:
    return list(read_structures(POOL_SAMPLE))


@pytest.fixture(scope="session")
def mpts52_records() -> list[StructureRecord]:
    return list(read_structures(MPTS52_SAMPLE))


@pytest.fixture(scope="session")
def pool_by_formula(pool_records) -> dict:
    """Pool-sample structures keyed by reduced formula (first occurrence)."""
    out = {}
    for record in pool_records:
        out.setdefault(record.structure.composition.reduced_formula, record.structure)
    return out


@pytest.fixture(scope="session")
def mpts_corpus(tmp_path_factory) -> Path:
    """The 40-crystal MPTS-52 sample as an analogue corpus, copied into a temp folder (its
    index cache is written beside it, never into tests/fixtures/)."""
    path = tmp_path_factory.mktemp("corpus") / "mpts.csv.gz"
    shutil.copy(MPTS52_SAMPLE, path)
    return path


@pytest.fixture(scope="session")
def mpts_index(mpts_corpus) -> AnalogueIndex:
    """The analogue index of `mpts_corpus` (built once per session)."""
    return load_index(mpts_corpus, workers=1)
