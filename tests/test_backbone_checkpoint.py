"""Loading an HF-style safetensors checkpoint by parameter names, and `crystalgen info`."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from crystalgen.backbone import CausalLM, count_parameters, get_config, load_hf_checkpoint, to_hf_state_dict
from crystalgen.cli import main
from crystalgen.backbone.testing import one_torch_thread  # noqa: F401  (autouse fixture)


def _write_qwen35_style_checkpoint(model: CausalLM, directory) -> None:
    """Two shards + index, text weights under model.language_model.*, one per-expert
    tensor per projection, and a vision tensor that must be skipped."""
    hf = {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v
          for k, v in to_hf_state_dict(model).items()}
    assert "model.language_model.layers.0.mlp.experts.7.up_proj.weight" in hf
    hf["model.visual.patch_embed.proj.weight"] = torch.zeros(3, 3)
    names = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: hf[k] for k in keys}, str(directory / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    cfg = get_config("tiny", vocab_size=40)
    torch.manual_seed(1)
    source = CausalLM(cfg).eval()
    for p in source.parameters():  # norms start at 0/1: make every tensor informative
        p.data.add_(0.01 * torch.randn_like(p))
    for coef in (source.model.rotary_emb.cos_coef, source.model.rotary_emb.sin_coef):
        coef.add_(0.01 * torch.randn_like(coef))  # unlike the seeded ones every new model starts from
    _write_qwen35_style_checkpoint(source, tmp_path)
    torch.manual_seed(2)
    target = CausalLM(cfg).eval()
    report = load_hf_checkpoint(target, tmp_path)
    assert report.missing == [] and report.unexpected == [] and report.skipped == 1
    ids = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(target(ids).logits, source(ids).logits, atol=0, rtol=0)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name
    assert "model.rotary_emb.cos_coef" in source.state_dict()


def test_fope_coefficients_are_saved_under_intern_s1_pro_names_and_required(tmp_path):
    cfg = get_config("tiny", vocab_size=40)
    state = to_hf_state_dict(CausalLM(cfg))
    kv, kept = cfg.num_key_value_heads, CausalLM(cfg).model.rotary_emb.num_kept
    for name in ("model.rotary_emb.cos_coef", "model.rotary_emb.sin_coef"):
        assert state[name].shape == (kv, kept, kept)
    del state["model.rotary_emb.sin_coef"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError):
        load_hf_checkpoint(CausalLM(cfg), tmp_path)
    report = load_hf_checkpoint(CausalLM(cfg), tmp_path, strict=False)
    assert report.missing == ["model.rotary_emb.sin_coef"]


def test_incomplete_or_mismatched_checkpoints_are_reported(tmp_path):
    cfg = get_config("tiny", vocab_size=40)
    state = to_hf_state_dict(CausalLM(cfg))
    del state["model.layers.1.mlp.experts.3.gate_proj.weight"]
    state["model.layers.0.unknown.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError):
        load_hf_checkpoint(CausalLM(cfg), tmp_path)
    report = load_hf_checkpoint(CausalLM(cfg), tmp_path / "model.safetensors", strict=False)
    assert report.unexpected == ["model.layers.0.unknown.weight"]
    assert report.missing == ["model.layers.1.mlp.experts.gate_up_proj#model.layers.1.mlp.experts.3.gate_proj.weight"]
    save_file({"lm_head.weight": torch.zeros(41, 128)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError):
        load_hf_checkpoint(CausalLM(cfg), tmp_path / "bad.safetensors", strict=False)


def test_info_reports_the_full_intern_s2_shape_without_allocating():
    result = CliRunner().invoke(main, ["info", "--config", "intern-s2-preview", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert 33e9 <= info["total_params"] <= 37e9
    assert 2.5e9 <= info["active_params"] <= 4e9
    assert info["num_full_attention_layers"] == 10 and info["num_linear_attention_layers"] == 30


def test_info_accepts_a_json_of_overrides_and_presets_have_their_sizes(tmp_path):
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps({"base": "tiny", "num_experts": 0, "intermediate_size": 256}))
    result = CliRunner().invoke(main, ["info", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["num_experts"] == 0 and info["total_params"] == info["active_params"]
    tiny = count_parameters(get_config("tiny"))
    assert 2e6 <= tiny["total_params"] <= 6e6 and tiny["active_params"] < tiny["total_params"]
    assert 20e6 <= count_parameters(get_config("small"))["total_params"] <= 40e6
    bad = CliRunner().invoke(main, ["info", "--config", "no-such-preset"])
    assert bad.exit_code != 0
