"""Source prompts (`<src:NAME>` after the task token): the prefix round-trips through the
encoder, `prefix_condition` and the grammar; training tags the configured share of its
sequences with their row's source; `like=` writes the token, and only for a model trained to
follow that source (recorded in the saved model folder, shown by `crystalgen info`)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from training_data import fixture_corpus_path, fixture_sequences, one_thread

from crystalgen.api import CrystalGenerator, RequestError
from crystalgen.cli import main
from crystalgen.generation.request import GenerationRequest
from crystalgen.model import CrystalModel, CrystalModelConfig
from crystalgen.representation import vocab as V
from crystalgen.representation.grammar import Grammar
from crystalgen.representation.random_walk import random_completion
from crystalgen.representation.sequence import Conditioning, EncodeError, decode, encode_prefix
from crystalgen.training.config import DataConfig
from crystalgen.training.dataset import EpochBatches, prefix_condition

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _plan_end(tokens: np.ndarray) -> int:
    return int(np.flatnonzero(tokens == V.PLAN)[0]) + 1


def test_vocabulary_has_one_token_per_source_appended_at_the_end():
    assert len(V.SOURCES) == 14 and len(set(V.SOURCES)) == 14
    assert {"mpts_52/val", "wbm", "perov_5", "carbon_24"} <= set(V.SOURCES)
    assert V.TOKENS[V.SRC0 - 1] == "<sys:any>"  # appended after every older token: their ids are unchanged
    assert [V.TOKENS[V.source_token(s)] for s in V.SOURCES] == [f"<src:{s}>" for s in V.SOURCES]
    assert V.VOCAB_SIZE == V.SRC0 + len(V.SOURCES)


@pytest.mark.parametrize("condition, task", [
    (Conditioning(source="mpts_52/val"), "gen"),
    (Conditioning(spacegroup=62, elements=("Li", "Fe", "O"), elements_mode="all", source="wbm"), "gen"),
    (Conditioning(composition={"Na": 1, "Cl": 1}, formula_units=4, source="lemat/oqmd"), "csp"),
])
def test_prefix_round_trips_through_encoder_and_grammar(condition, task):
    tokens = encode_prefix(condition, task)
    assert V.TOKENS[tokens[2]] == f"<src:{condition.source}>"  # right after the task token
    assert prefix_condition(tokens) == condition
    state = Grammar.start(tokens)
    assert state.source == condition.source and state.task == task
    untagged = Grammar.start(encode_prefix(dataclasses.replace(condition, source=None), task))
    assert state.rule == untagged.rule and state.comp == untagged.comp
    # a whole sequence the grammar writes after the tagged prefix decodes to a crystal that meets it
    tokens_out, values = random_completion(state, np.random.default_rng(0))
    crystal = decode(np.concatenate([tokens, tokens_out]), np.concatenate([np.zeros(len(tokens)), values]))
    if condition.elements:
        assert {s.element for s in crystal.sites} == set(condition.elements)
    if condition.spacegroup:
        assert crystal.spacegroup == condition.spacegroup


def test_unknown_source_is_refused_and_a_misplaced_token_is_not_a_prefix():
    with pytest.raises(EncodeError, match="known: wbm"):
        encode_prefix(Conditioning(source="icsd"), "gen")
    bad = [V.BOS, V.TASK_GEN, V.SYS_ALL, V.element_token("Li"), V.source_token("wbm"), V.PLAN]
    with pytest.raises(ValueError):
        Grammar.start(bad)


def _with_sources(sources: list[str]):
    return dataclasses.replace(fixture_sequences(), sources=sources)


def test_training_tags_the_configured_share_with_the_row_source():
    data = fixture_sequences()
    n = len(data)
    # even rows from a source with a token, odd rows from one without: those are never tagged
    sources = ["mpts_52/val" if i % 2 == 0 else "somewhere/else" for i in range(n)]
    tagged_data = _with_sources(sources)
    cfg = DataConfig(batch_size=8, gen_fraction=0.5, source_prompt_fraction=1.0)
    every = EpochBatches(tagged_data, cfg, seed=0)
    assert every.prompted_sources == ("mpts_52/val",)
    named = [prefix_condition(s.tokens).source for b in every.plan(0) for s in b]
    assert named.count("mpts_52/val") == (n + 1) // 2 and set(named) == {"mpts_52/val", None}

    half = dataclasses.replace(cfg, source_prompt_fraction=0.5)
    off = dataclasses.replace(cfg, source_prompt_fraction=0.0)
    tasks, shares = set(), []
    for epoch in range(8):
        on_plan = EpochBatches(tagged_data, half, seed=1).plan(epoch)
        assert [[s.tokens.tolist() for s in b] for b in on_plan] == \
            [[s.tokens.tolist() for s in b] for b in EpochBatches(tagged_data, half, seed=1).plan(epoch)]  # seeded
        off_plan = EpochBatches(tagged_data, off, seed=1).plan(epoch)
        count = 0
        for on_batch, off_batch in zip(on_plan, off_plan, strict=True):
            for on, plain in zip(on_batch, off_batch, strict=True):
                if prefix_condition(on.tokens).source is None:
                    assert np.array_equal(on.tokens, plain.tokens)
                    continue
                count += 1
                tasks.add(V.TOKENS[on.tokens[1]])
                # the same sequence and targets, one prompt token more (never a target)
                keep = np.arange(len(on)) != 2
                assert np.array_equal(on.tokens[keep], plain.tokens) and not on.loss_mask[2]
                assert np.array_equal(on.loss_mask[keep], plain.loss_mask)
                assert np.array_equal(on.values[keep], plain.values)
        shares.append(count / ((n + 1) // 2))
    assert tasks == {"<task:csp>", "<task:gen>"}
    assert 0.35 < np.mean(shares) < 0.65  # 8 epochs x 30 rows at p = 0.5: sd 0.03
    assert EpochBatches(tagged_data, off, seed=1).prompted_sources == ()


def _tiny_model() -> CrystalModel:
    torch.manual_seed(0)
    return CrystalModel(CrystalModelConfig(backbone="tiny", mtp=False)).eval()


def test_like_writes_the_token_and_goes_with_other_requests():
    followed = ("mpts_52/val", "wbm")
    request = GenerationRequest.build(chemsys="Li-O", element_prompt=True, spacegroup=225, like="mpts_52/val",
                                      source_prompts=followed)
    names = [V.TOKENS[t] for t in request.prefix]
    assert names == ["<bos>", "<task:gen>", "<src:mpts_52/val>", "<sys:all>", "<el:Li>", "<el:O>", "<sg:225>", "<plan>"]
    csp = GenerationRequest.build(formula="NaCl", like="wbm", source_prompts=followed)
    assert [V.TOKENS[t] for t in csp.prefix[:3]] == ["<bos>", "<task:csp>", "<src:wbm>"]
    with pytest.raises(RequestError, match="unknown source 'icsd'.*known: wbm, mp_20_biternary/val"):
        GenerationRequest.build(like="icsd", source_prompts=followed)
    with pytest.raises(RequestError, match="not trained with source prompts"):
        GenerationRequest.build(like="mpts_52/val")
    with pytest.raises(RequestError, match="only mpts_52/val, wbm"):
        GenerationRequest.build(like="lemat/oqmd", source_prompts=followed)


def test_a_model_without_source_prompts_refuses_like_and_a_trained_one_samples(tmp_path):
    model = _tiny_model()
    gen = CrystalGenerator(model, workers=0)
    assert gen.source_prompts == ()
    with pytest.raises(RequestError, match="not trained with source prompts"):
        gen.sample(n=2, like="mpts_52/val", seed=0, validate=False)
    with pytest.raises(RequestError, match="not trained with source prompts"):
        CrystalGenerator(model, workers=0, like="mpts_52/val")
    assert CrystalGenerator.from_pretrained().source_prompts == ()  # the shipped model predates them
    model.source_prompts = ("mpts_52/val",)
    results = gen.sample(n=3, chemsys="Li-O", like="mpts_52/val", seed=0, validate=False, min_distance=0)
    assert results and all({e.symbol for e in r.structure.composition.elements} == {"Li", "O"} for r in results)
    # the folder records what the model follows, and loading reads it back
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["source_prompts"] == ["mpts_52/val"]
    assert CrystalModel.from_pretrained(tmp_path / "m").source_prompts == ("mpts_52/val",)


def test_training_records_the_sources_it_prompted(tmp_path):
    from crystalgen.training.config import load_config
    from crystalgen.training.loop import train
    from test_training import EXAMPLES, _tiny

    example = load_config(EXAMPLES / "finetune_like.toml")
    assert example.data.source_prompt_fraction == 0.5 and example.data.source_repeats == {"mpts_52/val": 2}

    config = _tiny(max_steps=2)
    config.data.source_prompt_fraction = 0.5
    train(config, fixture_corpus_path(), tmp_path, progress=False)
    saved = json.loads((tmp_path / "best" / "config.json").read_text())["source_prompts"]
    assert "mpts_52/val" in saved and set(saved) <= set(V.SOURCES)
    plain = _tiny(max_steps=1)
    train(plain, fixture_corpus_path(), tmp_path / "plain", progress=False)
    assert "source_prompts" not in json.loads((tmp_path / "plain" / "best" / "config.json").read_text())


def test_cli_like_option_info_and_refusals(tmp_path):
    model = _tiny_model()
    model.save_pretrained(tmp_path / "plain")
    model.source_prompts = ("mpts_52/val",)
    model.save_pretrained(tmp_path / "like")
    runner = CliRunner()
    base = ["sample", "-n", "2", "--seed", "0", "--workers", "0", "--min-distance", "0"]

    unknown = runner.invoke(main, [*base, "--model", str(tmp_path / "like"), "--like", "icsd",
                                   "--out", str(tmp_path / "a.json")])
    assert unknown.exit_code == 2 and "known: wbm" in unknown.output
    refused = runner.invoke(main, [*base, "--model", str(tmp_path / "plain"), "--like", "mpts_52/val",
                                   "--out", str(tmp_path / "b.json")])
    assert refused.exit_code == 2 and "not trained with source prompts" in refused.output
    ok = runner.invoke(main, [*base, "--model", str(tmp_path / "like"), "--like", "mpts_52/val", "--elements",
                              "Mg,O", "--out", str(tmp_path / "c.json")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "c.json").is_file()

    info = runner.invoke(main, ["info", "--model", str(tmp_path / "like"), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["source_prompts"] == ["mpts_52/val"]
    table = runner.invoke(main, ["info", "--model", str(tmp_path / "plain")])
    assert "source prompts    none" in table.output

    dng = runner.invoke(main, ["evaluate", "dng", "-n", "2", "--like", "icsd", "--no-compare"])
    assert dng.exit_code == 2 and "known: wbm" in dng.output
