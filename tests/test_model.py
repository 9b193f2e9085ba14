"""The crystal model on real encoded crystals: loss targets, incremental decoding, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_data import fixture_sequences, one_thread

from crystalgen.heads import GaussianMixture, RowStreams, VonMisesMixture
from crystalgen.model import HEAD_NAMES, CrystalModel, CrystalModelConfig
from crystalgen.representation import vocab as V
from crystalgen.training.dataset import collate


_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def sequences():
    data = fixture_sequences()
    assert len(data) >= 50  # the 60-row fixture, nearly all encodable
    return [s["csp"] for s in data.sequences[:4]] + [data.sequences[4]["gen"]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CrystalModel(CrystalModelConfig()).eval()


def _expected_counts(seq) -> dict[str, int]:
    kind, loss, free = seq.value_kind[1:], seq.loss_mask[1:], seq.free[1:]
    out = {"token": int((loss & (kind == 0)).sum())}
    for k, name in ((1, "length"), (2, "angle"), (3, "coordinate")):
        out[name] = int((loss & free & (kind == k)).sum())
    return out


def test_batch_losses_are_the_sum_of_single_sequence_losses(model, sequences):
    """Right padding adds no targets and changes no real position's prediction."""
    with torch.no_grad():
        together = model.nll_sums(collate(sequences))
        alone = [model.nll_sums(collate([s])) for s in sequences]
    for name in HEAD_NAMES:
        assert together[name][1] == sum(a[name][1] for a in alone) == sum(_expected_counts(s)[name] for s in sequences)
        total = sum(float(a[name][0]) for a in alone)
        assert float(together[name][0]) == pytest.approx(total, rel=1e-4, abs=1e-3)
    assert together["coordinate"][1] > 0 and together["length"][1] > 0


def test_masked_and_indexed_heads_agree(model, sequences):
    """The GPU path (heads on every position, targets by mask) equals the CPU path."""
    batch = collate(sequences)
    try:
        model.mask_heads = True
        masked = model(batch)
    finally:
        model.mask_heads = False
    indexed = model(batch)
    for k in indexed:
        assert torch.allclose(masked[k], indexed[k], rtol=1e-5, atol=1e-5), k


def test_forward_reports_every_head_and_mtp(model, sequences):
    losses = model(collate(sequences))
    assert set(losses) == {*HEAD_NAMES, "aux", "mtp", "loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["token"].item() == pytest.approx(torch.log(torch.tensor(float(V.VOCAB_SIZE))).item(), rel=0.1)
    no_mtp = CrystalModel(CrystalModelConfig(mtp=False))
    assert "mtp" not in no_mtp(collate(sequences)) and no_mtp.mtp is None


def test_incremental_decoding_matches_the_full_forward(model, sequences):
    """Prefill a left-padded batch of prefixes, then feed one position at a time."""
    seqs = sequences[:2]
    cut = [int((s.tokens == V.PLAN).nonzero()[0][0]) + 1 for s in seqs]
    steps = min(len(s) for s in seqs) - max(cut)
    width = max(cut)
    tok = torch.zeros(2, width, dtype=torch.long)
    val = torch.zeros(2, width)
    kind = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.bool)
    for i, (s, c) in enumerate(zip(seqs, cut)):
        tok[i, width - c :] = torch.from_numpy(s.tokens[:c])
        mask[i, width - c :] = True
    with torch.no_grad():
        full = [model.backbone(model.embed(*(torch.from_numpy(a)[None] for a in (s.tokens, s.values, s.value_kind.astype("int64"))))).hidden_states[0] for s in seqs]
        cache = model.new_cache(2, width + steps)
        hidden = model.step(tok, val, kind, cache, attention_mask=mask)
        for j in range(steps):
            for i, c in enumerate(cut):
                assert torch.allclose(hidden[i], full[i][c - 1 + j], atol=2e-4), (i, j)
            pos = [c + j for c in cut]
            new = [torch.tensor([[getattr(s, f)[p] for s, p in zip(seqs, pos)]]).T for f in ("tokens", "values", "value_kind")]
            hidden = model.step(new[0].long(), new[1].float(), new[2].long(), cache)


def test_value_distributions_by_kind(model, sequences):
    hidden = torch.randn(3, model.backbone.config.hidden_size)
    assert isinstance(model.value_distribution(hidden, 1), GaussianMixture)
    assert isinstance(model.value_distribution(hidden, 2), GaussianMixture)
    coords = model.value_distribution(hidden, 3)
    assert isinstance(coords, VonMisesMixture)
    drawn = coords.sample(1.0, RowStreams.seeded(0, 3))
    assert drawn.shape == (3,) and ((drawn >= 0) & (drawn < 1)).all()
    assert model.token_logits(hidden).shape == (3, V.VOCAB_SIZE)


def test_save_and_load_round_trip_with_backbone_overrides(tmp_path, sequences):
    torch.manual_seed(1)
    config = CrystalModelConfig(backbone_overrides={"num_experts": 0, "position_embedding": "rope"}, n_mixture=3)
    model = CrystalModel(config).eval()
    assert not model.backbone.config.is_moe and model.backbone.config.position_embedding == "rope"
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["backbone_overrides"] == {"num_experts": 0, "position_embedding": "rope"} and meta["n_mixture"] == 3
    loaded = CrystalModel.from_pretrained(tmp_path / "m")
    batch = collate(sequences)
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fope_coefficients_travel_with_the_weights(tmp_path, sequences):
    """A saved model brings its own FoPE coefficients: a model whose coefficients differ from
    the seeded ones every new model starts from comes back with them, and a weight file
    without them is refused."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(2)
    model = CrystalModel(CrystalModelConfig(n_mixture=3)).eval()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for rotary in (model.backbone.rotary_emb, model.mtp.rotary_emb):
            rotary.cos_coef.mul_(1.1)
            rotary.sin_coef.add_(0.05)
    model.save_pretrained(tmp_path)
    loaded = CrystalModel.from_pretrained(tmp_path)
    for name in ("backbone.rotary_emb.cos_coef", "backbone.rotary_emb.sin_coef", "mtp.rotary_emb.cos_coef"):
        assert torch.equal(loaded.state_dict()[name], model.state_dict()[name]), name
        assert not torch.equal(loaded.state_dict()[name], fresh[name]), name
    batch = collate(sequences)
    with torch.no_grad():
        out, reloaded = model(batch), loaded(batch)
        model.load_state_dict(fresh)
        seeded = model(batch)
    assert torch.equal(out["loss"], reloaded["loss"])
    assert not torch.equal(out["token"], seeded["token"])  # the coefficients change the model
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["backbone.rotary_emb.cos_coef"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError, match="backbone.rotary_emb.cos_coef"):
        CrystalModel.from_pretrained(tmp_path)


def test_inference_weights_without_mtp_load_strictly_and_sample_identically(tmp_path):
    """A model with MTP saved with ``drop_mtp`` (as the shipped one was): no ``mtp.*`` tensor,
    ``"mtp": false``, strict loading, the same weights otherwise, and bitwise the same sampled sequences."""
    from crystalgen.api import CrystalGenerator
    from crystalgen.generation.decoder import generate_batch
    from crystalgen.representation.sequence import Conditioning, encode_prefix

    assert CrystalGenerator.from_pretrained(workers=0).model.mtp is None  # the shipped inference weights
    torch.manual_seed(0)
    full = CrystalModel(CrystalModelConfig(mtp=True)).eval()
    assert full.mtp is not None
    full.save_pretrained(tmp_path, drop_mtp=True)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["mtp"] is False
    stripped = CrystalModel.from_pretrained(tmp_path)  # load_state_dict is strict
    assert stripped.mtp is None
    kept = {k: v for k, v in full.state_dict().items() if not k.startswith("mtp.")}
    assert kept.keys() == stripped.state_dict().keys() and len(kept) < len(full.state_dict())
    assert all(torch.equal(v, stripped.state_dict()[k]) for k, v in kept.items())
    prefixes = [encode_prefix(Conditioning({"Na": 1, "Cl": 1}, 1)), encode_prefix(Conditioning({"Sr": 1, "Ti": 1, "O": 3}, 1)),
                encode_prefix(Conditioning(), "gen")]
    a = generate_batch(full, prefixes, temperature=1.0, seed=3)
    b = generate_batch(stripped, prefixes, temperature=1.0, seed=3)
    assert any(x is not None for x in a) and [x is None for x in a] == [y is None for y in b]
    for x, y in zip((x for x in a if x is not None), (y for y in b if y is not None)):
        assert np.array_equal(x.tokens, y.tokens) and np.array_equal(x.values, y.values)
        assert x.log_likelihood == y.log_likelihood
