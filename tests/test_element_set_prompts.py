"""De novo element-set prompts (`<sys:all|any> <el:X>+`): what training writes, what the
grammar reads from them, and loading a model saved before the tokens existed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_data import fixture_sequences, one_thread

from crystalgen.model import CrystalModel, CrystalModelConfig
from crystalgen.representation import vocab as V
from crystalgen.representation.charge import PlanRule
from crystalgen.representation.grammar import Grammar
from crystalgen.representation.sequence import Conditioning, decode, encode_prefix
from crystalgen.training.config import DataConfig
from crystalgen.training.dataset import EpochBatches, prefix_condition

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def test_prefix_round_trips_and_the_grammar_reads_the_set_as_a_rule():
    condition = Conditioning(spacegroup=62, elements=("O", "Li", "Fe"), elements_mode="all")
    tokens = encode_prefix(condition, "gen")
    assert [V.TOKENS[t] for t in tokens[:6]] == ["<bos>", "<task:gen>", "<sys:all>", "<el:Li>", "<el:Fe>", "<el:O>"]
    assert prefix_condition(tokens) == Conditioning(spacegroup=62, elements=("Li", "Fe", "O"), elements_mode="all")
    rule = Grammar.start(tokens).rule
    assert rule.allowed == rule.required == frozenset({"Li", "Fe", "O"})
    # a subset prompt only limits; a caller's rule is merged (allowed by both, required by either)
    anyset = encode_prefix(Conditioning(elements=("Mg", "Si", "O"), elements_mode="any"), "gen")
    merged = Grammar.start(anyset, rule=PlanRule(allowed=frozenset({"Mg", "O", "Ca"}), required=frozenset({"O"}))).rule
    assert merged.allowed == frozenset({"Mg", "O"}) and merged.required == frozenset({"O"})


def test_element_set_prompt_refuses_a_composition():
    with pytest.raises(ValueError):
        encode_prefix(Conditioning(composition={"Na": 1, "Cl": 1}, elements=("Na", "Cl")), "gen")
    with pytest.raises(ValueError):
        encode_prefix(Conditioning(elements=("Na", "Cl")), "csp")


def test_training_prompts_name_the_structure_elements_or_a_superset():
    data = fixture_sequences()
    cfg = DataConfig(batch_size=8, gen_fraction=0.6, element_set_fraction=0.8)
    plan = EpochBatches(data, cfg, seed=0).plan(0)
    assert [[s.tokens.tolist() for s in b] for b in plan] == \
        [[s.tokens.tolist() for s in b] for b in EpochBatches(data, cfg, seed=0).plan(0)]
    seen = {"all": 0, "any": 0}
    for seq in (s for b in plan for s in b):
        condition = prefix_condition(seq.tokens)
        if condition.elements is None:
            continue
        used = {site.element for site in decode(seq.tokens, seq.values).sites}
        listed = set(condition.elements)
        assert used == listed if condition.elements_mode == "all" else used < listed
        seen[condition.elements_mode] += 1
        # every sequence training sees is one the sampler's grammar accepts from its prefix
        grammar = Grammar.start(seq.tokens[: int(np.flatnonzero(seq.tokens == V.PLAN)[0]) + 1], max_atoms=512)
        assert grammar.rule.allowed == frozenset(listed)
    assert seen["all"] > 0 and seen["any"] > 0
    off = EpochBatches(data, DataConfig(batch_size=8, gen_fraction=0.6), seed=0).plan(0)
    assert all(prefix_condition(s.tokens).elements is None for b in off for s in b)


def test_a_model_saved_with_the_older_vocabulary_loads_and_never_emits_the_new_tokens(tmp_path):
    torch.manual_seed(0)
    model = CrystalModel(CrystalModelConfig(backbone="tiny", mtp=False))
    model.save_pretrained(tmp_path / "new")
    # the same weights as a model of the vocabulary before the element-set tokens
    old = tmp_path / "old"
    state = {k: v[: V.SYS_ALL] if k in ("embed_tokens.weight", "token_head.proj.weight") else v
             for k, v in model.state_dict().items()}
    from crystalgen.backbone import save_weights

    save_weights(state, old)
    meta = json.loads((tmp_path / "new" / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**meta, "vocab_size": V.SYS_ALL}))
    loaded = CrystalModel.from_pretrained(old)
    assert not loaded.knows_token(V.SYS_ALL) and loaded.knows_token(V.SYS_ALL - 1)
    with torch.no_grad():
        logits = loaded.token_logits(torch.randn(3, loaded.embed_tokens.weight.shape[1]))
    assert torch.isinf(logits[..., V.SYS_ALL:]).all() and torch.isfinite(logits[..., : V.SYS_ALL]).all()
    with pytest.raises(ValueError, match="larger vocabulary"):
        (old / "config.json").write_text(json.dumps({**meta, "vocab_size": V.VOCAB_SIZE + 1}))
        CrystalModel.from_pretrained(old)
