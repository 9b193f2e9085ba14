"""Augmentation: equivalent Wyckoff forms of real structures are the same crystal written
differently, re-prefixed forms equal a fresh encoding, and each epoch's draw of forms is a
function of (seed, epoch) that a resumed run repeats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from training_data import fixture_corpus_path, fixture_sequences, fixture_sequences_augmented, one_thread

from crystalgen.representation.equivalent import SETTINGS, EquivalentForms
from crystalgen.representation.sequence import decode, encode, with_prefix
from crystalgen.representation.wyckoff import WyckoffCrystal
from crystalgen.training.config import DataConfig
from crystalgen.training.dataset import VARIANTS, EpochBatches, form_variant, prefix_condition, variant_prefix
from crystalgen.training.loop import load_checkpoint, train
from test_training import _records, _tiny

REFERENCE = Path(__file__).parents[1] / "examples" / "reference"
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _same_sequence(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(getattr(a, k), getattr(b, k)) for k in ("tokens", "values", "value_kind", "free", "loss_mask")
    )


@pytest.mark.parametrize("name", ["NaCl", "LiFePO4", "SrTiO3"])
def test_every_form_of_a_reference_structure_is_that_structure(name):
    original = Structure.from_file(REFERENCE / f"{name}.cif")
    forms = EquivalentForms(WyckoffCrystal.from_structure(original)).sample(8, np.random.default_rng(0))
    assert len(forms) >= 2  # NaCl: Na on 4a and Cl on 4b, or the reverse
    encoded = [encode(form, keep_site_order=True) for form in forms]
    matcher = StructureMatcher()
    for e in encoded:
        assert matcher.fit(decode(e.tokens, e.values).to_structure(), original)
    assert len({(e.tokens.tobytes(), e.values.tobytes()) for e in encoded}) == len(encoded)


def test_pool_forms_decode_to_the_same_crystal_and_differ_as_sequences():
    data = fixture_sequences_augmented()
    assert len(data.forms) == len(data) and data.sequences[0].keys() == set(VARIANTS)
    assert sum(len(f) for f in data.forms) > len(data)  # most structures have several forms
    matcher = StructureMatcher()
    checked = 0
    for seqs, extra in zip(data.sequences, data.forms):
        if not extra or checked >= 15:
            continue
        checked += 1
        canonical = seqs["csp"]
        reference = decode(canonical.tokens, canonical.values).to_structure()
        seen = {(canonical.tokens.tobytes(), canonical.values.tobytes())}
        for form in extra:
            seen.add((form.tokens.tobytes(), form.values.tobytes()))
            assert len(form) == len(canonical)
            assert matcher.fit(decode(form.tokens, form.values).to_structure(), reference)
        assert len(seen) == len(extra) + 1
    assert checked == 15


def test_reprefixed_forms_equal_fresh_encodings():
    """`with_prefix` writes exactly what `encode` writes under every prefix variant."""
    data = fixture_sequences()
    for seqs in data.sequences[:20]:
        csp = seqs["csp"]
        for name in VARIANTS:
            assert _same_sequence(form_variant(csp, name), seqs[name]), name
    crystal = decode(data.sequences[0]["csp"].tokens, data.sequences[0]["csp"].values)
    full = prefix_condition(data.sequences[0]["csp"].tokens)
    for name in VARIANTS:
        task, condition = variant_prefix(name, full, crystal.spacegroup)
        assert _same_sequence(with_prefix(encode(crystal), condition, task), encode(crystal, None, task, condition))


def test_settings_table_keeps_the_identity_first():
    for sg, ops in SETTINGS.items():
        rotation, translation, wp_map = ops[0]
        assert np.array_equal(rotation, np.eye(3)) and not translation.any(), sg
        assert list(wp_map[wp_map >= 0]) == list(range((wp_map >= 0).sum()))
        for _, _, other in ops:  # every setting permutes the group's Wyckoff positions
            assert sorted(other[other >= 0]) == list(range((wp_map >= 0).sum())), sg


def test_epoch_draw_of_forms_is_seeded_and_off_means_unchanged():
    data, plain = fixture_sequences_augmented(), fixture_sequences()
    cfg = DataConfig(batch_size=4, bucket_batches=3, augment=True)

    def keys(plan):
        return [[(s.tokens.tobytes(), s.values.tobytes()) for s in b] for b in plan]

    on = EpochBatches(data, cfg, seed=0)
    assert keys(on.plan(0)) == keys(EpochBatches(data, cfg, seed=0).plan(0))
    assert keys(on.plan(0)) != keys(on.plan(1)) and keys(on.plan(0)) != keys(EpochBatches(data, cfg, seed=1).plan(0))
    off = DataConfig(batch_size=4, bucket_batches=3)
    assert keys(EpochBatches(data, off, seed=0).plan(0)) == keys(EpochBatches(plain, off, seed=0).plan(0))
    augmented = sum(a != b for a, b in zip(keys(on.plan(0)), keys(EpochBatches(plain, off, seed=0).plan(0))))
    assert augmented > 0  # some batches hold other forms; the batch layout (lengths) is the same
    assert [[len(s) for s in b] for b in on.plan(0)] == [[len(s) for s in b] for b in EpochBatches(plain, off, 0).plan(0)]


def test_resume_with_augmentation_continues_exactly(tmp_path):
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    config = _tiny(max_steps=12)
    config.data.augment, config.data.augment_max_variants = True, 4
    train(config, fixture_corpus_path(), straight, progress=False)
    config.session_steps = 7
    train(config, fixture_corpus_path(), split_run, progress=False)
    config.session_steps = 0
    train(config, fixture_corpus_path(), split_run, resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoint.pt", torch.device("cpu"))
    b = load_checkpoint(split_run / "checkpoint.pt", torch.device("cpu"))
    assert a["state"]["step"] == b["state"]["step"] == 12 and a["state"]["epoch"] >= 1
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert _records(straight, "train")[-1]["loss"] == _records(split_run, "train")[-1]["loss"]
