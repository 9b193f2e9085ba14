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

Augmentation (``data.augment``): each structure is also encoded in up to
``augment_max_variants`` equivalent Wyckoff forms (``representation.equivalent``: another
normaliser setting, representative point per orbit, order of tied orbits), once, when the
corpus is encoded; each epoch then draws one form per structure, from ``(seed, epoch)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from crystalgen.model import collate  # noqa: F401 (the training batches; defined beside the model)
from crystalgen.progress import progress_bar
from crystalgen.representation import vocab as V
from crystalgen.representation.equivalent import EquivalentForms
from crystalgen.representation.sequence import (
    Conditioning,
    EncodedCrystal,
    EncodeError,
    crystal_from_arrays,
    encode,
    encode_from_arrays,
    with_prefix,
)
from crystalgen.training.config import DataConfig

log = logging.getLogger(__name__)
VARIANTS = ("csp", "csp_nofu", "gen", "csp_sg", "csp_nofu_sg", "gen_sg")


def _id_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def is_validation(material_id: str, fraction: float, seed: int) -> bool:
    """Whether ``material_id`` is held out: a seeded hash mapped to [0, 1) below ``fraction``."""
    return _id_hash(f"{seed}:{material_id}") / 2**64 < fraction


@dataclass
class EncodedCorpus:
    """Encodings of the usable structures: ``sequences[i][variant]`` for material ``ids[i]``
    (corpus source tag ``sources[i]``, when known); with augmentation, ``forms[i]`` holds the
    ``csp`` encodings of its other equivalent forms."""

    ids: list[str]
    sequences: list[dict[str, EncodedCrystal]]
    skipped: int = 0
    forms: list[list[EncodedCrystal]] | None = None
    sources: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: list["EncodedCorpus"]) -> "EncodedCorpus":
        """The parts one after the other (e.g. encoded by several workers)."""
        forms = None if any(p.forms is None for p in parts) else [f for p in parts for f in p.forms]
        sources = None if any(p.sources is None for p in parts) else [s for p in parts for s in p.sources]
        return cls([m for p in parts for m in p.ids], [s for p in parts for s in p.sequences],
                   sum(p.skipped for p in parts), forms, sources)

    def subset(self, mask: np.ndarray) -> "EncodedCorpus":
        keep = np.flatnonzero(mask)
        forms = None if self.forms is None else [self.forms[i] for i in keep]
        sources = None if self.sources is None else [self.sources[i] for i in keep]
        return EncodedCorpus([self.ids[i] for i in keep], [self.sequences[i] for i in keep], forms=forms,
                             sources=sources)


def prefix_condition(tokens: np.ndarray) -> Conditioning:
    """The conditioning a ``<bos> <task:*> [<src:NAME>] [<sys:*> <el:X>+] [<el:X> <cnt:n>]* [<fu:k>] [<sg:N>] <plan>``
    prefix states."""
    composition, fu, sg, elements, mode, source = {}, None, None, [], "all", None
    toks = [int(t) for t in tokens[2 : int(np.flatnonzero(tokens == V.PLAN)[0])]]
    i = 0
    if toks and V.in_range(toks[0], V.SRC0, len(V.SOURCES)):
        source = V.SOURCES[toks[0] - V.SRC0]
        i = 1
    if i < len(toks) and toks[i] in (V.SYS_ALL, V.SYS_ANY):
        mode = "all" if toks[i] == V.SYS_ALL else "any"
        i += 1
        while i < len(toks) and V.in_range(toks[i], V.EL0, len(V.ELEMENTS)):
            elements.append(V.token_element(toks[i]))
            i += 1
    for j in range(i, len(toks)):
        t = toks[j]
        if V.in_range(t, V.EL0, len(V.ELEMENTS)):
            composition[V.token_element(t)] = toks[j + 1] - V.CNT0 + 1
        elif V.in_range(t, V.FU0, V.MAX_FU):
            fu = t - V.FU0 + 1
        elif V.in_range(t, V.SG0, 230):
            sg = t - V.SG0 + 1
    return Conditioning(composition or None, fu, sg, tuple(elements) or None, mode, source)


def variant_prefix(name: str, full: Conditioning, spacegroup: int) -> tuple[str, Conditioning]:
    """(task, conditioning) of prefix variant ``name`` for a structure whose ``csp`` prefix states ``full``."""
    sg = int(spacegroup) if name.endswith("_sg") else None
    if name.startswith("gen"):
        return "gen", Conditioning(spacegroup=sg)
    return "csp", Conditioning(full.composition, None if "nofu" in name else full.formula_units, sg)


def encode_variants(spacegroup, lattice, elements, letters, xyz, oxidation) -> dict[str, EncodedCrystal]:
    """One structure's encodings for every prefix variant (:data:`VARIANTS`)."""
    args = (spacegroup, lattice, elements, letters, xyz, oxidation)
    csp = encode_from_arrays(*args, task="csp")
    full = prefix_condition(csp.tokens)
    out = {"csp": csp}
    for name in VARIANTS[1:]:
        task, condition = variant_prefix(name, full, spacegroup)
        out[name] = encode_from_arrays(*args, task=task, condition=condition)
    return out


def form_variant(csp: EncodedCrystal, name: str) -> EncodedCrystal:
    """Prefix variant ``name`` of an equivalent form's ``csp`` encoding (:func:`with_prefix`)."""
    plan = int(np.flatnonzero(csp.tokens == V.PLAN)[0])
    spacegroup = int(csp.tokens[plan + 2]) - V.SG0 + 1  # <plan> <cs:*> <sg:N>
    task, condition = variant_prefix(name, prefix_condition(csp.tokens), spacegroup)
    return with_prefix(csp, condition, task)


def equivalent_encodings(material_id: str, arrays: tuple, max_forms: int) -> list[EncodedCrystal]:
    """``csp`` encodings of up to ``max_forms - 1`` other equivalent forms, drawn from a hash of the id."""
    crystal, oxidation = crystal_from_arrays(*arrays)
    forms = EquivalentForms(crystal).sample(max_forms, np.random.default_rng(_id_hash(f"forms:{material_id}")))
    return [encode(form, oxidation, "csp", keep_site_order=True) for form in forms[1:]]


def wyckoff_arrays(wyckoff: dict[str, np.ndarray], i: int) -> tuple:
    """Structure ``i``'s arguments for ``encode_from_arrays`` from a corpus's ``wyckoff`` group."""
    lo, hi = wyckoff["site_offsets"][i], wyckoff["site_offsets"][i + 1]
    return (wyckoff["spacegroup"][i], wyckoff["lattice"][i], wyckoff["site_element"][lo:hi],
            wyckoff["site_letter"][lo:hi], wyckoff["site_xyz"][lo:hi], wyckoff["site_oxidation"][lo:hi])


def encode_corpus(
    corpus, max_length: int = 512, progress: bool = True, max_forms: int = 1, rows=None
) -> EncodedCorpus:
    """Encode every structure of a ``crystalgen.data.corpus.Corpus`` whose Wyckoff form is ok
    (or those of ``rows``, indices into the corpus, e.g. one worker's share).

    Structures the vocabulary cannot express (too many formula units, ...) or longer than
    ``max_length`` are skipped and counted. ``max_forms`` > 1 also encodes up to that many
    equivalent forms per structure (augmentation; ``forms``). A row listed k times in ``rows``
    (``source_repeats``) is encoded once and kept (or counted as skipped) k times.
    """
    w = corpus.wyckoff
    ids, sequences, sources, skipped = [], [], [], 0
    forms: list[list[EncodedCrystal]] | None = [] if max_forms > 1 else None
    times = Counter(int(i) for i in (range(len(corpus)) if rows is None else rows))
    for i in progress_bar(list(times), desc="encoding", enabled=progress, mininterval=2.0):
        k = times[i]
        if not w["ok"][i]:
            skipped += k
            continue
        arrays = wyckoff_arrays(w, i)
        try:
            encoded = encode_variants(*arrays)
            extra = equivalent_encodings(str(corpus.ids[i]), arrays, max_forms) if forms is not None else []
        except (EncodeError, ValueError, KeyError) as err:
            log.debug("skipping %s: %s", corpus.ids[i], err)
            skipped += k
            continue
        if max(len(e) for e in encoded.values()) > max_length:
            skipped += k
            continue
        ids += [str(corpus.ids[i])] * k
        sequences += [encoded] * k
        sources += [str(corpus.sources[i])] * k
        if forms is not None:
            forms += [extra] * k
    return EncodedCorpus(ids, sequences, skipped, forms, sources)


def source_rows(
    sources: np.ndarray, wanted: tuple[str, ...], repeats: dict[str, int] | None = None, where: object = "corpus"
) -> np.ndarray | None:
    """Indices of the corpus rows to train on (None: every row once).

    ``wanted``: only rows whose source tag is one of these (empty: all). ``repeats``: a
    source's rows are listed k times, so each epoch draws them k times (each copy with its
    own prefix variant and form), which weights a benchmark-like part of a mixed pool (the
    pool mixes Materials Project, OQMD, Alexandria, WBM, ... structures) without dropping
    the rest.
    """
    repeats = {s: int(k) for s, k in (repeats or {}).items() if int(k) != 1}
    if not wanted and not repeats:
        return None
    tags = sources.astype(str)
    missing = sorted((set(wanted) | set(repeats)) - set(tags))
    if missing:
        raise ValueError(f"{where}: no rows with source {missing}; its sources are {sorted(set(tags))}")
    if any(k < 1 for k in repeats.values()):
        raise ValueError(f"source_repeats must be >= 1, got {repeats}")
    rows = np.flatnonzero(np.isin(tags, list(wanted))) if wanted else np.arange(len(tags))
    extra = [np.repeat(rows[tags[rows] == s], k - 1) for s, k in sorted(repeats.items())]
    return np.sort(np.concatenate([rows, *extra]), kind="stable")


def split(data: EncodedCorpus, val_fraction: float, seed: int) -> tuple[EncodedCorpus, EncodedCorpus]:
    """(train, validation) by :func:`is_validation` of each material id; a structure listed
    more than once (``source_repeats``) is validated once."""
    held = np.array([is_validation(m, val_fraction, seed) for m in data.ids], dtype=bool)
    first = np.zeros(len(data.ids), dtype=bool)
    first[np.unique(np.asarray(data.ids, dtype=object), return_index=True)[1]] = True
    return data.subset(~held), data.subset(held & first)


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
    named with ``spacegroup_fraction``. With ``augment`` and encoded forms, one of its
    equivalent forms is drawn uniformly, from a stream of its own, so the variants and
    batches without augmentation stay what they were. Element-set prompts
    (``element_set_fraction``) and source prompts (``source_prompt_fraction``: the prefix names
    the structure's corpus source, for sources with a ``<src:NAME>`` token) are drawn from
    streams of their own as well.
    """

    def __init__(self, data: EncodedCorpus, config: DataConfig, seed: int, rank: int = 0, world: int = 1) -> None:
        self.data, self.config, self.seed, self.rank, self.world = data, config, seed, rank, world
        self.lengths = np.array([[len(seq[v]) for v in VARIANTS] for seq in data.sequences], np.int64)
        self.form_counts = None if data.forms is None else np.array([len(f) for f in data.forms], np.int64)
        self.element_sets = ElementSets(data) if config.element_set_fraction > 0 else None
        self.sources = prompt_sources(data.sources, len(data)) if config.source_prompt_fraction > 0 else None

    @property
    def prompted_sources(self) -> tuple[str, ...]:
        """The sources whose prompt this training writes (in ``vocab.SOURCES`` order)."""
        present = set() if self.sources is None else set(self.sources)
        return tuple(name for name in V.SOURCES if name in present)

    def draw(self, epoch: int) -> "EpochDraw":
        return draw_epoch(self.lengths, self.form_counts, self.config, self.seed, epoch, self.rank, self.world)

    def plan(self, epoch: int) -> list[list[EncodedCrystal]]:
        d = self.draw(epoch)
        prompts = {}
        if self.element_sets is not None:
            is_gen = np.array([VARIANTS[v].startswith("gen") for v in d.variant])
            prompts = self.element_sets.draw(is_gen, self.config.element_set_fraction, self.seed, epoch)
        tagged = np.zeros(len(d.variant), bool)
        if self.sources is not None:
            chosen = np.random.default_rng([self.seed, epoch, 3]).random(len(tagged)) < self.config.source_prompt_fraction
            tagged = chosen & np.array([s is not None for s in self.sources])

        def pick(i: int) -> EncodedCrystal:
            name, k = VARIANTS[d.variant[i]], int(d.form[i])
            seq = self.data.sequences[i][name] if k == 0 else form_variant(self.data.forms[i][k - 1], name)
            condition = None
            if i in prompts:
                sg = prefix_condition(seq.tokens).spacegroup
                condition = Conditioning(spacegroup=sg, elements=prompts[i][1], elements_mode=prompts[i][0])
            if tagged[i]:
                condition = replace(condition or prefix_condition(seq.tokens), source=self.sources[i])
            if condition is not None:
                seq = with_prefix(seq, condition, "gen" if name.startswith("gen") else "csp")
            return seq

        return [[pick(i) for i in b] for b in d.batches]


def prompt_sources(sources: list[str] | None, n: int) -> list[str | None]:
    """Per structure the source its prompt names: its corpus source tag where the vocabulary
    has a ``<src:NAME>`` for it, else None (never prompted)."""
    if sources is None:
        return [None] * n
    return [s if s in V.SOURCES else None for s in sources]


class ElementSets:
    """Element-set prompts for de novo sequences, as ``--chemsys`` / ``--elements`` write them:
    ``all`` names the structure's own elements; ``any`` a superset with 1-3 more elements,
    drawn by how often elements occur in the corpus, so the model learns that a listed element
    may go unused."""

    def __init__(self, data: EncodedCorpus) -> None:
        self.own = [tuple(prefix_condition(seq["csp"].tokens).composition or ()) for seq in data.sequences]
        counts = np.zeros(len(V.ELEMENTS))
        for els in self.own:
            for el in els:
                counts[V.ELEMENTS.index(el)] += 1
        self.frequency = counts / counts.sum()

    def draw(self, rows: np.ndarray, fraction: float, seed: int, epoch: int) -> dict[int, tuple[str, tuple[str, ...]]]:
        """``{structure: (mode, elements)}`` for a ``fraction`` of the ``rows`` (bool mask)."""
        rng = np.random.default_rng([seed, epoch, 2])
        chosen = np.flatnonzero(rows & (rng.random(len(rows)) < fraction))
        out = {}
        for i in chosen:
            own = self.own[i]
            if rng.random() < 0.5:
                out[int(i)] = ("all", own)
                continue
            p = self.frequency.copy()
            p[[V.ELEMENTS.index(el) for el in own]] = 0.0
            extra = rng.choice(len(V.ELEMENTS), size=int(rng.integers(1, 4)), replace=False, p=p / p.sum())
            out[int(i)] = ("any", own + tuple(V.ELEMENTS[j] for j in extra))
        return out


@dataclass
class EpochDraw:
    """One epoch's choices: per structure its prefix variant (index into :data:`VARIANTS`)
    and form (0 the canonical one, k > 0 ``forms[k - 1]``), and this rank's batches."""

    variant: np.ndarray
    form: np.ndarray
    batches: list[np.ndarray]


def draw_epoch(
    lengths: np.ndarray, form_counts: np.ndarray | None, config: DataConfig, seed: int, epoch: int,
    rank: int = 0, world: int = 1,
) -> EpochDraw:
    """The draw behind :class:`EpochBatches` from sequence lengths ``(n, len(VARIANTS))``
    and the number of extra forms per structure alone (a form is as long as the canonical one),
    so a trainer that keeps the sequences elsewhere (on a GPU) batches exactly the same way."""
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    gen = rng.random(n) < config.gen_fraction
    nofu = rng.random(n) < config.drop_fu_fraction
    named = rng.random(n) < config.spacegroup_fraction
    variant = np.where(gen, VARIANTS.index("gen"), np.where(nofu, VARIANTS.index("csp_nofu"), 0)) + 3 * named
    form = np.zeros(n, np.int64)
    if config.augment and form_counts is not None:
        form = (np.random.default_rng([seed, epoch, 1]).random(n) * (form_counts + 1)).astype(np.int64)
    chosen = lengths.reshape(n, len(VARIANTS))[np.arange(n), variant]
    batches = bucketed_batches(chosen, config.batch_size, config.bucket_batches, rng)
    usable = len(batches) // world * world  # every rank takes the same number of steps
    return EpochDraw(variant, form, batches[rank:usable:world])


def validation_batches(data: EncodedCorpus, batch_size: int, rank: int = 0, world: int = 1) -> list[list[EncodedCrystal]]:
    """Fixed validation batches (the ``csp`` task, sorted by length), sharded over ranks."""
    chosen = sorted((seq["csp"] for seq in data.sequences), key=len)
    batches = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
    return batches[rank::world]
