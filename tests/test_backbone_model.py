"""Backbone / CausalLM / MTP: incremental decoding, left padding, variants, training."""

import dataclasses

import pytest
import torch

from crystalgen.backbone import Backbone, CausalLM, MTPModule, get_config
from crystalgen.backbone.testing import one_torch_thread  # noqa: F401  (autouse fixture)


def _backbone(**overrides) -> Backbone:
    torch.manual_seed(0)
    return Backbone(get_config("tiny", **overrides)).eval()


VARIANTS = [
    {},
    {"layer_types": ["full_attention"] * 4},
    {"position_embedding": "rope", "num_experts": 0},
    {"router_num_groups": 2},
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_prefill_then_single_steps_equal_a_full_forward(overrides):
    bb = _backbone(**overrides)
    x = torch.randn(2, 30, bb.config.hidden_size)
    with torch.no_grad():
        full = bb(x).hidden_states
        cache = bb.new_cache(2, 32, x.device, x.dtype)
        parts = [bb(x[:, :21], cache=cache).hidden_states]
        parts += [bb(x[:, i:i + 1], cache=cache).hidden_states for i in range(21, 30)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)
    assert cache.length == 30 and cache.next_position.tolist() == [30, 30]


@pytest.mark.parametrize("overrides", VARIANTS[:2])
def test_cache_growth_and_row_selection_keep_decoding_exact(overrides):
    """A cache that starts too small grows; dropping rows mid-way leaves the rest unchanged."""
    bb = _backbone(**overrides)
    x = torch.randn(3, 24, bb.config.hidden_size)
    with torch.no_grad():
        full = bb(x).hidden_states
        cache = bb.new_cache(3, 12, x.device, x.dtype)
        parts = [bb(x[:, :10], cache=cache).hidden_states[[0, 2]]]
        rows = torch.arange(3)
        for i in range(10, 24):
            if i == 15:  # row 1 finished: keep rows 0 and 2
                rows = torch.tensor([0, 2])
                cache.select(rows)
            cache.reserve(cache.length + 1)
            out = bb(x[rows, i:i + 1], cache=cache).hidden_states
            parts.append(out if i >= 15 else out[[0, 2]])
    assert cache.max_len >= 24 and cache.batch_size == 2
    torch.testing.assert_close(torch.cat(parts, 1), full[[0, 2]], atol=1e-5, rtol=1e-4)


def test_left_padding_does_not_change_real_positions():
    bb = _backbone()
    h = bb.config.hidden_size
    a, b = torch.randn(1, 12, h), torch.randn(1, 17, h)
    batch = torch.cat([torch.cat([100 * torch.randn(1, 5, h), a], 1), b], 0)  # row 0: 5 junk pads
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[0, :5] = False
    with torch.no_grad():
        out = bb(batch, attention_mask=mask).hidden_states
        torch.testing.assert_close(out[0, 5:], bb(a).hidden_states[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out[1], bb(b).hidden_states[0], atol=1e-5, rtol=1e-4)
        # the same through a cache: padded prefill, then unpadded steps
        cache = bb.new_cache(2, 20)
        first = bb(batch[:, :10], attention_mask=mask[:, :10], cache=cache).hidden_states
        steps = [bb(batch[:, i:i + 1], cache=cache).hidden_states for i in range(10, 17)]
    torch.testing.assert_close(torch.cat([first] + steps, 1)[0, 5:], out[0, 5:], atol=1e-5, rtol=1e-4)
    assert cache.next_position.tolist() == [12, 17]


def test_aux_loss_and_dense_ablation():
    x = torch.randn(2, 10, 128)
    moe, dense = _backbone(), _backbone(num_experts=None)
    aux = moe(x).aux_loss
    assert aux.ndim == 0 and aux.item() >= 4 * moe.config.router_aux_loss_coef * 0.99  # 4 MoE layers, each >= 1
    assert dense(x).aux_loss.item() == 0.0
    assert not any("experts" in n for n, _ in dense.named_parameters())


def test_position_ids_shift_attention_but_not_a_deltanet_only_model():
    bb = _backbone()
    x = torch.randn(1, 8, 128)
    with torch.no_grad():
        base = bb(x).hidden_states
        shifted = bb(x, position_ids=torch.arange(8)[None] + 7).hidden_states
    assert not torch.allclose(base, shifted, atol=1e-4)  # the full-attention layer uses FoPE
    lin = _backbone(layer_types=["linear_attention"] * 4)
    with torch.no_grad():
        torch.testing.assert_close(lin(x).hidden_states, lin(x, position_ids=torch.arange(8)[None] + 7).hidden_states)


def test_config_replace_and_validation():
    cfg = get_config("tiny")
    bigger = dataclasses.replace(cfg, num_hidden_layers=8)
    assert bigger.layer_types.count("full_attention") == 2 and len(bigger.layer_types) == 8
    with pytest.raises(ValueError):
        dataclasses.replace(cfg, layer_types=["full_attention"] * 3)
    with pytest.raises(ValueError):
        dataclasses.replace(cfg, position_embedding="alibi")


def test_config_from_dict_refuses_unknown_keys_like_the_model_config():
    from crystalgen.backbone import BackboneConfig
    from crystalgen.model import CrystalModelConfig

    assert BackboneConfig.from_dict(dataclasses.asdict(get_config("tiny"))) == get_config("tiny")
    with pytest.raises(ValueError, match="unknown backbone config keys \\['hiden_size'\\]"):
        BackboneConfig.from_dict({"hiden_size": 64})
    with pytest.raises(ValueError, match="unknown model config keys"):
        CrystalModelConfig.from_dict({"backbon": "tiny"})


def test_mtp_shapes_and_causal_lm_learns_a_pattern():
    torch.manual_seed(0)
    cfg = get_config("tiny", vocab_size=16)
    lm = CausalLM(cfg)
    assert isinstance(lm.mtp, MTPModule)
    hidden, embeds = torch.randn(2, 9, 128), torch.randn(2, 9, 128)
    assert lm.mtp(hidden[:, :-1], embeds[:, 1:]).shape == (2, 8, 128)
    # a periodic sequence: both the next token and the one after are predictable
    ids = torch.tensor([[1, 2, 3, 4, 5] * 6, [6, 7, 8, 9, 10] * 6])
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        out = lm(ids, labels=ids)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else (out.loss.item(), out.mtp_loss.item())
    assert out.loss.item() < 0.3 * first[0]
    assert out.mtp_loss.item() < 0.5 * first[1]
    assert all(p.grad is not None for n, p in lm.named_parameters() if n.startswith("mtp.fc"))
