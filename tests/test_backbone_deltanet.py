"""Gated DeltaNet: chunked, recurrent and a naive matrix-form reference agree."""

import torch

from crystalgen.backbone.deltanet import _UnitLowerInverse, chunk_gated_delta_rule, l2norm, recurrent_gated_delta_rule
from crystalgen.backbone.testing import one_torch_thread  # noqa: F401  (autouse fixture)


def naive_gated_delta_rule(q, k, v, g, beta, state=None):
    """S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T ;  o_t = S_t^T q_t / sqrt(d_k)."""
    b, t, h, dk = k.shape
    dv = v.shape[-1]
    s = torch.zeros(b, h, dk, dv, dtype=torch.float64) if state is None else state.double()
    out = torch.zeros(b, t, h, dv, dtype=torch.float64)
    eye = torch.eye(dk, dtype=torch.float64)
    for i in range(t):
        for bi in range(b):
            for hi in range(h):
                kk, vv = k[bi, i, hi].double(), v[bi, i, hi].double()
                bt, gt = beta[bi, i, hi].double(), g[bi, i, hi].double().exp()
                s[bi, hi] = gt * (eye - bt * torch.outer(kk, kk)) @ s[bi, hi] + bt * torch.outer(kk, vv)
                out[bi, i, hi] = s[bi, hi].T @ q[bi, i, hi].double() / dk**0.5
    return out, s


def _inputs(b=2, t=37, h=3, dk=8, dv=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = l2norm(torch.randn(b, t, h, dk, generator=gen))
    k = l2norm(torch.randn(b, t, h, dk, generator=gen))
    v = torch.randn(b, t, h, dv, generator=gen)
    g = -torch.rand(b, t, h, generator=gen) * 0.7
    beta = torch.rand(b, t, h, generator=gen)
    return q, k, v, g, beta


def test_chunked_recurrent_and_naive_agree_across_chunk_boundaries():
    q, k, v, g, beta = _inputs()
    ref, ref_state = naive_gated_delta_rule(q, k, v, g, beta)
    rec, rec_state = recurrent_gated_delta_rule(q, k, v, g, beta)
    for chunk in (8, 16, 64):  # 37 tokens: several chunks plus a ragged tail, and one chunk
        out, state = chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=chunk)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(state.double(), ref_state, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rec.double(), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rec_state.double(), ref_state, atol=1e-5, rtol=1e-4)


def test_initial_state_continues_a_sequence():
    q, k, v, g, beta = _inputs(t=40)
    full, full_state = chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=16)
    first, state = chunk_gated_delta_rule(q[:, :25], k[:, :25], v[:, :25], g[:, :25], beta[:, :25], chunk_size=16)
    rest, end_state = recurrent_gated_delta_rule(q[:, 25:], k[:, 25:], v[:, 25:], g[:, 25:], beta[:, 25:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(end_state, full_state, atol=1e-5, rtol=1e-4)


def test_zero_beta_and_gate_leave_the_state_untouched():
    """How padding is handled: beta = 0 and g = 0 means no write and no decay."""
    q, k, v, g, beta = _inputs(t=20)
    g2, beta2 = g.clone(), beta.clone()
    g2[:, :6] = 0.0
    beta2[:, :6] = 0.0
    _, state_padded = chunk_gated_delta_rule(q, k, v, g2, beta2, chunk_size=8)
    _, state_trimmed = chunk_gated_delta_rule(q[:, 6:], k[:, 6:], v[:, 6:], g[:, 6:], beta[:, 6:], chunk_size=8)
    torch.testing.assert_close(state_padded, state_trimmed, atol=1e-6, rtol=1e-5)


def test_gradients_match_the_recurrent_form():
    q, k, v, g, beta = (x.double().requires_grad_() for x in _inputs(b=1, t=20, h=2))
    chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=8)[0].pow(2).sum().backward()
    grads = [x.grad.clone() for x in (q, k, v, g, beta)]
    for x in (q, k, v, g, beta):
        x.grad = None
    recurrent_gated_delta_rule(q, k, v, g, beta)[0].pow(2).sum().backward()
    for got, x in zip(grads, (q, k, v, g, beta)):
        torch.testing.assert_close(got, x.grad, atol=1e-8, rtol=1e-6)


def test_unit_lower_inverse_backward():
    lower = (torch.randn(2, 6, 6, dtype=torch.float64) * 0.4).tril(-1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: _UnitLowerInverse.apply(x.tril(-1)), (lower,))
