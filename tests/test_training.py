"""Training: config files, the seeded split, bucketing, and short real runs on the fixture
corpus (loss goes down; resume is exact; 2-process gloo DDP through torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from training_data import fixture_corpus_path, fixture_sequences, one_thread

from crystalgen.cli import main
from crystalgen.model import CrystalModel, CrystalModelConfig
from crystalgen.training.config import DataConfig, TrainConfig, load_config
from crystalgen.representation import vocab as V
from crystalgen.representation.grammar import Grammar
from crystalgen.representation.sequence import decode
from crystalgen.training.dataset import VARIANTS, EpochBatches, bucketed_batches, is_validation, prefix_condition, split
from crystalgen.training.loop import learning_rate, load_checkpoint, train

EXAMPLES = Path(__file__).parents[1] / "examples"
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _records(out: Path, split_name: str) -> list[dict]:
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == split_name]


def _tiny(**changes) -> TrainConfig:
    """A fast run on the fixture: the tiny backbone, small batches, frequent logs."""
    config = load_config(
        EXAMPLES / "train_tiny.toml",
        ["num_threads=1", "sample_every=0", "log_every=5", "eval_every=100", "data.batch_size=8",
         "data.val_fraction=0.1", "optim.warmup_steps=5", "optim.lr=3e-3"],
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_example_configs_load_and_unknown_keys_fail(tmp_path):
    for name in ("train_tiny.toml", "train_gpu.toml"):
        config = load_config(EXAMPLES / name)
        assert config.max_steps > 0 and config.model.backbone
    config = load_config(EXAMPLES / "train_tiny.toml", ["model.backbone_overrides.num_experts=0",
                                                       "model.backbone_overrides.position_embedding=rope",
                                                       "max_minutes=2.5"])
    assert config.model.backbone_overrides == {"num_experts": 0, "position_embedding": "rope"}
    assert config.max_minutes == 2.5 and not config.model.backbone_config().is_moe
    (tmp_path / "bad.json").write_text(json.dumps({"optim": {"learning_rate": 1}}))
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(tmp_path / "bad.json")


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig().optim
    lrs = [learning_rate(cfg, s, s / 1000) for s in range(1000)]
    assert lrs[0] < lrs[cfg.warmup_steps - 1] == pytest.approx(max(lrs), rel=0.01)
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[cfg.warmup_steps :], lrs[cfg.warmup_steps + 1 :]))


def test_validation_split_is_seeded_by_material_id():
    ids = [f"mp-{i}" for i in range(20000)]
    held = np.array([is_validation(m, 0.05, seed=0) for m in ids])
    assert 0.04 < held.mean() < 0.06
    assert [is_validation(m, 0.05, 0) for m in ids[:500]] == list(held[:500])  # order-free, repeatable
    assert (np.array([is_validation(m, 0.05, seed=1) for m in ids]) != held).any()
    data = fixture_sequences()
    train_set, val_set = split(data, 0.1, seed=0)
    assert len(train_set) + len(val_set) == len(data) and not set(train_set.ids) & set(val_set.ids)


def test_runs_with_different_seeds_hold_out_the_same_structures(tmp_path):
    """The training seed shuffles batches and initialises weights; the held-out structures
    depend on ``data.split_seed`` alone, so a seed ablation scores every run on unseen data."""
    held = {}
    for seed, split_seed in ((0, 0), (5, 0), (0, 3)):
        config = _tiny(max_steps=1, seed=seed)
        config.data.split_seed = split_seed
        out = tmp_path / f"s{seed}_{split_seed}"
        train(config, fixture_corpus_path(), out, progress=False)
        held[seed, split_seed] = (out / "validation_ids.txt").read_text().split()
    assert held[0, 0] == held[5, 0] and held[0, 0]
    assert held[0, 3] != held[0, 0]
    data = fixture_sequences()
    assert held[0, 0] == split(data, 0.1, seed=0)[1].ids


def test_every_prefix_variant_is_a_legal_sequence_of_the_same_crystal():
    """The variants the API can ask for (no <fu:k>, a named <sg:N>, de novo) all train on real data."""
    data = fixture_sequences()
    for seqs in data.sequences[:12]:
        assert set(seqs) == set(VARIANTS)
        reference = decode(seqs["csp"].tokens, seqs["csp"].values)
        for name, seq in seqs.items():
            cut = int((seq.tokens == V.PLAN).nonzero()[0][0]) + 1
            condition = prefix_condition(seq.tokens)
            assert (condition.spacegroup == reference.spacegroup) == name.endswith("_sg")
            assert (condition.formula_units is not None) == (name in ("csp", "csp_sg"))
            assert (condition.composition is None) == name.startswith("gen")
            assert not seq.loss_mask[:cut].any()  # the prefix is never a target
            state = Grammar.start(seq.tokens[:cut])
            for tok, val in zip(seq.tokens[cut:], seq.values[cut:]):
                state.advance(int(tok), float(val))
            assert state.done
            assert decode(seq.tokens, seq.values) == reference


def test_bucketing_covers_everything_once_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 200, size=1000)
    batches = bucketed_batches(lengths, 16, 20, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random = sum(16 * lengths[b].max() for b in np.array_split(rng.permutation(1000), 1000 // 16))
    assert padded < 0.8 * random


def test_epoch_batches_are_repeatable_and_disjoint_across_ranks():
    data = fixture_sequences()
    cfg = DataConfig(batch_size=4, bucket_batches=3)
    one = EpochBatches(data, cfg, seed=0)
    assert [[len(s) for s in b] for b in one.plan(0)] == [[len(s) for s in b] for b in one.plan(0)]
    ranks = [EpochBatches(data, cfg, seed=0, rank=r, world=2).plan(0) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) >= 5
    seen = [id(s) for r in ranks for b in r for s in b]
    assert len(seen) == len(set(seen))


def test_training_lowers_the_loss_and_keeps_the_best_model(tmp_path):
    final = train(_tiny(max_steps=40, sample_every=40, sample_count=2), fixture_corpus_path(), tmp_path,
                  progress=False)
    logs = _records(tmp_path, "train")
    assert logs[-1]["loss"] < logs[0]["loss"] - 1.0
    assert logs[-1]["token"] < logs[0]["token"] and logs[-1]["coordinate"] < logs[0]["coordinate"]
    assert logs[-1]["tokens_per_s"] > 0
    assert set(final) == {"token", "length", "angle", "coordinate", "total"}
    best = CrystalModel.from_pretrained(tmp_path / "best")
    assert json.loads((tmp_path / "best" / "training.json").read_text())["step"] == 40
    assert sum(p.numel() for p in best.parameters()) > 0
    (sampled,) = _records(tmp_path, "sample")  # the sample -> validate check ran once, at the end
    assert sampled["step"] == 40 and 0 <= sampled["pass_rate"] <= sampled["decoded"] <= sampled["completed"] <= 1


def test_resume_continues_exactly(tmp_path):
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    train(_tiny(max_steps=12), fixture_corpus_path(), straight, progress=False)
    train(_tiny(max_steps=12, session_steps=7), fixture_corpus_path(), split_run, progress=False)
    assert load_checkpoint(split_run / "checkpoint.pt", torch.device("cpu"))["state"]["step"] == 7
    train(_tiny(max_steps=12), fixture_corpus_path(), split_run, resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoint.pt", torch.device("cpu"))  # weights_only=True
    b = load_checkpoint(split_run / "checkpoint.pt", torch.device("cpu"))
    assert a["state"]["step"] == b["state"]["step"] == 12
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert _records(straight, "train")[-1]["loss"] == _records(split_run, "train")[-1]["loss"]


def test_cli_help_and_a_two_process_gloo_run(tmp_path):
    assert "--resume" in CliRunner().invoke(main, ["train", "--help"]).output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "crystalgen.training", "--config", str(EXAMPLES / "train_tiny.toml"),
           "--data", str(fixture_corpus_path()), "--out", str(tmp_path), "--device", "cpu", "--quiet",
           "--set", "max_steps=6", "--set", "num_threads=1", "--set", "sample_every=0",
           "--set", "data.batch_size=4", "--set", "data.val_fraction=0.1"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    start = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])
    assert start["world"] == 2
    done = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()][-1]
    assert done["event"] == "done" and done["step"] == 6
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))
    assert ckpt["state"]["step"] == 6
    assert (tmp_path / "best" / "model.safetensors").exists()


def test_init_from_starts_a_run_from_saved_weights(tmp_path):
    """`init_from` (a model folder here) puts the saved weights into the new run's model
    before its first step: a run of zero steps saves them back unchanged."""
    from crystalgen.model import CrystalModel
    from crystalgen.training.loop import warm_start

    torch.manual_seed(3)
    source = CrystalModel(CrystalModelConfig(backbone="tiny", mtp=False))
    source.save_pretrained(tmp_path / "source", dtype=torch.float32)
    torch.manual_seed(4)
    fresh = CrystalModel(CrystalModelConfig(backbone="tiny", mtp=False))
    assert warm_start(fresh, tmp_path / "source") == []
    for name, tensor in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="weight"):
        warm_start(CrystalModel(CrystalModelConfig(backbone="tiny", mtp=False, n_mixture=4)), tmp_path / "source")


def test_sources_restrict_training_to_those_corpus_rows(tmp_path):
    from crystalgen.data.corpus import read_corpus
    from crystalgen.training.dataset import source_rows

    corpus = read_corpus(fixture_corpus_path())
    rows = source_rows(corpus.sources, ("mpts_52/val", "lemat/mp"))
    assert set(corpus.sources[rows]) == {"mpts_52/val", "lemat/mp"}
    assert len(rows) == sum(s in ("mpts_52/val", "lemat/mp") for s in corpus.sources) < len(corpus)
    assert source_rows(corpus.sources, ()) is None
    with pytest.raises(ValueError, match="no rows with source"):
        source_rows(corpus.sources, ("icsd",))
    weighted = source_rows(corpus.sources, (), {"mpts_52/val": 3})
    tags = list(corpus.sources[weighted])
    assert tags.count("mpts_52/val") == 3 * list(corpus.sources).count("mpts_52/val")
    assert len(weighted) == len(corpus) + 2 * list(corpus.sources).count("mpts_52/val")
    config = load_config(EXAMPLES / "finetune_mp_like.toml")
    assert config.data.source_repeats == {"mpts_52/val": 4} and not config.data.sources

    config = _tiny(max_steps=2)
    config.data.sources = ("mpts_52/val", "lemat/mp")
    train(config, fixture_corpus_path(), tmp_path, progress=False)
    start = next(r for r in map(json.loads, (tmp_path / "train_log.jsonl").read_text().splitlines())
                 if r.get("event") == "start")
    assert start["train"] + start["val"] + start["skipped"] == len(rows)

    config.data.sources, config.data.source_repeats = (), {"mpts_52/val": 3}
    train(config, fixture_corpus_path(), tmp_path / "weighted", progress=False)
    again = next(r for r in map(json.loads, (tmp_path / "weighted" / "train_log.jsonl").read_text().splitlines())
                 if r.get("event") == "start")
    assert again["train"] + again["val"] + again["skipped"] > len(corpus)  # the repeated rows, trained 3 times
