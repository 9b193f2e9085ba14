"""MoE: sorted dispatch equals the per-token loop; grouped and STE routing; balance loss."""

import pytest
import torch

from crystalgen.backbone import get_config
from crystalgen.backbone.moe import Routing, SparseMoeBlock, grouped_mm_supported, load_balancing_loss, naive_moe
from crystalgen.backbone.testing import one_torch_thread  # noqa: F401  (autouse fixture)


def _block(**overrides) -> SparseMoeBlock:
    torch.manual_seed(0)
    block = SparseMoeBlock(get_config("tiny", **overrides))
    for p in block.parameters():
        torch.nn.init.normal_(p, 0.0, 0.1)
    return block


def test_sorted_dispatch_equals_naive_loop():
    for overrides in ({}, {"num_experts": 8, "num_experts_per_tok": 4, "router_num_groups": 2}):
        block = _block(**overrides)
        x = torch.randn(3, 11, block.gate.weight.shape[1])
        out, _ = block(x)
        torch.testing.assert_close(out, naive_moe(block, x), atol=1e-5, rtol=1e-4)


def test_dispatch_compute_combine_is_the_forward():
    block = _block()
    x = torch.randn(17, block.gate.weight.shape[1])
    routing = block.gate(x)
    xs, order, counts = block.experts.dispatch(x, routing)
    assert xs.shape == (17 * routing.indices.shape[1], x.shape[1]) and int(counts.sum()) == xs.shape[0]
    torch.testing.assert_close(block.experts.combine(block.experts.compute(xs, counts), order, routing),
                               block.experts(x, routing), atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the grouped GEMM runs on CUDA only")
def test_grouped_mm_on_cuda_equals_the_per_expert_loop():
    block = _block().cuda().to(torch.bfloat16)
    x = torch.randn(64, block.gate.weight.shape[1], device="cuda", dtype=torch.bfloat16)
    routing = block.gate(x)
    xs, _, counts = block.experts.dispatch(x, routing)
    if not grouped_mm_supported(x.device):
        pytest.skip("this GPU or build has no bf16 grouped GEMM")
    grouped = block.experts.compute(xs, counts)
    block.experts.grouped_mm = False
    loop = block.experts.compute(xs, counts)
    torch.testing.assert_close(grouped.float(), loop.float(), atol=2e-2, rtol=2e-2)


def test_grouped_routing_takes_k_over_g_experts_from_every_group():
    block = _block(num_experts=8, num_experts_per_tok=4, router_num_groups=4)
    routing = block.gate(torch.randn(50, block.gate.weight.shape[1]))
    groups = (routing.indices // 2).sort(dim=-1).values  # 4 groups of 2 experts
    assert torch.equal(groups, torch.arange(4).expand(50, 4))
    torch.testing.assert_close(routing.weights.sum(-1), torch.ones(50))
    # each chosen expert is the better one of its group
    best = routing.probs.view(50, 4, 2).argmax(-1) + torch.arange(4) * 2
    assert torch.equal(routing.indices.sort(-1).values, best.sort(-1).values)


def test_ste_routing_same_forward_gradient_through_dense_softmax():
    x = torch.randn(20, 128)
    plain, ste = _block(), _block(router_ste=True)
    out_plain, _ = plain(x)
    out_ste, _ = ste(x)
    torch.testing.assert_close(out_plain, out_ste)
    out_plain.sum().backward()
    out_ste.sum().backward()
    # renormalised top-k weights have zero gradient along the sum; the STE ones do not
    assert not torch.allclose(plain.gate.weight.grad, ste.gate.weight.grad)
    torch.testing.assert_close(plain.experts.down_proj.grad, ste.experts.down_proj.grad)


def test_load_balancing_loss_is_one_when_balanced_and_larger_when_collapsed():
    n, e = 8, 4
    probs = torch.full((n, e), 1 / e)
    balanced = Routing(torch.arange(n).remainder(e)[:, None], torch.ones(n, 1), probs)
    assert abs(load_balancing_loss(balanced, e).item() - 1.0) < 1e-6
    collapsed_probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).expand(n, e)
    collapsed = Routing(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1), collapsed_probs)
    assert load_balancing_loss(collapsed, e).item() > 2.5
    mask = torch.tensor([True] * 4 + [False] * 4)
    half = Routing(torch.cat([torch.arange(4), torch.zeros(4, dtype=torch.long)])[:, None], torch.ones(n, 1), probs)
    assert abs(load_balancing_loss(half, e, mask).item() - 1.0) < 1e-6


def test_aux_loss_is_weighted_by_the_config_coefficient():
    block = _block()
    block2 = _block(router_aux_loss_coef=0.5)
    x = torch.randn(2, 9, 128)
    _, aux = block(x)
    _, aux2 = block2(x)
    torch.testing.assert_close(aux2 / 0.5, aux / get_config("tiny").router_aux_loss_coef)
    assert aux2.item() > 0.5 * 0.9  # the unweighted loss is >= 1 (1 only when perfectly balanced)
