"""From a request to finished crystals, one mechanism per module.

Imports run downward only (checked by ``python -m crystalgen.devtools.imports``)::

    shards   -> decoder, finish, rng        (run a request's jobs, in workers or here)
    finish   -> request                     (sequence -> GenerationResult: decode, validate, trace)
    decoder  -> guard, volume, request, options (the batched decode loop: admit / prefill / step / commit)
    guard                                   (distance guard: every free coordinate, and room on the lattice)
    volume                                  (volume guard: the last free lattice length in the plan's bin)
    rng                                     (per-sequence random keys)
    plan_search -> analogues.model_score    (best-of-N model candidates by plan log-prob)
    request, options, protocol              (what was asked for, how to sample, who can be driven)

``crystalgen.api`` is the facade over this package.
"""
