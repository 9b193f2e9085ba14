"""Chemical-system and element-set requests as trained prompts on the sampling side: the
request writes `<sys:all|any> <el:X>+` for a model that knows those tokens, and the grammar
reads the same plan rule from it as from the request's masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalgen.api import CrystalGenerator, RequestError
from crystalgen.generation.request import GenerationRequest
from crystalgen.model import CrystalModel, CrystalModelConfig
from crystalgen.representation import vocab as V
from crystalgen.representation.grammar import Grammar
from crystalgen.representation.random_walk import random_completion
from crystalgen.representation.sequence import decode


@pytest.mark.parametrize("kwargs, mode, required", [
    ({"chemsys": "O-Fe-Li"}, "<sys:all>", {"Li", "Fe", "O"}),
    ({"elements": ["Si", "O", "Mg"]}, "<sys:any>", set()),
])
def test_prompted_request_gives_the_grammar_the_rule_of_the_masked_one(kwargs, mode, required):
    masked = GenerationRequest.build(**kwargs)
    prompted = GenerationRequest.build(**kwargs, element_prompt=True)
    names = [V.TOKENS[t] for t in prompted.prefix]
    elements = sorted(masked.rule.allowed, key=lambda e: names.index(f"<el:{e}>"))
    assert names[:6] == ["<bos>", "<task:gen>", mode] + [f"<el:{e}>" for e in elements] and names[-1] == "<plan>"
    assert elements == [e for e in ("Li", "Mg", "Fe", "Si", "O") if e in masked.rule.allowed]  # canonical order
    assert V.TOKENS[masked.prefix[2]] == "<plan>"  # without the prompt: the bare de novo prefix
    a = Grammar.start(masked.prefix, rule=masked.rule)
    b = Grammar.start(prompted.prefix, rule=prompted.rule)
    assert a.rule == b.rule and b.rule.required == frozenset(required)
    # the same masks all the way along a random walk of the prompted grammar
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = Grammar.start(masked.prefix, rule=masked.rule)
        b = Grammar.start(prompted.prefix, rule=prompted.rule)
        tokens, values = random_completion(b, rng)
        for tok, val in zip(tokens, values):
            allowed_a = a.next_allowed()
            if isinstance(allowed_a, np.ndarray):
                assert allowed_a[tok]
            a.advance(tok, val)
        assert a.done
        crystal = decode(np.concatenate([prompted.prefix, tokens]), np.concatenate([np.zeros(len(prompted.prefix)), values]))
        used = {s.element for s in crystal.sites}
        assert used <= masked.rule.allowed and set(required) <= used


def test_impossible_system_is_refused_with_the_prompt_too():
    with pytest.raises(RequestError, match="B|Si"):
        GenerationRequest.build(chemsys="B-Si", element_prompt=True)


def test_generator_prompts_only_a_model_that_knows_the_tokens():
    torch.manual_seed(0)
    model = CrystalModel(CrystalModelConfig(backbone="tiny", mtp=False)).eval()
    gen = CrystalGenerator(model, workers=0)
    assert gen.element_prompts
    results = gen.sample(n=4, chemsys="Li-O", seed=0, validate=False, min_distance=0)
    assert results and all({el.symbol for el in r.structure.composition.elements} == {"Li", "O"} for r in results)
    model.trained_vocab_size = V.SYS_ALL  # as a model saved before the element-set tokens
    assert not gen.element_prompts
    assert CrystalGenerator.from_pretrained().element_prompts  # the shipped model was trained with them
