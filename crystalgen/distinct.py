"""The first K structurally distinct results of a ranked list (K>1 structure prediction).

Analogues and the model can propose the same crystal (the model often writes the
prototype an analogue already gave); a K-candidate answer should hold K different ones.
Two results are the same when pymatgen's default StructureMatcher fits them, the same
test the analogue generator applies among its own candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pymatgen.analysis.structure_matcher import StructureMatcher

from crystalgen.results import GenerationResult


def distinct_results(results: Sequence[GenerationResult], n: int, matcher: StructureMatcher | None = None,
                     exempt: Callable[[GenerationResult, GenerationResult], bool] | None = None,
                     ) -> list[GenerationResult]:
    """Up to `n` results, in order, skipping any that matches one already kept; pairs for
    which `exempt(kept, new)` holds are not compared (already kept apart by their source)."""
    kept: list[GenerationResult] = []
    extend_distinct(kept, results, n, matcher, exempt)
    return kept


def extend_distinct(kept: list[GenerationResult], results: Sequence[GenerationResult], n: int,
                    matcher: StructureMatcher | None = None,
                    exempt: Callable[[GenerationResult, GenerationResult], bool] | None = None) -> None:
    """Append to `kept`, in order, the results of `results` that repeat no kept one (the
    same object counts as a repeat), until `kept` holds `n`; `exempt` as in `distinct_results`."""
    matcher = matcher or StructureMatcher()
    for result in results:
        if len(kept) >= n:
            break
        if any(k is result or (not (exempt and exempt(k, result)) and _same(matcher, k, result)) for k in kept):
            continue
        kept.append(result)


def _same(matcher: StructureMatcher, a: GenerationResult, b: GenerationResult) -> bool:
    try:
        return bool(matcher.fit(a.structure, b.structure))
    except Exception:  # pymatgen fails on some degenerate cells: keep both
        return False
