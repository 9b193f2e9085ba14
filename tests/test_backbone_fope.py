"""FoPE: reduces to RoPE exactly; fixed coefficients; clipped channels are identity."""

import math

import torch

from crystalgen.backbone.fope import RotaryEmbedding, apply_rotary, rope_frequencies, rotate_half
from crystalgen.backbone.testing import one_torch_thread  # noqa: F401  (autouse fixture)


def _rope_reference(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Textbook RoPE on (B, H, T, d): rotate channel pairs (i, i + d/2) by angle w_i * t."""
    d = x.shape[-1]
    ang = positions[:, None, :, None].double() * rope_frequencies(d, theta)  # (B, 1, T, d/2)
    x1, x2 = x[..., : d // 2].double(), x[..., d // 2:].double()
    return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()], -1)


def test_fope_with_identity_coefficients_and_no_clipping_is_rope():
    pos = torch.arange(50).expand(2, 50)
    x = torch.randn(2, 4, 50, 16)
    fope = RotaryEmbedding(16, 2, 10000.0, 64, kind="fope", clip=False, coefficients="identity")
    rope = RotaryEmbedding(16, 2, 10000.0, 64, kind="rope")
    out_fope = apply_rotary(x, *fope(pos))
    torch.testing.assert_close(out_fope, apply_rotary(x, *rope(pos)), atol=0, rtol=0)
    torch.testing.assert_close(out_fope.double(), _rope_reference(x, pos, 10000.0), atol=1e-5, rtol=1e-5)


def test_low_frequencies_are_clipped_to_identity():
    max_len = 100
    fope = RotaryEmbedding(16, 2, 10000.0, max_len, kind="fope")
    kept = int((rope_frequencies(16, 10000.0) > 2 * math.pi / max_len).sum())
    assert 0 < fope.num_kept == kept < 8
    assert fope.cos_coef.shape == (2, kept, kept)
    cos, sin = fope(torch.arange(30).expand(1, 30))
    assert cos.shape == (1, 2, 30, 16)
    for half in (slice(kept, 8), slice(8 + kept, 16)):
        assert torch.all(cos[..., half] == 1) and torch.all(sin[..., half] == 0)


def test_coefficients_are_fixed_by_seed_and_differ_per_kv_head():
    a, b = RotaryEmbedding(16, 2, 1e4, 1e6, seed=3), RotaryEmbedding(16, 2, 1e4, 1e6, seed=3)
    assert torch.equal(a.cos_coef, b.cos_coef) and torch.equal(a.sin_coef, b.sin_coef)
    assert not torch.equal(a.cos_coef[0], a.cos_coef[1])
    assert not torch.equal(a.cos_coef, RotaryEmbedding(16, 2, 1e4, 1e6, seed=4).cos_coef)
    assert all(not p.requires_grad for p in a.buffers()) and not list(a.parameters())
    noise = a.cos_coef - torch.eye(8)  # identity + xavier_normal(gain 0.5): std 0.5 * sqrt(2 / 16)
    assert 0.08 < noise.std().item() < 0.2


def test_query_heads_reuse_their_kv_head_coefficients():
    fope = RotaryEmbedding(8, 2, 1e4, 1e6)
    cos, sin = fope(torch.arange(10).expand(1, 10))
    x = torch.randn(1, 1, 10, 8).expand(1, 4, 10, 8)  # 4 query heads, same content
    out = apply_rotary(x, cos, sin)
    torch.testing.assert_close(out[:, 0], out[:, 1])  # heads 0, 1 share KV head 0
    torch.testing.assert_close(out[:, 2], x[:, 2] * cos[:, 1] + rotate_half(x[:, 2]) * sin[:, 1])
    assert not torch.allclose(out[:, 1], out[:, 2])
