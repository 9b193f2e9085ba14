"""crystalgen.validators: physical and chemical sanity checks for crystal structures.

One function per check (distance, lattice, charge, symmetry, composition), each
returning a `CheckResult` and never raising on a bad structure; `validate` runs
them all, `validate_many` runs a batch on all cores. `structural_validity` and
`smact_validity` are the CDVAE rules used for literature-comparable figures;
`physical_validity` is the distance rule the pass verdict uses (covalent radii).
"""

from crystalgen.validators.charge import check_charge, guess_oxidation_states, smact_validity
from crystalgen.validators.composition import check_composition
from crystalgen.validators.distance import MIN_COVALENT_RATIO, check_distance, pair_min_distance
from crystalgen.validators.lattice import check_lattice
from crystalgen.validators.pipeline import (
    BatchValidation,
    physical_validity,
    structural_validity,
    summarize,
    validate,
    validate_many,
)
from crystalgen.validators.result import CHECK_NAMES, CheckResult, Intent, ValidationReport
from crystalgen.validators.symmetry import check_symmetry

__all__ = [
    "CHECK_NAMES",
    "MIN_COVALENT_RATIO",
    "BatchValidation",
    "CheckResult",
    "Intent",
    "ValidationReport",
    "check_charge",
    "check_composition",
    "check_distance",
    "check_lattice",
    "check_symmetry",
    "guess_oxidation_states",
    "pair_min_distance",
    "physical_validity",
    "smact_validity",
    "structural_validity",
    "summarize",
    "validate",
    "validate_many",
]
