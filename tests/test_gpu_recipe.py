"""The GPU recipe's data path (benchmarks/gpu_train.py) on the CPU: batches gathered from the
packed, device-resident sequences are exactly the batches `crystalgen train` collates, and a
few steps of the script write a model that loads strictly without MTP."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from training_data import fixture_corpus_path, one_thread

from crystalgen.data.corpus import read_corpus
from crystalgen.model import CrystalModel
from crystalgen.training.config import DataConfig
from crystalgen.training.dataset import EpochBatches, collate, encode_corpus, is_validation, split

ROOT = Path(__file__).parents[1]
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _script():
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "benchmarks" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_train"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_device_batches_equal_the_collated_training_batches():
    gpu = _script()
    packed = gpu.encode_packed(str(fixture_corpus_path()), 512, 4, workers=1)
    cfg = DataConfig(batch_size=8, bucket_batches=2, augment=True, val_fraction=0.1)
    train_idx = np.flatnonzero([not is_validation(m, cfg.val_fraction, 0) for m in packed.ids])
    store = gpu.DeviceRows(packed, torch.device("cpu"))
    train_set, _ = split(encode_corpus(read_corpus(fixture_corpus_path()), progress=False, max_forms=4),
                         cfg.val_fraction, 0)
    assert train_set.ids == [packed.ids[i] for i in train_idx]
    for epoch in (0, 1):
        expected = EpochBatches(train_set, cfg, seed=0).plan(epoch)
        draw = gpu.draw_epoch(packed.lengths[train_idx], packed.form_counts[train_idx], cfg, 0, epoch)
        assert len(draw.batches) == len(expected)
        for b, seqs in zip(draw.batches, expected):
            rows = packed.row_base[train_idx[b]] + 6 * draw.form[b] + draw.variant[b]
            got = store.batch(torch.from_numpy(rows), store.padded_length(rows))
            want = collate(seqs)
            for key in want:
                assert torch.equal(got[key], want[key]), key


def test_a_few_steps_write_inference_weights(tmp_path):
    gpu = _script()
    args = ["--config", str(ROOT / "examples" / "train_tiny.toml"), "--data", str(fixture_corpus_path()),
            "--out", str(tmp_path), "--device", "cpu", "--workers", "1", "--no-compile",
            "--set", "max_steps=4", "--set", "log_every=2", "--set", "data.batch_size=16",
            "--set", "data.augment=true", "--set", "data.val_fraction=0.1", "--set", "num_threads=1"]
    result = CliRunner().invoke(gpu.main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["steps"] == 4 and summary["tokens"] > 0 and not summary["compiled"]
    assert set(summary["val"]) == {"token", "length", "angle", "coordinate", "total"}
    assert [json.loads(line)["step"] for line in (tmp_path / "throughput.jsonl").read_text().splitlines()] == [2, 4]
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) <= 8
    model = CrystalModel.from_pretrained(tmp_path / "model")
    assert model.mtp is None and json.loads((tmp_path / "model" / "config.json").read_text())["torch_dtype"] == "bfloat16"
