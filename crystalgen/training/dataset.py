"""From the prepared corpus to padded, length-bucketed training batches.

Every usable structure is encoded once per prefix variant with
``representation.sequence.encode_from_arrays``: ``csp`` (composition and formula units
given), ``csp_nofu`` (composition only, as for a request "LiFePO4"), ``gen`` (de novo), each
also with the space group named in the prefix (``*_sg``), so every prefix the generation
API can build is seen in training. The validation part is chosen
by a seeded hash of the material id, so it never changes with the corpus order. Each
epoch draws, per structure, which task it is trained as, then groups sequences of similar
length into batches (length bucketing), all from ``(seed, epoch)`` alone: a resumed or a
distributed run sees exactly the same batches.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from crystalgen.model import collate  # noqa: F401 (the training batches; defined beside the model)
from crystalgen.representation import vocab as V
from crystalgen.representation.sequence import Conditioning, EncodedCrystal, EncodeError, encode_from_arrays
from crystalgen.training.config import DataConfig

log = logging.getLogger(__name__)
VARIANTS = ("csp", "csp_nofu", "gen", "csp_sg", "csp_nofu_sg", "gen_sg")


def is_validation(material_id: str, fraction: float, seed: int) -> bool:
    """Whether ``material_id`` is held out: a seeded hash mapped to [0, 1) below ``fraction``."""
    digest = hashlib.sha256(f"{seed}:{material_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


@dataclass
class EncodedCorpus:
    """Encodings of the usable structures: ``sequences[i][variant]`` for material ``ids[i]``."""

    ids: list[str]
    sequences: list[dict[str, EncodedCrystal]]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> "EncodedCorpus":
        keep = np.flatnonzero(mask)
        return EncodedCorpus([self.ids[i] for i in keep], [self.sequences[i] for i in keep])


def prefix_condition(tokens: np.ndarray) -> Conditioning:
    """The conditioning a ``<bos> <task:*> [<el:X> <cnt:n>]* [<fu:k>] [<sg:N>] <plan>`` prefix states."""
    composition, fu, sg = {}, None, None
    toks = [int(t) for t in tokens[2 : int(np.flatnonzero(tokens == V.PLAN)[0])]]
    for i, t in enumerate(toks):
        if V.in_range(t, V.EL0, len(V.ELEMENTS)):
            composition[V.token_element(t)] = toks[i + 1] - V.CNT0 + 1
        elif V.in_range(t, V.FU0, V.MAX_FU):
            fu = t - V.FU0 + 1
        elif V.in_range(t, V.SG0, 230):
            sg = t - V.SG0 + 1
    return Conditioning(composition or None, fu, sg)


def encode_variants(spacegroup, lattice, elements, letters, xyz, oxidation) -> dict[str, EncodedCrystal]:
    """One structure's encodings for every prefix variant (:data:`VARIANTS`)."""
    args = (spacegroup, lattice, elements, letters, xyz, oxidation)
    csp = encode_from_arrays(*args, task="csp")
    full = prefix_condition(csp.tokens)
    sg = int(spacegroup)
    conditions = {
        "csp_nofu": ("csp", Conditioning(full.composition)),
        "gen": ("gen", Conditioning()),
        "csp_sg": ("csp", Conditioning(full.composition, full.formula_units, sg)),
        "csp_nofu_sg": ("csp", Conditioning(full.composition, None, sg)),
        "gen_sg": ("gen", Conditioning(spacegroup=sg)),
    }
    out = {"csp": csp}
    for name, (task, condition) in conditions.items():
        out[name] = encode_from_arrays(*args, task=task, condition=condition)
    return out


def encode_corpus(corpus, max_length: int = 512, progress: bool = True) -> EncodedCorpus:
    """Encode every structure of a ``crystalgen.data.corpus.Corpus`` whose Wyckoff form is ok.

    Structures the vocabulary cannot express (too many formula units, ...) or longer than
    ``max_length`` are skipped and counted.
    """
    w = corpus.wyckoff
    ids, sequences, skipped = [], [], 0
    for i in tqdm(range(len(corpus)), desc="encoding", disable=not progress, mininterval=2.0):
        if not w["ok"][i]:
            skipped += 1
            continue
        lo, hi = w["site_offsets"][i], w["site_offsets"][i + 1]
        try:
            encoded = encode_variants(
                w["spacegroup"][i], w["lattice"][i], w["site_element"][lo:hi], w["site_letter"][lo:hi],
                w["site_xyz"][lo:hi], w["site_oxidation"][lo:hi],
            )
        except (EncodeError, ValueError, KeyError) as err:
            log.debug("skipping %s: %s", corpus.ids[i], err)
            skipped += 1
            continue
        if max(len(e) for e in encoded.values()) > max_length:
            skipped += 1
            continue
        ids.append(str(corpus.ids[i]))
        sequences.append(encoded)
    return EncodedCorpus(ids, sequences, skipped)


def split(data: EncodedCorpus, val_fraction: float, seed: int) -> tuple[EncodedCorpus, EncodedCorpus]:
    """(train, validation) by :func:`is_validation` of each material id."""
    held = np.array([is_validation(m, val_fraction, seed) for m in data.ids], dtype=bool)
    return data.subset(~held), data.subset(held)


def bucketed_batches(lengths: np.ndarray, batch_size: int, bucket_batches: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort each run of ``bucket_batches`` batches by length, cut into batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class EpochBatches:
    """The batches of one epoch for one rank, a pure function of (seed, epoch, rank, world).

    Each structure is drawn as one prefix variant per epoch: de novo with probability
    ``gen_fraction``, else composition-only with ``drop_fu_fraction``; the space group is
    named with ``spacegroup_fraction``.
    """

    def __init__(self, data: EncodedCorpus, config: DataConfig, seed: int, rank: int = 0, world: int = 1) -> None:
        self.data, self.config, self.seed, self.rank, self.world = data, config, seed, rank, world

    def plan(self, epoch: int) -> list[list[EncodedCrystal]]:
        rng = np.random.default_rng([self.seed, epoch])
        n, cfg = len(self.data), self.config
        gen = rng.random(n) < cfg.gen_fraction
        nofu = rng.random(n) < cfg.drop_fu_fraction
        named = rng.random(n) < cfg.spacegroup_fraction
        names = [
            ("gen" if g else "csp_nofu" if f else "csp") + ("_sg" if s else "")
            for g, f, s in zip(gen, nofu, named)
        ]
        chosen = [seq[name] for seq, name in zip(self.data.sequences, names)]
        lengths = np.array([len(s) for s in chosen])
        batches = bucketed_batches(lengths, self.config.batch_size, self.config.bucket_batches, rng)
        usable = len(batches) // self.world * self.world  # every rank takes the same number of steps
        return [[chosen[i] for i in b] for b in batches[self.rank : usable : self.world]]


def validation_batches(data: EncodedCorpus, batch_size: int, rank: int = 0, world: int = 1) -> list[list[EncodedCrystal]]:
    """Fixed validation batches (the ``csp`` task, sorted by length), sharded over ranks."""
    chosen = sorted((seq["csp"] for seq in data.sequences), key=len)
    batches = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
    return batches[rank::world]
