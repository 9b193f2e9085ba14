"""Sharded safetensors (Hugging Face layout) and the stored dtype, through the crystal model."""

from __future__ import annotations

import json
import os

import pytest
import torch
from training_data import fixture_sequences

from crystalgen.backbone import load_weights, save_weights, weight_files
from crystalgen.backbone.shards import INDEX_FILE, SINGLE_FILE
from crystalgen.backbone.testing import one_torch_thread  # noqa: F401  (autouse fixture)
from crystalgen.model import CrystalModel, CrystalModelConfig
from crystalgen.training.dataset import collate


@pytest.fixture(scope="module")
def model() -> CrystalModel:
    torch.manual_seed(3)
    return CrystalModel(CrystalModelConfig(n_mixture=3)).eval()


@pytest.fixture(scope="module")
def batch():
    data = fixture_sequences()
    return collate([s["csp"] for s in data.sequences[:3]])


def _outputs(model: CrystalModel, batch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(batch)


def test_a_model_larger_than_the_shard_limit_round_trips_exactly_through_several_shards(tmp_path, model, batch):
    limit = 2**20  # 1 MiB: the ~11 MB float32 model needs about a dozen shards
    model.save_pretrained(tmp_path, max_shard_bytes=limit)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 5 and not (tmp_path / SINGLE_FILE).exists()
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert [p.name for p in weight_files(tmp_path)] == shards
    biggest = max(t.numel() * t.element_size() for t in model.state_dict().values())
    for shard in shards:
        assert (tmp_path / shard).stat().st_size <= max(limit, biggest) + 64 * 1024  # + safetensors header
    assert set(index["weight_map"]) == set(model.state_dict())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    loaded = CrystalModel.from_pretrained(tmp_path)
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    a, b = _outputs(model, batch), _outputs(loaded, batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_single_file_layout_still_loads_and_resaving_removes_stale_shards(tmp_path, model, batch):
    model.save_pretrained(tmp_path, max_shard_bytes=2**20)
    model.save_pretrained(tmp_path)  # default limit: one file, the shards of the first save are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", SINGLE_FILE]
    a, b = _outputs(model, batch), _outputs(CrystalModel.from_pretrained(tmp_path), batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_missing_shard_is_a_clear_error(tmp_path, model):
    model.save_pretrained(tmp_path, max_shard_bytes=2**20)
    second = f"model-00002-of-{len(list(tmp_path.glob('model-*'))):05d}.safetensors"
    (tmp_path / second).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing: {second}"):
        CrystalModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        weight_files(tmp_path / "nowhere")


def test_bf16_storage_halves_the_files_records_the_dtype_and_loads_as_float32(tmp_path, model, batch):
    model.save_pretrained(tmp_path / "fp32")
    model.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    size = {d: (tmp_path / d / SINGLE_FILE).stat().st_size for d in ("fp32", "bf16")}
    assert 0.45 < size["bf16"] / size["fp32"] < 0.55
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded = CrystalModel.from_pretrained(tmp_path / "bf16")
    for name, t in model.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == t.dtype
        if t.is_floating_point():  # bf16 keeps 8 significant bits: relative error <= 2**-8
            assert torch.equal(got, t.to(torch.bfloat16).float()), name
            assert torch.allclose(got, t, rtol=2**-8, atol=0), name
    a, b = _outputs(model, batch), _outputs(loaded, batch)
    for k in ("token", "length", "angle", "coordinate"):
        assert abs(a[k].item() - b[k].item()) < 0.05 * (1 + abs(a[k].item())), k


def test_integer_tensors_keep_their_dtype(tmp_path):
    state = {"w": torch.randn(4, 4), "ids": torch.arange(5)}
    save_weights(state, tmp_path, dtype=torch.bfloat16)
    out = load_weights(tmp_path)
    assert out["ids"].dtype == torch.int64 and torch.equal(out["ids"], state["ids"])
    assert out["w"].dtype == torch.float32
    with pytest.raises(ValueError):
        save_weights(state, tmp_path / "x", dtype=torch.float64)


def test_weight_files_follow_the_users_umask(tmp_path):
    """safetensors creates files 0600; saved weights get what a plain open would (#17: no private files)."""
    old = os.umask(0o022)
    try:
        files = save_weights({"w": torch.ones(4)}, tmp_path / "m", max_shard_bytes=8)
    finally:
        os.umask(old)
    assert files and all((f.stat().st_mode & 0o777) == 0o644 for f in files)
