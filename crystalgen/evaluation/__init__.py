"""Evaluation harness: the field's CSP and de novo metrics, with a PyXtal baseline.

Modules: `protocol` (the `Generator` protocol), `baseline` (PyXtal), `oracle` (ground
truth as a generator), `generation` (seeded, fault-tolerant runs), `scoring` (per-crystal
validity, reports), `metrics` (match/RMSE, uniqueness, novelty, coverage, Wasserstein),
`fingerprints` (CDVAE's, needs matminer), `consistency` (plan vs result), `csp` and `dng`
(the two tasks), `report` and `plots` (JSON, PNG), `datasets`; process pools come from `crystalgen.parallel`.
"""

from crystalgen.evaluation.baseline import PyXtalBaseline, PyXtalConfig
from crystalgen.evaluation.csp import CSPConfig, CSPRun, evaluate_csp
from crystalgen.evaluation.dng import DNGConfig, DNGRun, Reference, evaluate_dng, score_reference
from crystalgen.evaluation.oracle import OracleGenerator
from crystalgen.evaluation.protocol import Generator, load_model_generator

__all__ = [
    "CSPConfig",
    "CSPRun",
    "DNGConfig",
    "DNGRun",
    "Generator",
    "OracleGenerator",
    "PyXtalBaseline",
    "PyXtalConfig",
    "Reference",
    "evaluate_csp",
    "evaluate_dng",
    "load_model_generator",
    "score_reference",
]
