"""A sampled sequence becomes a result: decoded structure, validators' report, trace."""

from __future__ import annotations

import logging

from crystalgen.generation.decoder import SampledSequence
from crystalgen.generation.options import SamplingOptions
from crystalgen.generation.request import GenerationRequest
from crystalgen.representation.sequence import DecodeError, decode, decode_plan
from crystalgen.results import GenerationResult
from crystalgen.trace import build_trace
from crystalgen.validators import Intent, validate as run_validators

log = logging.getLogger(__name__)


def finish(seq: SampledSequence | None, request: GenerationRequest,
           options: SamplingOptions) -> GenerationResult | None:
    """The result of one sequence (None for a failed or undecodable one)."""
    if seq is None:
        return None
    try:
        crystal = decode(seq.tokens, seq.values)
        plan = decode_plan(seq.tokens)
        structure = crystal.to_structure()
    except (DecodeError, ValueError) as err:
        log.debug("undecodable sequence: %s", err)
        return None
    report = None
    if options.validate:
        intent = Intent(spacegroup=request.spacegroup, formula=request.formula)
        report = run_validators(structure, intent).as_dict()
    return GenerationResult(
        structure=structure,
        trace=build_trace(plan, structure, report),
        report=report,
        log_likelihood=float(seq.log_likelihood),
        metadata={
            "formula": request.formula,
            "spacegroup": request.spacegroup,
            "temperature": options.temperature,
            "seed": options.seed,
            "min_distance": options.guard_distance,
            "covalent_ratio": options.covalent_ratio if options.guard_distance > 0 else 0.0,
            "planned_spacegroup": plan.spacegroup,
        },
    )
