"""Shared fixtures: small real-data samples shipped under tests/fixtures/ (see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
